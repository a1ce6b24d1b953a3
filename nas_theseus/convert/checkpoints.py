"""Content-keyed stage checkpoints.

A stage's key hashes everything its result depends on (guide identity, data, settings, seed, and the ordered
(part, spec, input shape) list swapped so far), so a retried trial resumes from its last finished stage and a
new candidate that shares a prefix of stages with an earlier one reuses them. A file is the 64-hex sha256 of
its payload followed by the payload (``torch.save`` bytes, loaded with ``weights_only=True``); writes are
atomic (temp file + ``os.replace``). Tensors are stored on the CPU and loaded with ``map_location="cpu"`` (the
caller's ``load_state_dict`` copies them onto its own device), so a stage trained on a GPU resumes on a CPU or
another GPU. An unreadable or mismatching file is one warning and counts as absent.
Temp files of writers that died before ``os.replace`` are swept when a store opens, once an hour old.
Loading a checkpoint sets its mtime to now, so the mtime says when it was last written or used: what
``nas-theseus clean`` and ``study.checkpoint_cap`` go by (:mod:`nas_theseus.study.clean`), least recently used first.
In a data-parallel run (:mod:`nas_theseus.utils.distributed`) rank 0 alone reads and writes, and hands what
it read to the other ranks.

With a shared artifact store (``remote``, :mod:`nas_theseus.utils.artifacts`), every checkpoint written is also
uploaded under ``checkpoints/<key>.ckpt``, and one missing here is looked up there (checked, then kept here), so
a trial retried on another machine resumes from the stages written on the first. A store that cannot be
reached or holds a damaged copy is one warning; the stage is then trained here.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import warnings
from pathlib import Path

import torch

from ..utils import testhooks
from ..utils.artifacts import ArtifactStore, seal, unseal
from ..utils.distributed import from_main, is_main
from ..utils.files import atomic_write

FORMAT = 1
STALE_TEMP_S = 3600.0  # a temp file this old belongs to a writer that died before its os.replace


def to_cpu(obj):
    """``obj`` with every tensor in it (nested in dicts, lists, tuples) copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


class CheckpointStore:
    def __init__(self, root: str | os.PathLike | None, *, stale_temp_s: float = STALE_TEMP_S,
                 remote: ArtifactStore | None = None):
        self.root = Path(root) if root is not None else None
        self.remote = remote if self.root is not None else None
        if self.root is not None and self.root.is_dir():
            now = time.time()
            for tmp in self.root.glob(".*.tmp.ckpt"):
                with contextlib.suppress(FileNotFoundError):
                    if now - tmp.stat().st_mtime > stale_temp_s:
                        tmp.unlink()

    def path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / f"{key}.ckpt"

    def save(self, key: str, payload: dict) -> None:
        if self.root is None or not is_main():  # in a data-parallel run, rank 0 writes for every rank
            return
        buf = io.BytesIO()
        torch.save(to_cpu({"format": FORMAT, "key": key, **payload}), buf)  # resumable on any device
        sealed = seal(buf.getvalue())

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                f.write(sealed)
            testhooks.hit("before_replace")

        atomic_write(self.path(key), write)
        if self.remote is not None:
            try:
                self.remote.put(_remote_name(key), sealed)
            except Exception as e:  # noqa: BLE001 - the local copy is whole; other machines recompute
                warnings.warn(f"stage checkpoint {key[:12]} was not uploaded to artifact store {self.remote.url} "
                              f"({type(e).__name__}: {e}); it is kept in {self.root}", stacklevel=2)

    def load(self, key: str) -> dict | None:
        """The checkpoint ``key``, or None; in a data-parallel run rank 0 reads it and every rank gets rank 0's
        answer, so all resume the same stages whatever each one's disk holds."""
        return from_main(lambda: self._load(key))

    def _load(self, key: str) -> dict | None:
        if self.root is None:
            return None
        path = self.path(key)
        if not _mark_used(path) and not self._fetch(key):
            return None
        try:
            data = unseal(path.read_bytes())
            payload = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
            if payload.get("format") != FORMAT or payload.get("key") != key:
                raise ValueError("wrong format or key")
            return payload
        except FileNotFoundError:  # removed by `nas-theseus clean` since it was marked: the stage is trained again
            return None
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is recomputed, never a crash
            warnings.warn(f"stage checkpoint {path.name} is unreadable ({type(e).__name__}: {e}); recomputing it",
                          stacklevel=2)
            return None

    def _fetch(self, key: str) -> bool:
        """Copy the store's checkpoint ``key`` here when it has a whole one."""
        if self.remote is None:
            return False
        name = _remote_name(key)
        try:
            raw = self.remote.get(name)
            if raw is None:
                return False
            unseal(raw)
        except Exception as e:  # noqa: BLE001 - a stage that cannot be fetched is trained here
            warnings.warn(f"stage checkpoint {name} in artifact store {self.remote.url} is unusable "
                          f"({type(e).__name__}: {e}); training the stage here (its upload replaces that copy)",
                          stacklevel=3)
            return False
        atomic_write(self.path(key), lambda tmp: Path(tmp).write_bytes(raw))
        return True


def _mark_used(path: Path) -> bool:
    """Set ``path``'s mtime to now, before it is read (``clean`` leaves a file whose mtime moved since it looked);
    False when there is no such file."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    except OSError:  # a folder this process may read but not write: used all the same, just not marked
        return path.exists()
    return True


def _remote_name(key: str) -> str:
    return f"checkpoints/{key}.ckpt"
