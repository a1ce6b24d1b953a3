"""Progress bars (tqdm on stderr) that can be switched off for tests and non-interactive runs.

On a terminal a bar redraws every 0.1 s; when stderr is a file or a pipe (a log, CI, ``nohup``) each redraw is
a new line of the log, so bars then write at most every 30 s (and once when they close).
"""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def progress_enabled(requested: bool = True) -> bool:
    """False when asked for, or when ``NAS_THESEUS_PROGRESS=0`` is set."""
    return requested and os.environ.get("NAS_THESEUS_PROGRESS", "1") != "0"


LOG_INTERVAL_S = 30.0


class _Bar(tqdm):
    """tqdm whose ``set_postfix`` redraws at once only on a terminal (tqdm's default redraws on every call,
    which in a log is one more line per epoch or step whatever ``mininterval`` says)."""

    def __init__(self, *args, terminal: bool, **kwargs):
        self._terminal = terminal
        super().__init__(*args, **kwargs)

    def set_postfix(self, ordered_dict=None, refresh=None, **kwargs):
        super().set_postfix(ordered_dict, refresh=self._terminal if refresh is None else refresh, **kwargs)


def progress_bar(*, total: int, desc: str, unit: str = "it", enabled: bool = True, leave: bool = False):
    """A tqdm bar on stderr; in a log (stderr not a terminal) it is sparse and its final state stays."""
    terminal = sys.stderr.isatty() or "ipykernel" in sys.modules  # a notebook draws a widget
    return _Bar(total=total, desc=desc, unit=unit, disable=not progress_enabled(enabled),
                leave=leave or not terminal, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.1 if terminal else LOG_INTERVAL_S, terminal=terminal)
