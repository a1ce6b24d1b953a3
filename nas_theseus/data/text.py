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
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from .base import Split, TaskData

VOCAB = 256


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


def load_text(*, source: str = "pydoc", context: int = 64, stride: int | None = None, val_fraction: float = 0.05,
              test_fraction: float = 0.05, max_bytes: int | None = None) -> TaskData:
    """Byte-level language-modelling data (see the module docstring); ``max_bytes`` keeps the first N bytes."""
    if context < 1:
        raise UserError(f"text context must be >= 1, got {context}")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise UserError("text val_fraction and test_fraction must be in (0, 1) and sum to less than 1")
    if source == "pydoc":
        text = pydoc_corpus()
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise UserError(f"text data: no such file {path} (source is 'pydoc' or a UTF-8 text file)")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"text data: {path} is not UTF-8 ({e})") from None
    ids = ByteTokenizer().encode(text)
    if max_bytes is not None:
        ids = ids[:max_bytes]
    n = len(ids)
    n_test, n_val = int(n * test_fraction), int(n * val_fraction)
    n_train = n - n_val - n_test
    stride = stride or context
    train = _windows(ids[:n_train], context, stride)
    val = _windows(ids[n_train:n_train + n_val], context, stride)
    test = _windows(ids[n_train + n_val:], context, stride)
    config = {"source": source, "context": context, "stride": stride, "val_fraction": val_fraction,
              "test_fraction": test_fraction, "max_bytes": max_bytes, "bytes": n}
    return TaskData("text", train, val, test, num_classes=VOCAB, config=config)

