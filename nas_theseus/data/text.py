"""Text for language modelling, tokenised as bytes (nothing downloaded, no vocabulary file).

* :class:`ByteTokenizer`: UTF-8 bytes are the tokens (vocabulary 256); decoding replaces invalid sequences.
* ``load_text(source="pydoc")``: the CPython standard library's ``pydoc_data.topics`` (~465 KB of English
  help text, the topics joined in sorted key order), or ``source="<path>"`` for any local UTF-8 text file.

Split (documented, deterministic, no shuffling across the boundaries): the byte stream is cut into the first
90 % for training, the next 5 % for validation and the last 5 % for test (``val_fraction`` /
``test_fraction``). Each split is cut into windows of ``context + 1`` bytes taken every ``stride`` bytes
(default: ``context``, so windows overlap by one byte): ``x`` = the first ``context`` tokens, ``y`` = the
next-token targets (the window shifted by one). ``x`` and ``y`` are int64 (N, context); ``num_classes`` is
the vocabulary size, and a model maps (B, T) tokens to (B, T, 256) logits.

Where the windows live (``in_memory``: ``"auto"``, true or false): a corpus whose int64 windows take at most
``IN_MEMORY_MB`` is held as tensors (the fast path); a larger file (or any, with ``in_memory = false``) is
memory-mapped and its windows are cut per batch (:class:`TokenWindows`), so nothing proportional to the corpus
is held in RAM (the OS pages the file in). A file is checked for UTF-8 a chunk at a time, and a memory-mapped
one is fingerprinted by its name, size and modification time. The pydoc text's bytes are the standard
library's, in memory; with ``in_memory = false`` its windows are cut per batch all the same (the path a large
corpus takes), fingerprinted by a hash of the bytes.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..utils.hashing import stable_hash
from ..utils.transfer import upload
from .base import Batch, Rows, Split, TaskData

VOCAB = 256
IN_MEMORY_MB = 256  # in_memory = "auto": corpora whose int64 windows take at most this are held as tensors


class ByteTokenizer:
    """Bytes as tokens: ``encode`` gives int64 ids in [0, 256), ``decode`` the text back."""

    vocab_size = VOCAB

    def encode(self, text: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def pydoc_corpus() -> str:
    """The standard library's pydoc topics text, in a fixed order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def _windows(ids: torch.Tensor, context: int, stride: int, what: str = "text split") -> Split:
    if len(ids) < context + 1:
        raise UserError(f"{what} of {len(ids)} bytes is shorter than one window ({context + 1} bytes)")
    starts = torch.arange(0, len(ids) - context, stride)
    idx = starts[:, None] + torch.arange(context + 1)[None, :]
    w = ids[idx]
    return Split(w[:, :-1].contiguous(), w[:, 1:].contiguous())


class TokenWindows(Rows):
    """Next-token windows over a 1-D array of byte ids (a memory map, usually): row i is ``x = ids[s:s+context]``,
    ``y = ids[s+1:s+context+1]`` with ``s = i * stride``, cut when a batch is read (int64); nothing else is
    copied. ``fingerprint`` says what the ids are without reading them."""

    def __init__(self, ids: np.ndarray, context: int, stride: int, *, fingerprint: str, what: str = "text split"):
        if len(ids) < context + 1:
            raise UserError(f"{what} of {len(ids)} bytes is shorter than one window ({context + 1} bytes)")
        self.ids, self.context, self.stride, self._fingerprint = ids, context, stride, fingerprint
        self.n = (len(ids) - context - 1) // stride + 1  # as many windows as load_text's in-memory cut

    def __len__(self) -> int:
        return self.n

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.context,)

    @property
    def dtype(self) -> torch.dtype:
        return torch.int64

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.as_tensor(idx, dtype=torch.long).cpu().numpy() * self.stride
        w = np.asarray(self.ids[starts[:, None] + np.arange(self.context + 1)], dtype=np.int64)
        return torch.from_numpy(w[:, :-1].copy()), torch.from_numpy(w[:, 1:].copy())

    def batches(self, batch_size: int, *, order: torch.Tensor | None = None, device="cpu", augment=None,
                seed: int = 0) -> Iterator[Batch]:
        order = torch.arange(self.n) if order is None else order.cpu()
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            x, y = self.take(idx)
            yield Batch(idx, upload(x, device), upload(y, device))

    def fingerprint(self) -> str:
        return self._fingerprint


def check_utf8(path: Path, chunk: int = 1 << 24) -> None:
    """Refuse, in one line, a file that is not UTF-8, reading it a chunk at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as e:
                raise UserError(f"text data: {path} is not UTF-8 (byte {offset + e.start}: {e.reason})") from None
            offset += len(block)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as e:
        raise UserError(f"text data: {path} is not UTF-8 (it ends inside a character: {e.reason})") from None


def fits_in_memory(n_bytes: int, context: int, stride: int, in_memory: bool | str) -> bool:
    """Whether a corpus of ``n_bytes`` is held as tensors (``in_memory``: ``"auto"``, true or false)."""
    if in_memory not in ("auto", True, False):
        raise UserError(f"text data: in_memory must be \"auto\", true or false, got {in_memory!r}")
    windows = max(0, (n_bytes - context - 1) // stride + 1)
    return in_memory is True or (in_memory == "auto" and windows * context * 8 * 2 <= IN_MEMORY_MB * 2**20)


def load_text(*, source: str = "pydoc", context: int = 64, stride: int | None = None, val_fraction: float = 0.05,
              test_fraction: float = 0.05, max_bytes: int | None = None, in_memory: bool | str = "auto") -> TaskData:
    """Byte-level language-modelling data (see the module docstring); ``max_bytes`` keeps the first N bytes."""
    if context < 1:
        raise UserError(f"text context must be >= 1, got {context}")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise UserError("text val_fraction and test_fraction must be in (0, 1) and sum to less than 1")
    stride = stride or context
    if source == "pydoc":
        ids = ByteTokenizer().encode(pydoc_corpus()).numpy().astype(np.uint8)
        file = {"pydoc": stable_hash(ids.tobytes().hex()), "max_bytes": max_bytes}
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise UserError(f"text data: no such file {path} (source is 'pydoc' or a UTF-8 text file)")
        check_utf8(path)
        st = path.stat()
        file = {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "max_bytes": max_bytes}
        ids = np.memmap(path, dtype=np.uint8, mode="r") if st.st_size else np.zeros(0, np.uint8)
    if max_bytes is not None:
        ids = ids[:max_bytes]
    n = len(ids)
    n_test, n_val = int(n * test_fraction), int(n * val_fraction)
    n_train = n - n_val - n_test
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    if fits_in_memory(n, context, stride, in_memory):
        ids = torch.from_numpy(np.array(ids, dtype=np.int64))
        splits = [_windows(ids[a:b], context, stride) for a, b in bounds.values()]
    else:  # windows cut a batch at a time from the bytes (the pydoc text's are the stdlib's, in memory)
        splits = [TokenWindows(ids[a:b], context, stride, what=f"text {name} split",
                               fingerprint=stable_hash({**file, "bytes": [a, b], "context": context, "stride": stride}))
                  for name, (a, b) in bounds.items()]
    config = {"source": source, "context": context, "stride": stride, "val_fraction": val_fraction,
              "test_fraction": test_fraction, "max_bytes": max_bytes, "bytes": n,
              "in_memory": isinstance(splits[0], Split)}
    return TaskData("text", *splits, num_classes=VOCAB, config=config)

