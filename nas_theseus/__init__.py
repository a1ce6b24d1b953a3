"""nas_theseus: convert a guide network into another architecture part by part (Network of Theseus).

>>> from nas_theseus import load_data, load_guide, convert, Candidate, BlockSpec  # doctest: +SKIP
>>> data = load_data("mnist1d")  # doctest: +SKIP
>>> guide = load_guide("builtin:mnist1d_cnn", data)  # doctest: +SKIP
>>> result = convert(guide, Candidate((BlockSpec.of("mlp", width=256),) * 3), data)  # doctest: +SKIP
"""

import importlib
import sys
import types

from . import logging  # noqa: F401 - the nas_theseus logger's default stderr handler (see nas_theseus.logging)

# the public names and the modules that define them, imported on first use: `nas-theseus --help` (and any
# command's --help) runs without importing torch
_EXPORTS = {
    **dict.fromkeys(("Candidate", "ConversionError", "ConversionResult", "ConvertConfig", "GuideActivations",
                     "convert", "stitching_penalty", "train_distilled", "train_from_scratch"), ".convert"),
    **dict.fromkeys(("TaskData", "load_data"), ".data"),
    "UserError": ".errors",
    "load_exported": ".export",
    **dict.fromkeys(("Guide", "load_guide"), ".guides"),
    **dict.fromkeys(("BlockSpec", "create_target", "list_blocks", "register_block"), ".targets"),
    "FitConfig": ".training",
    **dict.fromkeys(("run_study", "pareto_front"), ".study.api"),
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nas_theseus' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


class _Package(types.ModuleType):
    """This package: a public name is never replaced by a subpackage of the same name when that subpackage is
    imported (``nas_theseus.convert`` stays the function; the subpackage is ``sys.modules["nas_theseus.convert"]``,
    as when these names were imported eagerly)."""

    def __setattr__(self, name: str, value) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__version__ = "0.1.0"

__all__ = ["BlockSpec", "Candidate", "ConversionError", "ConversionResult", "ConvertConfig", "FitConfig", "Guide",
           "GuideActivations", "TaskData", "UserError", "convert", "create_target", "list_blocks", "load_data",
           "load_exported", "load_guide", "pareto_front", "register_block", "run_study", "stitching_penalty",
           "train_distilled", "train_from_scratch"]
