"""The packs in the cache (``$NAS_THESEUS_CACHE/packed/``), listed and removed when unused: ``nas-theseus data
list`` and ``nas-theseus data clean [--unused-for DAYS] [--max-size SIZE] [--dry-run]``.

A pack outlives the data it was made of (a changed folder is packed anew, under another key), so the cache grows
until someone removes what no study reads. An open of a pack (:func:`~nas_theseus.data.packed_images.read_pack`)
sets the modification time of its ``verified.json`` to now: that is when the pack was last used (a pack from
before the stamp existed: its manifest's time). What ``clean`` removes:

* a pack killed half way (no manifest: never trusted, packed again when wanted), once nothing of it has been
  written for an hour;
* with ``--unused-for DAYS``, a pack not opened for that long;
* with ``--max-size SIZE``, then the least recently used packs until the rest take at most SIZE.

Only folders named as packs are (``<loader>-<16 hex>``), and in them only the files a pack writes (its shards,
manifest, stamps, and their temp files); a folder left with other files is kept with them. A pack being
written or opened holds its lock: it is skipped. A study that has a pack open keeps reading its mapped files
after they are removed (POSIX), and a later process packs the data again.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import lock_descriptor, unlock_descriptor

from ..utils.files import cache_dir
from ..utils.sizes import format_size, over_size
from .image_pack import MANIFEST, SPLITS, VERIFIED

PACK = re.compile(r"[a-z0-9_]+-[0-9a-f]{16}")
FILES = {MANIFEST, VERIFIED, *(f"{s}.npy" for s in SPLITS)}
TEMP = re.compile(r"\.(manifest|verified|train|val|test)\.[A-Za-z0-9_]+\.tmp\.(json|npy)")  # atomic_write's
KILLED_AFTER_S = 3600.0


@dataclass(frozen=True)
class Pack:
    """One pack folder: its files of ours, their bytes, when it was last used, and what its manifest says."""

    folder: Path
    files: tuple[Path, ...]
    bytes: int
    last_used: float
    manifest: dict | None  # None: killed half way

    def line(self, now: float) -> str:
        days = max(now - self.last_used, 0) / 86400
        if self.manifest is None:
            return f"{self.folder.name}  {format_size(self.bytes)}  incomplete (killed while packing)"
        m = self.manifest
        return (f"{self.folder.name}  {format_size(self.bytes)}  {m.get('images', '?'):,} images  last used "
                f"{days:.1f} days ago  source {m.get('source')}")


def packs_root() -> Path:
    return cache_dir() / "packed"


def list_packs() -> list[Pack]:
    """Every pack folder under :func:`packs_root`, least recently used first."""
    root = packs_root()
    found = [_read(d) for d in sorted(root.iterdir()) if d.is_dir() and not d.is_symlink()
             and PACK.fullmatch(d.name)] if root.is_dir() else []
    return sorted(found, key=lambda p: p.last_used)


def _read(folder: Path) -> Pack:
    files = tuple(f for f in sorted(folder.iterdir()) if f.is_file() and not f.is_symlink()
                  and (f.name in FILES or TEMP.fullmatch(f.name)))
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = None
    stamp = folder / (VERIFIED if (folder / VERIFIED).is_file() else MANIFEST)
    times = [stamp.stat().st_mtime] if manifest is not None else [f.stat().st_mtime for f in files]
    return Pack(folder, files, sum(f.stat().st_size for f in files), max(times, default=0.0), manifest)


def plan(packs: list[Pack], *, unused_for_s: float | None, max_size: int | None, now: float) -> list[Pack]:
    """The packs ``clean`` removes (see the module docstring), least recently used first."""
    going = [p for p in packs if (p.manifest is None and now - p.last_used > KILLED_AFTER_S)
             or (p.manifest is not None and unused_for_s is not None and now - p.last_used > unused_for_s)]
    if max_size is not None:  # packs are listed least recently used first
        going += over_size([p for p in packs if p not in going], lambda p: p.bytes, max_size)[0]
    return going


def remove(pack: Pack) -> int | None:
    """Remove ``pack``'s files of ours (the manifest first: no reader trusts what is left) and its folder when
    empty; its bytes, or None when it is in use (its lock held) or was used after it was listed."""
    with _unless_locked(pack.folder) as free:
        if not free or _read(pack.folder).last_used > pack.last_used:
            return None
        for f in sorted(pack.files, key=lambda f: f.name != MANIFEST):
            f.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: files of someone else's stay, with their folder
            pack.folder.rmdir()
    return pack.bytes


@contextlib.contextmanager
def _unless_locked(folder: Path) -> Iterator[bool]:
    """The pack's lock (the one packing and opening take), held for the block when free: True; else False."""
    lock = cache_dir() / "locks" / f"pack-{folder.name.rsplit('-', 1)[1]}.lock"
    if not lock.exists():
        yield True
        return
    with open(lock, "a+") as f:
        held = lock_descriptor(f.fileno(), blocking=False)
        try:
            yield held
        finally:
            if held:
                unlock_descriptor(f.fileno())


def clean(*, unused_for_days: float | None, max_size: int | None, dry_run: bool) -> str:
    """Remove what :func:`plan` says; one summary line."""
    now = time.time()
    packs = list_packs()
    going = plan(packs, unused_for_s=None if unused_for_days is None else unused_for_days * 86400,
                 max_size=max_size, now=now)
    if dry_run:
        return (f"would remove {len(going)} of {len(packs)} packs, {format_size(sum(p.bytes for p in going))}"
                f" (dry run: nothing removed)")
    removed = [(p, remove(p)) for p in going]
    freed, skipped = sum(b for _, b in removed if b), sum(b is None for _, b in removed)
    kept = f"; {skipped} in use or used meanwhile, kept" if skipped else ""
    return f"removed {len(going) - skipped} of {len(packs)} packs, {format_size(freed)} freed{kept}"
