"""The guide's activations over a whole split, computed once (the guide is frozen and the data fixed).

Small caches live in memory as float32 (a study keeps them as ``.npy`` files that its workers memory-map, so a
machine holds one copy however many workers read it). When A_0 … A_K and the output over the split would take
more than the
memory budget (``NAS_THESEUS_ACTIVATION_MEMORY`` in GiB, default a quarter of this machine's RAM), they are
written chunk by chunk to memory-mapped ``.npy`` files, float16 by default (``NAS_THESEUS_ACTIVATION_DTYPE=
float32`` keeps full precision, e.g. for activations beyond float16's ±65504), and read back per batch as
float32. A CIFAR-10 ResNet-18 cache is several GB in float32, about half that in float16.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ..data.base import Rows, Split
from ..errors import UserError
from ..guides import Guide
from ..utils.devices import canonical_device
from ..utils.distributed import shard
from ..utils.hashing import stable_hash
from ..utils.progress import progress_bar

MARKER = "complete"
FLOAT16_MAX = 65504.0


def cache_bytes(guide: Guide, rows: int) -> int:
    """What a float32 cache of ``guide``'s activations (A_0 … A_K and its output) over ``rows`` rows takes."""
    return 4 * rows * sum(int(np.prod(s)) for s in [*guide.shapes, guide.output_shape])


