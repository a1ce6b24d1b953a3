"""Image data read packed (``packed = true`` or ``"auto"``, image folders and Hugging Face image datasets): the
images decoded once into uint8 shards in the cache (:mod:`nas_theseus.data.image_pack`), then read memory-mapped
as :class:`~nas_theseus.data.byte_images.ByteImages`: a batch is gathered from the shard as bytes, moved to the
device (pinned, without blocking) and standardised and augmented there, with the same seeded draws as images
held in memory, so the rows, and a conversion's curves, are those of the folder read into memory.

A pack is keyed by its content: the format, the loader, the options that shape the pixels (size, channels,
classes) and every split's rows as the loader identifies them (files' paths, sizes and modification times; a
Hugging Face split's fingerprint), so a second study on the same data and options reuses it. A pack is trusted
only through its manifest, and only while every shard matches it (size and sha256, read in full the first time
the data are opened, and again whenever a shard's size or modification time has changed since); a shard that
does not is refused, in one line, and the data packed again. A pack that cannot be written (a full disk)
leaves the source as it was: the data are then read from it unpacked, and a warning says so. A complete pack
in a folder that cannot be written to (made read-only to share it) is read all the same: only its last use goes
unrecorded (a debug log record), and shards whose match was never recorded are hashed on every open (one note
says so); the lock an open takes (in the cache's ``locks/``) must still be writable. Memory is flat in the
number of images: the shards are mapped, not read (the page cache aside).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..utils.files import atomic_write_text, cache_dir
from ..utils.hashing import file_sha256, stable_hash
from ..utils.locks import file_lock
from ..utils.progress import progress_enabled
from .base import TaskData
from .byte_images import ByteImages
from .dataset_split import DatasetSplit
from .decoded_images import IN_MEMORY_MB, Images, image_statistics, image_task
from .image_pack import FORMAT, MANIFEST, SPLITS, VERIFIED, pack_folder, shard_stamp, write_pack

logger = logging.getLogger(__name__)
_UNRECORDED: set[Path] = set()  # packs whose stamps could not be written, noted once a process (_record)


@dataclass(frozen=True)
class PackedImages(ByteImages):
    """:class:`ByteImages` over a memory-mapped shard; its fingerprint is the pack's (no byte is read for it)."""

    key: str = ""

    def fingerprint(self) -> str:
        return self.key


def packed_task(name: str, parts: list[Images], identities: list, config: dict, *, packed: bool | str,
                in_memory: bool | str, workers: int | None, split_seed: int, val_fraction: float,
                reader: Callable[..., DatasetSplit] = DatasetSplit) -> TaskData:
    """The task over ``parts`` read packed (packed first where needed), or as :func:`image_task` reads them (with
    ``reader``) when ``packed`` is false, or ``"auto"`` and they would be held in memory, or when the pack cannot
    be written."""
    if packed not in ("auto", True, False):
        raise UserError(f"{name} data: packed must be \"auto\", true or false, got {packed!r}")
    unpacked = {"in_memory": in_memory, "workers": workers, "split_seed": split_seed, "val_fraction": val_fraction,
                "reader": reader}
    if packed is False or (packed == "auto" and not _too_large(parts, in_memory)):
        return image_task(name, parts, identities, config, **unpacked)
    key = stable_hash({"format": FORMAT, "name": name, "config": {k: v for k, v in config.items() if k != "root"},
                       "rows": identities})
    folder = pack_folder(name, key)
    meta = {"name": name, "key": key, "source": config.get("root"), "source_fingerprint": stable_hash(identities),
            "classes": config["classes"], "channels": parts[0].channels, "width": parts[0].size[0],
            "height": parts[0].size[1]}
    try:
        # one process packs (or checks, or maps) at a time, the others wait: none maps a shard being replaced
        with file_lock(cache_dir() / "locks" / f"pack-{key}.lock"):
            manifest = read_pack(folder)
            if manifest is None:
                summary = write_pack(folder, parts, meta, workers=workers, progress=progress_enabled())
                if progress_enabled():
                    print(summary.line(), file=sys.stderr)
                manifest = json.loads((folder / MANIFEST).read_text())
            return _task(name, folder, manifest, config, split_seed=split_seed, val_fraction=val_fraction)
    except OSError as e:
        warnings.warn(f"{name} data: could not pack into {folder} ({e.strerror or e}); nothing of it was kept, "
                      f"the source is untouched and read unpacked", stacklevel=2)
        return image_task(name, parts, identities, config, **unpacked)


