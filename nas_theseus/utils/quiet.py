"""Latency timed in a quiet slot: while one process of this machine times latency, none of them trains.

Measured on a lent H200 (12-04): the guide's reference latency read 0.127 ms with three other workers training
beside it against 0.082 ms alone, so a study's latency objective depended on how many workers ran. Three
machine-wide file locks (``flock``: shared and exclusive, released by the operating system when a holder dies):

* a process that trains holds the *quiet* lock shared (:func:`training`), and at every :func:`pause_point` (the
  training loops call it once per window of steps, where they read their losses) it looks at the *gate*;
* a process that times latency (:func:`quiet`) takes the gate (exclusive: one measurer at a time, and no trainer
  enters or resumes while it is held), then the quiet lock exclusive, which it gets once every trainer has
  reached a pause point and let go; it gives both back when the timing ends, and the trainers resume.

A trainer pauses only at a pause point, so the wait for a quiet slot is at most one window of steps of the
slowest trainer (or one pass of a step without pause points: an evaluation, the guide's activations). A process
that trains and measures (a worker timing its own trial) lets go of its own hold first. Under ``torchrun`` only
rank 0 holds the lock: a follower paused at the gate could otherwise hold rank 0 in a collective, which the
measurer waits for. Where ``fcntl`` is missing (Windows), measurers still take turns but trainers are not held.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

from .files import cache_dir
from .locks import machine_lock

try:
    import fcntl
except ImportError:  # Windows: no shared locks; measurers take turns on an exclusive lock
    fcntl = None

_HOLD: list[int] = []  # the descriptor of this process's shared hold on the quiet lock, while it trains


def _path(name: str) -> str:
    folder = cache_dir() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / f"{name}-{socket.gethostname()}.lock")


def _open(name: str) -> int:
    return os.open(_path(name), os.O_RDWR | os.O_CREAT, 0o644)


def _lock(fd: int, how: int, *, blocking: bool = True) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, how | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _through_gate() -> None:
    """Wait until no measurer holds the gate (returns at once when none does)."""
    if fcntl is None:
        return
    fd = _open("quiet-gate")
    try:
        _lock(fd, fcntl.LOCK_SH)
        _unlock(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def training(*, enabled: bool = True) -> Iterator[None]:
    """Hold this machine's quiet lock shared for the block (this process trains); nested blocks share one hold.
    ``enabled`` False: nothing is held (a torchrun follower)."""
    if not enabled or _HOLD or fcntl is None:
        yield
        return
    _through_gate()
    fd = _open("quiet")
    _lock(fd, fcntl.LOCK_SH)
    _HOLD.append(fd)
    try:
        yield
    finally:
        _HOLD.clear()
        _unlock(fd)
        os.close(fd)


def pause_point() -> None:
    """Between training steps: when a measurer waits at the gate, let go of this process's hold until it is
    done. Costs one non-blocking lock call when none waits (and nothing outside :func:`training`)."""
    if not _HOLD:
        return
    gate = _open("quiet-gate")
    try:
        if _lock(gate, fcntl.LOCK_SH, blocking=False):  # no measurer: go on
            _unlock(gate)
            return
        fd = _HOLD[0]
        _unlock(fd)  # let the measurer in ...
        _lock(gate, fcntl.LOCK_SH)  # ... wait until it is done ...
        _unlock(gate)
        _lock(fd, fcntl.LOCK_SH)  # ... and train again
    finally:
        os.close(gate)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """A quiet slot for timing: no other process of this machine trains inside the block, and no other one
    times. Waits for the trainers' next pause points."""
    if fcntl is None:
        with machine_lock("quiet-gate"):
            yield
        return
    gate, own = _open("quiet-gate"), (_HOLD[0] if _HOLD else None)
    try:
        _lock(gate, fcntl.LOCK_EX)
        if own is not None:
            _unlock(own)  # this process's own training hold (a worker timing its own trial)
        fd = _open("quiet")
        try:
            _lock(fd, fcntl.LOCK_EX)
            yield
        finally:
            _unlock(fd)
            os.close(fd)
            if own is not None:
                _lock(own, fcntl.LOCK_SH)  # the gate is still ours: no measurer can slip in between
    finally:
        _unlock(gate)
        os.close(gate)
