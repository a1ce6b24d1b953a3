"""Guides: frozen networks cut into parts, and where they come from."""

from .builtin import BUILTIN_GUIDES, MNIST1DCNN, DigitsCNN, builtin_guide, guide_metrics
from .guide import Guide, Part
from .sources import load_guide

__all__ = ["BUILTIN_GUIDES", "DigitsCNN", "Guide", "MNIST1DCNN", "Part", "builtin_guide", "guide_metrics",
           "load_guide"]
