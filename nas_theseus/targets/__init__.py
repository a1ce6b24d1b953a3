"""Target blocks (registered by name, built from JSON-able specs) and the bridges that join shapes."""

from . import blocks as _blocks  # noqa: F401  (registers the built-in blocks)
from . import sequence_blocks as _sequence_blocks  # noqa: F401  (token, recurrent and attention blocks)
from . import vision_blocks as _vision_blocks  # noqa: F401  (the bottleneck)
from .bridges import BRIDGES, LowRankBridge, StitchBridge, TokenwiseBridge, make_bridge, ridge_solve
from .build import create_target, is_causal, options_of, probe_output_shape
from .registry import BLOCKS, list_blocks, register_block
from .spec import BlockSpec

__all__ = ["BLOCKS", "BRIDGES", "BlockSpec", "LowRankBridge", "StitchBridge", "create_target", "list_blocks",
           "TokenwiseBridge", "is_causal", "make_bridge", "options_of", "probe_output_shape", "register_block",
           "ridge_solve"]
