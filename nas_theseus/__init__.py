"""nas_theseus: convert a guide network into another architecture part by part (Network of Theseus).

>>> from nas_theseus import load_data, load_guide, convert, Candidate, BlockSpec  # doctest: +SKIP
>>> data = load_data("mnist1d")  # doctest: +SKIP
>>> guide = load_guide("builtin:mnist1d_cnn", data)  # doctest: +SKIP
>>> result = convert(guide, Candidate((BlockSpec.of("mlp", width=256),) * 3), data)  # doctest: +SKIP
"""

from .convert import (
                      Candidate,
                      ConversionError,
                      ConversionResult,
                      ConvertConfig,
                      GuideActivations,
                      convert,
                      stitching_penalty,
                      train_distilled,
                      train_from_scratch,
)
from .data import TaskData, load_data
from .errors import UserError
from .export import load_exported
from .guides import Guide, load_guide
from .targets import BlockSpec, create_target, list_blocks, register_block
from .training import FitConfig

__version__ = "0.1.0"

__all__ = ["BlockSpec", "Candidate", "ConversionError", "ConversionResult", "ConvertConfig", "FitConfig", "Guide",
           "GuideActivations", "TaskData", "UserError", "convert", "create_target", "list_blocks", "load_data",
           "load_exported", "load_guide", "register_block", "stitching_penalty", "train_distilled",
           "train_from_scratch"]