def choose_activations(asked: str, data, guide: Guide) -> tuple[str, str]:
    """``cache`` or ``stream`` for a conversion of ``guide`` on ``data``, and why (see
    ``ConvertConfig.activations``). A cache cannot serve augmented batches: asked for with augmentation on, it
    is refused in one line."""
    augmented = data.augment != "none"
    if asked == "cache":
        if augmented:
            raise UserError(f"activations = \"cache\" holds the guide's activations of the rows as they are, but "
                            f"augment = {data.augment!r} trains on other rows every pass: use \"stream\" or \"auto\"")
        return "cache", "asked for (activations = \"cache\")"
    if asked == "stream":
        return "stream", "asked for (activations = \"stream\")"
    if augmented:
        return "stream", f"augment = {data.augment!r}: the guide sees each augmented batch"
    need, budget = cache_bytes(guide, len(data.train)), memory_budget_bytes()
    if need > budget:
        return "stream", (f"a cache would take {need / 2**30:.2f} GiB, over the memory budget of "
                          f"{budget / 2**30:.2f} GiB (NAS_THESEUS_ACTIVATION_MEMORY)")
    return "cache", f"augmentation off and the cache ({need / 2**20:.1f} MiB) fits the memory budget"


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

    def __init__(self, acts: list, key: str, *, root: GuideActivations | None = None,
                 levels: list[int] | None = None, stager: PinnedStager | None = None):
        self.acts = acts
        self.key = key
        self._root, self._levels = root, levels  # a selection of ``root``'s levels (see select)
        self.stager = stager  # set on a host cache read by a GPU (see on)

    @property
    def mapped(self) -> bool:
        return isinstance(self.acts[0], np.ndarray)

    @classmethod
    @torch.no_grad()
    def compute(cls, guide: Guide, x: Rows | torch.Tensor, *, data_key: str, batch_size: int = 512,
                device: torch.device | str = "cpu", progress: bool = True,
                mmap_dir: str | os.PathLike | None = None) -> GuideActivations:
        """Run the guide over ``x`` (a split, or its inputs as a tensor) on ``device``; with ``mmap_dir`` and
        more than the memory budget, write memory-mapped files under ``mmap_dir`` (a folder that appears complete
        or not at all) instead of keeping tensors."""
        _check_guide_on(guide, device)
        key = stable_hash({"guide": guide.identity, "data": data_key})
        shapes = [*guide.shapes, guide.output_shape]
        need = cache_bytes(guide, len(x))
        if mmap_dir is not None and need > memory_budget_bytes():
            return cls._compute_mapped(guide, x, shapes, key, Path(mmap_dir), batch_size, device, progress)
        # filled in place: the peak is the cache itself, not the cache plus a list of chunks to concatenate
        acts = [torch.empty((len(x), *s), dtype=torch.float32) for s in shapes]
        start = 0
        for xb in _batches(x, batch_size, device, progress):
            for full, a in zip(acts, guide.activations(xb)):
                full[start:start + len(xb)] = a.float().cpu()
            start += len(xb)
        return cls(acts, key)

    def select(self, levels: list[int] | None) -> GuideActivations:
        """The levels of a regrouped guide (:meth:`Guide.grouped`'s ``levels``), sharing this cache's arrays
        (made once per set of levels; a device copy of the cache is made once, of all levels, by :meth:`on`)."""
        if levels is None:
            return self
        root = self._root or self
        levels = [self._levels[i] for i in levels] if self._levels is not None else list(levels)
        memo = root.__dict__.setdefault("_select", {})
        key = tuple(levels)
        if key not in memo:
            memo[key] = GuideActivations([root.acts[i] for i in levels],
                                         stable_hash({"of": root.key, "levels": levels}), root=root, levels=levels,
                                         stager=root.stager)
        return memo[key]

    def on(self, device: torch.device | str) -> GuideActivations:
        """This cache where a conversion on ``device`` reads it fastest: on a CUDA device when it fits in a
        quarter of the device's free memory (``NAS_THESEUS_DEVICE_CACHE`` GiB sets the budget), else left on the
        host and read through a double-buffered pinned staging buffer (:class:`PinnedStager`). The device copy is
        made once per process and device (``cuda`` and ``cuda:0`` are one device), of every level, whatever
        partition of the guide selects from it, so the trials of a study pay for it once."""
        device = canonical_device(device)
        if device.type != "cuda" or self._reads_into(device):
            return self
        root = self._root or self
        memo = root.__dict__.setdefault("_on", {})
        if str(device) not in memo:
            need = sum(a.size * 4 if isinstance(a, np.ndarray) else a.numel() * a.element_size() for a in root.acts)
            env = os.environ.get("NAS_THESEUS_DEVICE_CACHE")
            budget = float(env) * 2**30 if env else torch.cuda.mem_get_info(device)[0] / 4
            if need <= budget:
                placed = GuideActivations([_to_device(a, device) for a in root.acts], root.key)
            else:
                placed = GuideActivations(root.acts, root.key, stager=PinnedStager(device))
            memo[str(device)] = placed
        placed = memo[str(device)]
        return placed if self._levels is None else placed.select(self._levels)

    def _reads_into(self, device: torch.device) -> bool:
        """Whether this cache already lives on ``device`` or is staged into it."""
        if self.stager is not None:
            return self.stager.device == device
        return not self.mapped and self.acts[0].device == device

    @classmethod
    def _compute_mapped(cls, guide, x, shapes, key, folder: Path, batch_size, device, progress) -> GuideActivations:
        dtype = _disk_dtype()
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        try:
            arrays = [np.lib.format.open_memmap(tmp / f"a{i}.npy", mode="w+", dtype=dtype, shape=(len(x), *s))
                      for i, s in enumerate(shapes)]
            start = 0
            for xb in _batches(x, batch_size, device, progress):
                for i, a in enumerate(guide.activations(xb)):
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
            _move_into_place(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls.open_mapped(folder, len(shapes))

    def save_shared(self, folder: str | os.PathLike) -> None:
        """Write this in-memory cache as float32 ``.npy`` files under ``folder`` (written whole, then moved into
        place; no second copy of the cache in memory while it is written), for :meth:`open_shared`."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        try:
            for i, a in enumerate(self.acts):
                np.save(tmp / f"a{i}.npy", a.contiguous().numpy())
            (tmp / MARKER).write_text(self.key)
            _move_into_place(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def open_shared(cls, folder: str | os.PathLike, n: int) -> GuideActivations:
        """Open a folder of :meth:`save_shared` as tensors over read-only memory maps: every worker of a
        machine reads the same pages of the OS's file cache instead of holding a copy of its own."""
        folder = Path(folder)
        if not (folder / MARKER).is_file():
            raise ValueError(f"{folder} is not a complete activation cache")
        with warnings.catch_warnings():  # read-only maps: the tensors are never written
            warnings.filterwarnings("ignore", message=".*not writable.*")
            acts = [torch.from_numpy(np.load(folder / f"a{i}.npy", mmap_mode="r")) for i in range(n)]
        return cls(acts, (folder / MARKER).read_text())

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
        if self.stager is not None:
            return self.stager.gather(self.acts, idx, wanted)
        if not self.mapped:
            idx = idx.to(self.acts[0].device)  # gathered where the cache lives, then copied
            return [a.index_select(0, idx).to(device) if i in wanted else None for i, a in enumerate(self.acts)]
        return [torch.from_numpy(_mapped_rows(a, idx)).to(device) if i in wanted else None
                for i, a in enumerate(self.acts)]

    def stage_batches(self, data, batch_size: int, generator: torch.Generator, device, levels: set[int],
                      needs_x: bool):
        """Endless ``(x, acts)`` for a stage's steps (see :mod:`nas_theseus.convert.stream`): this cache's rows
        (and, where a step reads them, the training split's) by the seeded permutation, in full batches."""
        n = len(data.train)
        where = self.acts[0].device if not self.mapped and self.stager is None else torch.device("cpu")
        while True:
            perm = torch.randperm(n, generator=generator).to(where)  # indices live with the cache
            for pos in range(0, n - batch_size + 1, batch_size):
                idx = shard(perm[pos:pos + batch_size])  # a data-parallel rank's own rows of the batch
                x = data.train.take(idx.cpu())[0].to(device) if needs_x else None
                yield x, self.batch(idx, device, levels)

    def __len__(self) -> int:
        return len(self.acts[0])


class PinnedStager:
    """Reads rows of a host cache (tensors or memory-mapped arrays) into a GPU: each batch is gathered straight
    into a pinned host buffer and copied to the device without blocking. Two buffers take turns, and a buffer
    is refilled only once the copy out of it has finished (a CUDA event recorded after it), so the host gathers
    the next batch while the GPU copies and computes the last one. On the CPU (tests) the copy is a clone."""

    SLOTS = 2

    def __init__(self, device: torch.device | str):
        self.device = canonical_device(device)
        self.cuda = self.device.type == "cuda"
        self.buffers: dict[tuple, torch.Tensor] = {}  # (slot, level, row shape) -> pinned float32 rows
        self.events: list = [None] * self.SLOTS
        self.slot = 0

    def gather(self, acts: list, idx: torch.Tensor, wanted) -> list:
        self.slot = (self.slot + 1) % self.SLOTS
        if self.events[self.slot] is not None:
            self.events[self.slot].synchronize()  # the copy out of this buffer two batches ago is done
        rows = idx.cpu()
        out = []
        for level, a in enumerate(acts):
            if level not in wanted:
                out.append(None)
                continue
            buf = self._buffer(level, len(rows), tuple(a.shape[1:]))
            if isinstance(a, np.ndarray):
                buf.numpy()[:] = _mapped_rows(a, rows)
            else:
                torch.index_select(a, 0, rows, out=buf)
            out.append(buf.to(self.device, non_blocking=True) if self.cuda else buf.clone())
        if self.cuda:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
            self.events[self.slot] = event
        return out

    def _buffer(self, level: int, n: int, shape: tuple[int, ...]) -> torch.Tensor:
        key = (self.slot, level, shape)  # the selections of a regrouped guide share the stager
        buf = self.buffers.get(key)
        if buf is None or len(buf) < n:
            buf = torch.empty((n, *shape), dtype=torch.float32, pin_memory=self.cuda)
            self.buffers[key] = buf
        return buf[:n]


def _to_device(a, device: torch.device, rows: int = 4096) -> torch.Tensor:
    """A host tensor, or a memory-mapped array read in chunks (never whole in host memory), as float32 on
    ``device``."""
    if not isinstance(a, np.ndarray):
        return a.to(device)
    out = torch.empty(a.shape, dtype=torch.float32, device=device)
    for i in range(0, len(a), rows):
        out[i:i + rows] = torch.from_numpy(np.asarray(a[i:i + rows], dtype=np.float32)).to(device)
    return out


def _mapped_rows(a: np.ndarray, idx: torch.Tensor) -> np.ndarray:
    """Rows ``idx`` of a memory-mapped array as float32, read in sorted order (sequential on disk)."""
    rows = idx.cpu().numpy()
    order = np.argsort(rows)
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return np.asarray(a[rows[order]], dtype=np.float32)[back]


def _check_guide_on(guide: Guide, device) -> None:
    """Refuse, in one line, to run a guide on a batch of another device."""
    if canonical_device(guide.device) != canonical_device(device):
        raise UserError(f"the guide is on {guide.device} but its activations were asked for on {device}; move it "
                        f"first (guide.to({str(device)!r}))")


def _move_into_place(tmp: Path, folder: Path) -> None:
    """Put the finished cache folder ``tmp`` at ``folder``, replacing an earlier (unreadable) cache there. A
    ``folder`` holding anything a cache does not write is someone else's: refused, never deleted."""
    if folder.exists():
        foreign = ([folder.name] if not folder.is_dir() else
                   [p.name for p in folder.iterdir() if p.name != MARKER and not re.fullmatch(r"a\d+\.npy", p.name)])
        if foreign:
            raise UserError(f"{folder} exists and holds {', '.join(sorted(foreign)[:5])}, which an activation cache "
                            f"does not write; move it or choose another folder (nothing was deleted)")
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def _batches(x: Rows | torch.Tensor, batch_size: int, device, progress: bool):
    """The inputs of ``x`` in order, in batches on ``device``."""
    rows = x if isinstance(x, Rows) else Split(x, torch.zeros(len(x), dtype=torch.long))
    bar = progress_bar(total=len(rows), desc="guide activations", unit="sample", enabled=progress)
    for b in rows.batches(batch_size, device=device):
        yield b.x
        bar.update(len(b.x))
    bar.close()
