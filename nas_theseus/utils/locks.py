"""Inter-process locks on files, released by the operating system when the holder dies, even by SIGKILL.

Each lock is the native lock of one open file (``flock`` on POSIX, ``LockFileEx`` on Windows) taken with
:func:`filelock.lock_descriptor`: it belongs to that open file, not to the process, so two opens of the same lock file
in one process contend like two processes do, and a lock file is never deleted (records are kept beside them).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from filelock import lock_descriptor, unlock_descriptor

from .cores import allowed
from .files import cache_dir


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block; waits for other holders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        lock_descriptor(f.fileno())
        try:
            yield
        finally:
            unlock_descriptor(f.fileno())


def machine_lock(name: str) -> contextlib.AbstractContextManager[None]:
    """A lock shared by every process of this machine (its file name carries the host name, so a cache
    directory on a shared file system still gives one lock per machine)."""
    return file_lock(cache_dir() / "locks" / f"{name}-{socket.gethostname()}.lock")


class Slot:
    """The lowest free slot number under ``folder``, held until ``release`` or process exit: a stable, small
    worker number for processes that share a work directory on one machine."""

    def __init__(self, folder: str | os.PathLike, limit: int = 4096):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(limit):
            f = open(folder / f"slot-{i}.lock", "a+")  # noqa: SIM115 - held open for the slot's lifetime
            if not lock_descriptor(f.fileno(), blocking=False):
                f.close()
                continue
            self.number, self._file = i, f
            return
        raise RuntimeError(f"no free worker slot under {folder}")

    def release(self) -> None:
        if self._file is not None:
            unlock_descriptor(self._file.fileno())
            self._file.close()
            self._file = None


def held_slots(folder: str | os.PathLike) -> int:
    """How many ``slot-*.lock`` files under ``folder`` are held by a live process (this one's included)."""
    held = 0
    for path in Path(folder).glob("slot-*.lock"):
        with open(path, "a+") as f:
            if not lock_descriptor(f.fileno(), blocking=False):
                held += 1
                continue
            unlock_descriptor(f.fileno())
    return held


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. under taskset or a batch scheduler)."""
    return len(allowed())
