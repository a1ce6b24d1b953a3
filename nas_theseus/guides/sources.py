"""Guide sources by name, the same in study files and the Python API: ``builtin:<name>``, ``timm:<model>``,
``torch:<module>:<function>``, ``hf:gpt2`` / ``hf:<local directory>`` (GPT-2-family language models)."""

from __future__ import annotations

from ..data import TaskData
from ..errors import UserError, did_you_mean
from ..utils.registry import Registry
from .builtin import BUILTIN_GUIDES, builtin_guide
from .external import rebuild_external, timm_guide, torch_guide
from .guide import Guide
from .hf import hf_guide, rebuild_hf

GUIDE_SOURCES: Registry = Registry("guide source", {"builtin": builtin_guide, "timm": timm_guide,
                                                    "torch": torch_guide, "hf": hf_guide})


def rebuild_guide_module(source: dict, folder=None):
    """The guide's module with fresh weights, from its ``source`` description (for rebuilding exports; a
    guide's code bundled in the export ``folder`` is used from there)."""
    if source.get("kind") == "builtin" and source.get("name") in BUILTIN_GUIDES:
        return BUILTIN_GUIDES[source["name"]].factory(**source.get("arch", {}))
    module = rebuild_hf(source) if source.get("kind") == "hf" else rebuild_external(source, folder)
    if module is None:
        raise UserError(f"cannot rebuild a guide of source {source} without its code: export a network whose "
                        f"kept guide parts come from a named guide source")
    return module


def load_guide(source: str, data: TaskData, **options) -> Guide:
    """Load a guide by source string, e.g. ``load_guide("builtin:mnist1d_cnn", data, weights="random")`` or
    ``load_guide("timm:resnet18", data, img_size=32)``; options go to the source (see its docs)."""
    prefix, sep, name = source.partition(":")
    if not sep or prefix not in GUIDE_SOURCES:
        valid = ", ".join(f"{p}:" for p in sorted(GUIDE_SOURCES))
        hint = did_you_mean(prefix, GUIDE_SOURCES) if sep else did_you_mean(source, BUILTIN_GUIDES)
        raise UserError(f"unknown guide source {source!r}{hint}; valid prefixes: {valid} "
                        f"(built-in guides: {', '.join(sorted(BUILTIN_GUIDES))})")
    if prefix == "builtin" and any(options.get(k) is not None for k in ("parts", "stem", "head")):
        raise UserError("built-in guides have fixed parts: remove guide.parts / stem / head")
    if prefix == "builtin":
        options = {k: v for k, v in options.items() if k not in ("parts", "stem", "head")}
    return GUIDE_SOURCES[prefix](name, data, **options)
