"""Sizes as people write them (``5G``, ``500M``, ``1.5T``, ``2048``) and as they read them back (``4.7 GiB``).

Binary units, as ``du -h`` and ``df -h`` count: 1K = 1024 bytes, 1M = 1024K, and so on; a trailing ``B`` or
``iB`` is allowed (``5GB``, ``5GiB``: both 5 x 1024^3 bytes), case does not matter.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence

from ..errors import UserError

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)


def parse_size(text: str | int, what: str = "size") -> int:
    """Bytes of ``text`` (``"5G"``, ``"500M"``, ``2048``); a :class:`UserError` naming ``what`` otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise UserError(f"{what} must be a size >= 0, such as 5G or 500M, got {text}")
        return text
    match = _SIZE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise UserError(f"{what} must be a size such as 5G, 500M or 2048 (bytes), got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_size(n: int) -> str:
    """``n`` bytes for a person: ``912 B``, ``3.4 MiB``, ``4.7 GiB``."""
    value, unit = float(n), 0
    while value >= 1024 and unit < 4:
        value, unit = value / 1024, unit + 1
    return f"{n} B" if unit == 0 else f"{value:.1f} {('KiB', 'MiB', 'GiB', 'TiB')[unit - 1]}"


def over_size(items: Sequence, size_of: Callable[[object], int], max_size: int, *,
              keep: Collection = ()) -> tuple[list, int]:
    """The first of ``items`` (least recently used first), less those in ``keep``, whose removal brings their
    total ``size_of`` within ``max_size``; and the total left (over ``max_size`` when ``keep`` alone is)."""
    size, over = sum(size_of(i) for i in items), []
    for i in items:
        if size <= max_size:
            break
        if i not in keep:
            over.append(i)
            size -= size_of(i)
    return over, size
