"""Guide sources by name: ``builtin:<name>`` now; ``timm:``, ``hf:`` and ``torch:`` register here too."""

from __future__ import annotations

from collections.abc import Callable

from ..data import TaskData
from ..errors import UserError, did_you_mean
from .builtin import BUILTIN_GUIDES, builtin_guide
from .guide import Guide

GUIDE_SOURCES: dict[str, Callable[..., Guide]] = {"builtin": builtin_guide}


def rebuild_guide_module(source: dict):
    """The guide's module with fresh weights, from its ``source`` description (for rebuilding exports)."""
    from ..errors import UserError

    if source.get("kind") == "builtin" and source.get("name") in BUILTIN_GUIDES:
        return BUILTIN_GUIDES[source["name"]].factory(**source.get("arch", {}))
    raise UserError(f"cannot rebuild a guide of source {source} without its code: export a network whose kept "
                    f"guide parts come from a named guide source")


def load_guide(source: str, data: TaskData, **options) -> Guide:
    """Load a guide by source string, e.g. ``load_guide("builtin:mnist1d_cnn", data, weights="random")``."""
    prefix, sep, name = source.partition(":")
    if not sep or prefix not in GUIDE_SOURCES:
        valid = ", ".join(f"{p}:" for p in sorted(GUIDE_SOURCES))
        hint = did_you_mean(prefix, GUIDE_SOURCES) if sep else did_you_mean(source, BUILTIN_GUIDES)
        raise UserError(f"unknown guide source {source!r}{hint}; valid prefixes: {valid} "
                        f"(built-in guides: {', '.join(sorted(BUILTIN_GUIDES))})")
    return GUIDE_SOURCES[prefix](name, data, **options)
