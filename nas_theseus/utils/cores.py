"""CPU cores set apart for timing latency while the study trains (``[latency] cores``, study/latency_aside.py).

A study that trains on a GPU leaves most of the machine's cores idle, yet timed its networks' latency on the CPU
in a quiet slot that paused every worker of the machine (utils/quiet.py): on the README's study about 4 s of a
trial, whose whole took 14.7 s on an H200. With a :class:`Layout`, a few cores are *reserved*: the measurers run
there, one measurer per slot of ``latency.threads`` cores, and every process that trains is pinned to the *rest*.

The reserved cores are the highest-numbered physical cores this process may use, each with its hyperthread
siblings (a sibling that trained would share the core's units with the timing), one slot per 8 usable cores;
the trainers keep at least 2 cores (1 where the study asks for reserved cores). ``NAS_THESEUS_LATENCY_CORES``
names them instead: ``";"`` between slots, ``","`` between one slot's cores (``"14,30;15,31"``). The first
process that lays them out writes that variable, so the workers it starts (which inherit its affinity) reserve
the same cores.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ENV = "NAS_THESEUS_LATENCY_CORES"
CORES_PER_SLOT = 8  # one measurer slot per this many usable cores
TRAINER_CORES = 2  # the fewest cores the trainers keep


@dataclass(frozen=True)
class Layout:
    slots: tuple[tuple[int, ...], ...]  # each measurer's cores
    rest: tuple[int, ...]  # every training process's cores

    @property
    def reserved(self) -> tuple[int, ...]:
        return tuple(sorted(c for slot in self.slots for c in slot))

    def describe(self) -> str:
        slots = "; ".join(",".join(map(str, s)) for s in self.slots)
        return f"latency timed on reserved cores {slots}, beside training on the other {len(self.rest)}"


def allowed() -> list[int]:
    """The cores this process may run on (its affinity: taskset, a batch scheduler), in order."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def siblings(cpu: int) -> set[int]:
    """``cpu`` and its hyperthread siblings (the same physical core); just ``cpu`` where the kernel does not say."""
    path = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
    try:
        return parse_list(path.read_text()) | {cpu}
    except (OSError, ValueError):
        return {cpu}


def parse_list(text: str) -> set[int]:
    """The kernel's CPU list format: ``"0-3,8,10-11"``."""
    out: set[int] = set()
    for part in text.strip().split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def layout(threads: int, *, required: bool = False) -> Layout | None:
    """The reserved slots (each of at least ``threads`` cores) and the trainers' cores; None where the machine
    is too small to set cores apart (the trainers would keep fewer than 2), or raises ``ValueError`` saying why
    where ``required``. Reads ``NAS_THESEUS_LATENCY_CORES`` first; writes it once laid out."""
    if not hasattr(os, "sched_setaffinity"):  # macOS, Windows: a process cannot be kept off a core
        if required:
            raise ValueError("this platform cannot pin a process to cores, so none can be reserved for timing")
        return None
    mine, keep = allowed(), (1 if required else TRAINER_CORES)
    named = os.environ.get(ENV, "").strip()
    if named:
        try:
            slots = tuple(tuple(sorted(parse_list(s))) for s in named.split(";") if s.strip())
        except ValueError:
            raise ValueError(f"{ENV}={named!r}: expected cores like \"15\" or \"14,30;15,31\"") from None
    else:
        slots = _pick(mine, threads, max(1, len(mine) // CORES_PER_SLOT), keep)
    reserved = {c for s in slots for c in s}
    rest = tuple(c for c in mine if c not in reserved)
    if not slots or len(rest) < keep:
        if required:
            raise ValueError(f"{len(mine)} usable core(s) leave none to reserve for timing latency beside training "
                             f"(the trainers keep at least one)")
        return None
    os.environ[ENV] = ";".join(",".join(map(str, s)) for s in slots)
    return Layout(slots, rest)


def _pick(mine: list[int], threads: int, n_slots: int, keep: int) -> tuple[tuple[int, ...], ...]:
    """``n_slots`` slots of whole physical cores from the highest-numbered down, each of ``threads`` cores or
    more, leaving the trainers at least ``keep`` cores (fewer slots where that cannot hold)."""
    free, slots = list(mine), []
    for _ in range(n_slots):
        slot: set[int] = set()
        for cpu in reversed(free):
            if len(slot) >= threads:
                break
            if cpu not in slot:
                slot |= siblings(cpu) & set(free)
        if len(slot) < threads or len(free) - len(slot) < keep:
            break
        slots.append(tuple(sorted(slot)))
        free = [c for c in free if c not in slot]
    return tuple(slots)


def pin(cores) -> None:
    """Every thread of this process (torch's pool included) onto ``cores``; threads and processes started after
    inherit it."""
    cores = set(cores)
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(tid, cores)


@contextlib.contextmanager
def pinned(cores) -> Iterator[None]:
    """This process on ``cores`` for the block, then back where it was (an in-process ``run_study`` gives the
    caller's cores back)."""
    before = allowed()
    pin(cores)
    try:
        yield
    finally:
        pin(before)
