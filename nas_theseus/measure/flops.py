"""FLOPs per sample with fvcore, under one convention: **one multiply-add = 1 FLOP** (fvcore's).

fvcore silently counts 0 for operators it has no handle for. We never report such a silent 0: an operator
with no handle that is not on :data:`ZERO_COST_OPS` (element-wise and shape operators, which fvcore's
convention counts as free) raises :class:`UncountedOpsError` with the operator names when ``strict`` (a study
fails that trial) or warns otherwise (``convert`` alone). Handles for more operators register in
:data:`EXTRA_HANDLES`; it starts with :data:`nas_theseus.measure.flop_handles.FLOP_HANDLES` (recurrent layers,
scaled-dot-product and native multi-head attention, ``baddbmm``, and replacements for fvcore's ``matmul``
and ``einsum``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import torch
from torch import nn

from ..utils.devices import cpu_copy
from .flop_handles import FLOP_HANDLES

CONVENTION = "FLOPs = multiply-adds (fvcore convention: one multiply-add counts as 1 FLOP), per sample"
CONVENTION_PER_TOKEN = CONVENTION.replace("per sample", "per generated token in incremental decoding (language "
                                                          "models; full-sequence figures recorded beside)")

# Element-wise and shape operators: cost no multiply-adds under the convention above.
ZERO_COST_OPS = frozenset({
    "aten::gelu", "aten::silu", "aten::tanh", "aten::sigmoid", "aten::relu", "aten::relu_", "aten::elu",
    "aten::leaky_relu", "aten::hardtanh", "aten::dropout", "aten::feature_dropout", "aten::alpha_dropout",
    "aten::add", "aten::add_", "aten::sub", "aten::mul", "aten::mul_", "aten::div", "aten::neg", "aten::pow",
    "aten::sqrt", "aten::rsqrt", "aten::exp", "aten::log", "aten::clamp", "aten::softmax", "aten::log_softmax",
    "aten::mean", "aten::sum", "aten::cat", "aten::stack", "aten::reshape", "aten::view", "aten::flatten",
    "aten::unflatten", "aten::unsqueeze", "aten::squeeze", "aten::permute", "aten::transpose", "aten::contiguous",
    "aten::expand", "aten::slice", "aten::select", "aten::index", "aten::embedding", "aten::ones_like",
    "aten::zeros_like", "aten::full_like", "aten::masked_fill", "aten::where", "aten::t", "aten::numpy_T",
    "aten::size", "aten::to", "aten::type_as", "aten::clone", "aten::detach", "aten::scalar_tensor",
    "aten::chunk", "aten::unsafe_chunk", "aten::split", "aten::unbind",  # views of the input
    "aten::_pack_padded_sequence", "aten::_pad_packed_sequence",  # reorder/pad rows for packed RNN input
    "aten::sigmoid_", "aten::tanh_",  # in-place activations (the RNN cells' gates)
    "aten::zeros", "aten::ones", "aten::full", "aten::new_zeros", "aten::new_ones",  # constants (e.g. RNN h0)
    "aten::triu", "aten::tril", "aten::masked_fill_",  # building and applying attention masks: selections
    "aten::max_pool1d", "aten::max_pool2d", "aten::max_pool3d",  # comparisons only, no multiply-adds
    "aten::adaptive_max_pool1d", "aten::adaptive_max_pool2d",
})

# Extra fvcore op handles (name -> handle), set on every analysis after fvcore's defaults, so an entry also
# replaces fvcore's handle for that operator.
EXTRA_HANDLES: dict[str, Callable] = dict(FLOP_HANDLES)


class UncountedOpsError(RuntimeError):
    """The model uses operators whose FLOPs nothing counts; the message lists them."""


def count_flops(model: nn.Module, sample_shape: tuple[int, ...], *, dtype: torch.dtype = torch.float32,
                strict: bool = True, example: torch.Tensor | None = None) -> int:
    """Multiply-adds of one forward pass for a single sample (see :data:`CONVENTION`), counted on the CPU (on
    a copy of a model that lives elsewhere: the count does not depend on the device).

    The sample is zeros of ``sample_shape`` and ``dtype``, or the first row of ``example`` (a real input:
    token ids for a language model, whose embedding lookups need valid integers).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's import touches deprecated torch.jit APIs
        from fvcore.nn import FlopCountAnalysis

    model = cpu_copy(model)
    was = model.training
    model.eval()
    x = (torch.zeros((1, *sample_shape), dtype=dtype) if example is None else example[:1]).cpu()
    logger = logging.getLogger("fvcore")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analysis = FlopCountAnalysis(model, x)
            analysis.set_op_handle(**EXTRA_HANDLES)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            total = int(analysis.total())
            uncounted = sorted(op for op in analysis.unsupported_ops() if op not in ZERO_COST_OPS)
    finally:
        logger.setLevel(level)
        model.train(was)
    if uncounted:
        message = (f"no FLOP count for operator(s) {', '.join(uncounted)}: add a handle to "
                   f"nas_theseus.measure.flops.EXTRA_HANDLES (or, if free, to ZERO_COST_OPS)")
        if strict:
            raise UncountedOpsError(message)
        warnings.warn(message + f"; the figure {total} leaves them out", stacklevel=2)
    return total


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of the deploy model."""
    return sum(p.numel() for p in model.parameters())
