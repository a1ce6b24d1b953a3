"""Fault injection for tests: make this process stop at a chosen point, as a crash or Ctrl-C would.

Set ``NAS_THESEUS_TEST_HOOK="<point>:<action>:<n>[:<rank>]"``: the n-th time (default 1) this process
reaches ``<point>``, it does ``<action>`` (with ``<rank>``: only the torchrun rank of that number does):
``kill`` (SIGKILL itself: nothing is cleaned up), ``interrupt`` (raise KeyboardInterrupt, as Ctrl-C does) or
``error`` (raise :class:`~nas_theseus.errors.UserError`, as a failure of this process alone would).
Points: ``stage_step`` (every alignment step), ``before_replace`` (a checkpoint fully written to its temp file,
just before ``os.replace``). Unset, a hook costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_counts: Counter = Counter()


def armed(point: str):
    """``hit(point)`` as a function when ``NAS_THESEUS_TEST_HOOK`` names ``point`` now, else None: a loop that
    reads it once calls nothing per step."""
    spec = os.environ.get("NAS_THESEUS_TEST_HOOK")
    if not spec or spec.partition(":")[0] != point:
        return None
    return lambda: hit(point)


def hit(point: str) -> None:
    spec = os.environ.get("NAS_THESEUS_TEST_HOOK")
    if not spec:
        return
    want, _, rest = spec.partition(":")
    if want != point:
        return
    action, _, rest = rest.partition(":")
    nth, _, rank = rest.partition(":")
    if rank and os.environ.get("RANK", "0") != rank:
        return
    _counts[point] += 1
    if _counts[point] != int(nth or 1):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "interrupt":
        raise KeyboardInterrupt(f"test hook at {point} #{_counts[point]}")
    elif action == "error":
        from ..errors import UserError

        raise UserError(f"test hook at {point} #{_counts[point]}")


def reset() -> None:
    _counts.clear()
