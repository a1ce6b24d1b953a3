"""The guide's activations over a whole split, computed once (the guide is frozen and the data fixed).

Small caches live in memory as float32. When A_0 … A_K and the output over the split would take more than the
memory budget (``NAS_THESEUS_ACTIVATION_MEMORY`` in GiB, default a quarter of this machine's RAM), they are
written chunk by chunk to memory-mapped ``.npy`` files, float16 by default (``NAS_THESEUS_ACTIVATION_DTYPE=
float32`` keeps full precision, e.g. for activations beyond float16's ±65504), and read back per batch as
float32. A CIFAR-10 ResNet-18 cache is several GB in float32, about half that in float16.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..guides import Guide
from ..utils.hashing import stable_hash
from ..utils.progress import progress_bar

MARKER = "complete"
FLOAT16_MAX = 65504.0


def memory_budget_bytes() -> int:
    env = os.environ.get("NAS_THESEUS_ACTIVATION_MEMORY")
    if env:
        return int(float(env) * 2**30)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def _disk_dtype() -> np.dtype:
    name = os.environ.get("NAS_THESEUS_ACTIVATION_DTYPE", "float16")
    if name not in ("float16", "float32"):
        raise UserError(f"NAS_THESEUS_ACTIVATION_DTYPE must be float16 or float32, got {name!r}")
    return np.dtype(name)


class GuideActivations:
    """``acts[k]`` is A_k for every row of ``x`` (A_0 = input of part 1, A_K = output of the last part) and
    ``acts[-1]`` the guide's output, as CPU float32 tensors, or as memory-mapped arrays (``mapped``) read per
    batch. ``key`` identifies guide and data."""

    def __init__(self, acts: list, key: str):
        self.acts = acts
        self.key = key

    @property
    def mapped(self) -> bool:
        return isinstance(self.acts[0], np.ndarray)

    @classmethod
    @torch.no_grad()
    def compute(cls, guide: Guide, x: torch.Tensor, *, data_key: str, batch_size: int = 512,
                device: torch.device | str = "cpu", progress: bool = True,
                mmap_dir: str | os.PathLike | None = None) -> GuideActivations:
        """Run the guide over ``x``; with ``mmap_dir`` and more than the memory budget, write memory-mapped
        files under ``mmap_dir`` (a folder that appears complete or not at all) instead of keeping tensors."""
        key = stable_hash({"guide": guide.identity, "data": data_key})
        shapes = [*guide.shapes, guide.output_shape]
        need = 4 * len(x) * sum(int(np.prod(s)) for s in shapes)
        if mmap_dir is not None and need > memory_budget_bytes():
            return cls._compute_mapped(guide, x, shapes, key, Path(mmap_dir), batch_size, device, progress)
        chunks: list[list[torch.Tensor]] = []
        for xb in _batches(x, batch_size, progress):
            chunks.append([a.float().cpu() for a in guide.activations(xb.to(device))])
        return cls([torch.cat(col) for col in zip(*chunks)], key)

    @classmethod
    def _compute_mapped(cls, guide, x, shapes, key, folder: Path, batch_size, device, progress) -> GuideActivations:
        dtype = _disk_dtype()
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        try:
            arrays = [np.lib.format.open_memmap(tmp / f"a{i}.npy", mode="w+", dtype=dtype, shape=(len(x), *s))
                      for i, s in enumerate(shapes)]
            start = 0
            for xb in _batches(x, batch_size, progress):
                for i, a in enumerate(guide.activations(xb.to(device))):
                    a = a.float().cpu().numpy()
                    if dtype == np.float16 and np.abs(a).max(initial=0.0) > FLOAT16_MAX:
                        raise UserError(f"guide activation A_{i} exceeds float16's range; set "
                                        f"NAS_THESEUS_ACTIVATION_DTYPE=float32")
                    arrays[i][start:start + len(xb)] = a
                start += len(xb)
            for a in arrays:
                a.flush()
            del arrays
            (tmp / MARKER).write_text(key)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls.open_mapped(folder, len(shapes))

    @classmethod
    def open_mapped(cls, folder: str | os.PathLike, n: int) -> GuideActivations:
        """Open a folder written by :meth:`compute` (read-only memory maps)."""
        folder = Path(folder)
        if not (folder / MARKER).is_file():
            raise ValueError(f"{folder} is not a complete activation cache")
        arrays = [np.load(folder / f"a{i}.npy", mmap_mode="r") for i in range(n)]
        return cls(arrays, (folder / MARKER).read_text())

    def batch(self, idx: torch.Tensor, device: torch.device | str = "cpu", levels=None) -> list:
        """Rows ``idx`` of every level (A_0 … A_K, the output), or only of ``levels`` (the others are None)."""
        wanted = range(len(self.acts)) if levels is None else set(levels)
        if not self.mapped:
            return [a[idx].to(device, non_blocking=True) if i in wanted else None for i, a in enumerate(self.acts)]
        rows = idx.cpu().numpy()
        order = np.argsort(rows)  # sorted reads are sequential on disk; put rows back in the asked order
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        return [torch.from_numpy(np.asarray(a[rows[order]], dtype=np.float32)[back]).to(device) if i in wanted
                else None for i, a in enumerate(self.acts)]

    def __len__(self) -> int:
        return len(self.acts[0])


def _batches(x: torch.Tensor, batch_size: int, progress: bool):
    bar = progress_bar(total=len(x), desc="guide activations", unit="sample", enabled=progress)
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size]
        bar.update(min(batch_size, len(x) - i))
    bar.close()
