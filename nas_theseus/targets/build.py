"""From a spec to its module: the block's ``Options`` (:func:`options_of`), whether it keeps positions causal
(:func:`is_causal`), the module itself (:func:`create_target`, as timm's ``create_model``) and the shape it
outputs (:func:`probe_output_shape`). What a block must provide is in :mod:`nas_theseus.targets.registry`.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import BLOCKS
from .spec import BlockSpec

Shape = tuple[int, ...]


def options_of(spec: BlockSpec):
    """The block's Options instance for a spec (defaults filled in)."""
    cls = BLOCKS[spec.kind]
    return cls.Options(**spec.opts)


def is_causal(spec: BlockSpec) -> bool:
    """Whether the block built from ``spec`` keeps positions causal (its ``causal`` or ``causal_when``: see
    :mod:`nas_theseus.targets.registry`)."""
    cls = BLOCKS[spec.kind]
    when = getattr(cls, "causal_when", None)
    return bool(when(options_of(spec))) if when is not None else getattr(cls, "causal", False) is True


def create_target(spec: BlockSpec, in_shape: Shape, guide_out_shape: Shape) -> nn.Module:
    """Build the module for ``spec`` reading per-sample ``in_shape``, in place of a guide part that outputs
    ``guide_out_shape`` (see :mod:`nas_theseus.targets.registry`)."""
    cls = BLOCKS[spec.kind]
    return cls.build(options_of(spec), tuple(in_shape), tuple(guide_out_shape))


@torch.no_grad()
def probe_output_shape(module: nn.Module, in_shape: Shape, dtype: torch.dtype = torch.float32) -> Shape:
    """Per-sample output shape of ``module`` from one forward pass on a batch of 2 (in eval mode)."""
    was = module.training
    module.eval()
    out = module(torch.zeros((2, *in_shape), dtype=dtype))
    module.train(was)
    return tuple(out.shape[1:])
