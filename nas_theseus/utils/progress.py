"""Progress bars (tqdm on stderr) that can be switched off for tests and non-interactive runs."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def progress_enabled(requested: bool = True) -> bool:
    """False when asked for, or when ``NAS_THESEUS_PROGRESS=0`` is set."""
    return requested and os.environ.get("NAS_THESEUS_PROGRESS", "1") != "0"


def progress_bar(*, total: int, desc: str, unit: str = "it", enabled: bool = True, leave: bool = False):
    return tqdm(total=total, desc=desc, unit=unit, disable=not progress_enabled(enabled), leave=leave,
                file=sys.stderr, dynamic_ncols=True)
