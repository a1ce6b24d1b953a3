"""Writing a packed image data set: every image of the train / validation / test splits decoded once, at the
split's size and channels, into one uint8 ``.npy`` file per split (a shard: (N, C, H, W), C-ordered), and a
JSON manifest beside them (``manifest.json``: the shards' rows, bytes and sha256, the labels, the class names,
the source's fingerprint, the format version).

Decoding runs in DataLoader worker processes (``workers``; default: every usable core on a machine of more
than two) and each shard is written through plain file writes (a full disk is an ``OSError``, not the SIGBUS
a memory map would raise) under a temporary name, moved onto its own with ``os.replace``. The manifest is
written last: a pack killed or failed half way leaves no manifest, so nothing of it is trusted, and a failed
pack removes what it wrote. Reading: :mod:`nas_theseus.data.packed_images`.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..utils.files import atomic_write, atomic_write_text, cache_dir
from ..utils.locks import usable_cores
from ..utils.progress import progress_bar
from .dataset_split import DatasetSplit
from .decoded_images import Images

FORMAT = 1  # the layout's version: part of every pack's key
MANIFEST = "manifest.json"
VERIFIED = "verified.json"  # each shard's size, mtime and sha256 when it last matched the manifest (packed_images)
SPLITS = ("train", "val", "test")
BATCH = 256  # images decoded per DataLoader batch


@dataclass(frozen=True)
class PackSummary:
    """What one pack wrote: where, how many images and bytes, in how many seconds."""

    folder: Path
    images: int
    bytes: int
    seconds: float

    def line(self) -> str:
        rate = self.images / max(self.seconds, 1e-9)
        return (f"packed {self.images:,} images ({self.bytes / 2**20:,.1f} MiB) in {self.seconds:.1f} s "
                f"({rate:,.0f} images/s) into {self.folder}")


def pack_folder(name: str, key: str) -> Path:
    """Where the pack of content key ``key`` lives: ``$NAS_THESEUS_CACHE/packed/<name>-<key>``."""
    return cache_dir() / "packed" / f"{name}-{key}"


def pack_workers(workers: int | None) -> int:
    """Decoding processes: ``workers`` when given, else every usable core (none on two cores or fewer)."""
    if workers is not None:
        return workers
    cores = usable_cores()
    return 0 if cores <= 2 else cores


def write_pack(folder: Path, parts: list[Images], meta: dict, *, workers: int | None,
               progress: bool = True) -> PackSummary:
    """Decode ``parts`` (train, validation, test) into shards under ``folder``, then write the manifest
    (``meta`` and the shards' records). Any failure removes what this pack wrote and is raised as it is."""
    t0 = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    clear_pack(folder)  # what a killed pack left (no manifest: never trusted)
    try:
        shards = {}
        with progress_bar(total=sum(map(len, parts)), desc=f"packing {meta.get('name', 'images')}", unit="img",
                          enabled=progress) as bar:
            for split, part in zip(SPLITS, parts):
                shards[split] = _write_shard(folder / f"{split}.npy", part, pack_workers(workers), bar)
        summary = PackSummary(folder, sum(map(len, parts)), sum(s["bytes"] for s in shards.values()),
                              time.perf_counter() - t0)
        manifest = {**meta, "format": FORMAT, "splits": shards, "images": summary.images, "bytes": summary.bytes}
        atomic_write_text(folder / MANIFEST, json.dumps(manifest))
        atomic_write_text(folder / VERIFIED, json.dumps({s["file"]: shard_stamp(folder / s["file"], s["sha256"])
                                                         for s in shards.values()}))
    except BaseException:
        clear_pack(folder)
        raise
    return summary


def clear_pack(folder: Path) -> None:
    """Remove a pack's files (its manifest first, so no reader trusts what is left while it goes)."""
    for f in [folder / MANIFEST, *sorted(folder.iterdir())] if folder.is_dir() else []:
        f.unlink(missing_ok=True)


def _write_shard(path: Path, part: Images, workers: int, bar) -> dict:
    """One split's images as a ``.npy`` file written block by block, hashed as it is written."""
    shape = (len(part), part.channels, part.size[1], part.size[0])
    digest = hashlib.sha256()

    def write(tmp: str) -> None:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": shape})
        with open(tmp, "wb") as f:
            _write_block(f, digest, header.getvalue())
            for batch in DatasetSplit(_Bytes(part), fingerprint="pack", workers=workers).batches(BATCH):
                _write_block(f, digest, batch.x.numpy().tobytes())
                bar.update(len(batch.x))

    atomic_write(path, write)
    return {"file": path.name, "rows": len(part), "bytes": path.stat().st_size, "sha256": digest.hexdigest(),
            "labels": [int(v) for v in part.labels]}


def shard_stamp(path: Path, sha256: str) -> dict:
    """What ``verified.json`` holds of a shard that matches its manifest (:func:`~nas_theseus.data.packed_images.
    read_pack` trusts it unread while its size and modification time are these)."""
    stat = path.stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256}


def _write_block(f, digest, data: bytes) -> None:
    f.write(data)
    digest.update(data)


class _Bytes(Dataset):
    """``images`` decoded (converted and resized as the split reads them), as uint8 (C, H, W) tensors."""

    def __init__(self, images: Images):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        a = np.array(self.images.image(i), dtype=np.uint8)  # a copy: writable, as torch wants it
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(a)), self.images.labels[i]