def _too_large(parts: list[Images], in_memory: bool | str) -> bool:
    """Whether :func:`image_task` would read ``parts`` through a DataLoader (what ``packed = "auto"`` packs)."""
    channels, (w, h) = parts[0].channels, parts[0].size
    return in_memory is False or (in_memory == "auto" and sum(map(len, parts)) * channels * w * h * 4
                                  > IN_MEMORY_MB * 2**20)


def read_pack(folder: Path) -> dict | None:
    """The pack's manifest when it is there and every shard matches it, else None; a shard that does not match
    is named in a one-line warning (the data are then packed again). A shard is hashed in full once; then, while
    its size and modification time are those it had when it matched (``verified.json``), it is trusted unread."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        shards = [manifest["splits"][s] for s in SPLITS]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if manifest.get("format") != FORMAT:
        return None
    stamps, fresh = _stamps(folder), {}
    for shard in shards:
        path = folder / shard["file"]
        size = path.stat().st_size if path.is_file() else None
        if size is not None and stamps.get(shard["file"]) == shard_stamp(path, shard["sha256"]):
            fresh[shard["file"]] = stamps[shard["file"]]
            continue
        if size != shard["bytes"] or file_sha256(path) != shard["sha256"]:
            found = "missing" if size is None else f"{size} bytes" if size != shard["bytes"] else "another sha256"
            warnings.warn(f"packed images: {path} does not match its manifest ({found}, expected {shard['bytes']} "
                          f"bytes of sha256 {shard['sha256'][:12]}…); refused, packing again", stacklevel=2)
            return None
        fresh[shard["file"]] = shard_stamp(path, shard["sha256"])
    _record(folder, fresh, verified=fresh == stamps)
    return manifest


def _record(folder: Path, fresh: dict, *, verified: bool) -> None:
    """Write the shards' stamps ``fresh`` to ``verified.json`` (``verified``: it holds them already, and only its
    time is set: when the pack was last used, what ``nas-theseus data clean --unused-for`` reads). A pack that
    cannot be written to (made read-only) is still read: one log record says what was not recorded, and shards
    with no stamp recorded are hashed again on the next open, never trusted unread."""
    try:
        if verified:
            os.utime(folder / VERIFIED)
        else:
            atomic_write_text(folder / VERIFIED, json.dumps(fresh))
    except OSError as e:
        if verified:  # a debug record: an open of a read-only pack is not worth a line
            logger.debug("packed images: could not record the last use of %s (%s); `nas-theseus data clean "
                         "--unused-for` may see it as unused for longer", folder, e.strerror or e)
        elif folder not in _UNRECORDED:  # a note, once a process: every open of this pack hashes its shards
            _UNRECORDED.add(folder)
            logger.info("packed images: could not record in %s that its shards match their manifest (%s); "
                        "they are hashed again on every open", folder / VERIFIED, e.strerror or e)


def _stamps(folder: Path) -> dict:
    """``verified.json``: per shard, the size, modification time and sha256 it had when it last matched."""
    try:
        stamps = json.loads((folder / VERIFIED).read_text())
    except (OSError, ValueError):
        return {}
    return stamps if isinstance(stamps, dict) else {}


def _task(name: str, folder: Path, manifest: dict, config: dict, *, split_seed: int,
          val_fraction: float) -> TaskData:
    """The task over a verified pack: shards mapped copy-on-write (never written), statistics of the training
    images as :func:`image_task` draws them (the same seeded sample, the same arithmetic)."""
    arrays = [torch.from_numpy(np.load(folder / manifest["splits"][s]["file"],
                                       mmap_mode="c" if manifest["splits"][s]["rows"] else None)) for s in SPLITS]
    labels = [torch.tensor(manifest["splits"][s]["labels"], dtype=torch.long) for s in SPLITS]
    mean, std = image_statistics(_Raw(arrays[0]), split_seed)
    stats = {"mean": mean.tolist(), "std": std.tolist()}
    splits = [PackedImages(x, y, torch.from_numpy(mean), torch.from_numpy(std),
                           key=stable_hash({"pack": manifest["key"], "split": s, **stats}))
              for s, x, y in zip(SPLITS, arrays, labels)]
    return TaskData(name, *splits, num_classes=len(manifest["classes"]),
                    config={**config, "val_fraction": val_fraction, "split_seed": split_seed, "in_memory": False,
                            "packed": str(folder)})


class _Raw:
    """Packed images as :func:`image_statistics` reads them: ``raw(i)`` float32 (C, H, W) in [0, 1]."""

    def __init__(self, x: torch.Tensor):
        self.x, self.channels = x, x.shape[1]

    def __len__(self) -> int:
        return len(self.x)

    def raw(self, i: int) -> np.ndarray:
        return np.asarray(self.x[i].numpy(), dtype=np.float32) / 255.0
