"""fvcore op handles for operators fvcore skips (or miscounts), under its convention: one multiply-add = 1 FLOP.

A handle is ``fn(inputs: list[torch._C.Value], outputs: list[torch._C.Value]) -> int``; the values come from the
``torch.jit.trace`` graph fvcore builds, so every tensor has a complete shape. What each handle counts:

* **matrix multiply-adds only.** Bias adds, scaling, masking, softmax, activations and the element-wise gate
  arithmetic of recurrent cells are free, as fvcore's own ``aten::linear``/``aten::_convolution`` handles and
  :data:`nas_theseus.measure.flops.ZERO_COST_OPS` treat them.
* **dense work.** Causal or masked attention is counted in full (an upper bound), as
  ``torch.utils.flop_counter.FlopCounterMode`` does: the math and flash kernels on CPU compute every score.

``torch.utils.flop_counter.FlopCounterMode`` counts 2 FLOPs per multiply-add, so its totals are twice these.
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod

import torch


def _shape(value: torch._C.Value) -> list[int]:
    """The complete shape of a traced tensor value."""
    if not value.isCompleteTensor():
        raise ValueError(f"no complete shape for traced value {value.debugName()} ({value.type()})")
    return list(value.type().sizes())


def _tensors(value: torch._C.Value) -> list[torch._C.Value]:
    """The tensors of a traced ``Tensor[]`` argument (a ``prim::ListConstruct``)."""
    return list(value.node().inputs())


def _matrix_macs(weights: list[torch._C.Value]) -> int:
    """Multiply-adds of one matrix-vector product with each 2-D weight: Σ rows·cols (1-D biases skipped)."""
    return sum(prod(s) for s in map(_shape, weights) if len(s) == 2)


def _rows(value: torch._C.Value) -> int:
    """Number of vectors a recurrent op consumes: the product of all but the feature (last) dimension."""
    return prod(_shape(value)[:-1])


def rnn_flop_jit(inputs: list[torch._C.Value], outputs: list[torch._C.Value]) -> int:
    """``aten::lstm``, ``aten::gru``, ``aten::rnn_tanh``, ``aten::rnn_relu`` (both overloads).

    ``params`` holds, per layer and direction, ``w_ih [G·H, in_l]``, ``w_hh [G·H, H]`` (and for an LSTM with
    ``proj_size`` P, ``w_hh [4H, P]`` and ``w_hr [P, H]``) plus biases. Each time step of each sequence multiplies
    the layer input and the hidden state by these matrices, so::

        FLOPs = N · Σ_layers Σ_directions G·H·(in_l + H)        (+ N · P·H per layer·direction with projection)

    where N = T·B (sequence length × batch; for a packed sequence, the packed length), G = 4 (LSTM), 3 (GRU),
    1 (RNN tanh/relu), in_0 = input size, in_l = directions·H for l > 0. This is ``N · Σ rows·cols`` over the
    2-D weights. Bias adds and the element-wise gate ops (sigmoid, tanh, relu, the GRU reset product, the cell
    and hidden updates) are not counted.
    """
    # input/data first; params are the last Tensor[] (input overload: (input, hx, params, ...), data overload:
    # (data, batch_sizes, hx, params, ...); hx is a Tensor[] for the LSTM, a Tensor otherwise).
    params = [v for v in inputs if v.type().kind() == "ListType"][-1]
    return _rows(inputs[0]) * _matrix_macs(_tensors(params))


def sdpa_flop_jit(inputs: list[torch._C.Value], outputs: list[torch._C.Value]) -> int:
    """``aten::scaled_dot_product_attention``: Q·Kᵀ plus attn·V.

    With query ``[..., Hq, L, E]``, key ``[..., Hkv, S, E]``, value ``[..., Hkv, S, Ev]``::

        FLOPs = B·Hq·L·S·E  +  B·Hq·L·S·Ev

    (B = product of the leading dims; grouped-query attention broadcasts key/value heads to Hq). ``is_causal``
    and ``attn_mask`` do not reduce the count (dense upper bound, as FlopCounterMode); scale, mask, softmax and
    dropout are free.
    """
    query, key, value = (_shape(v) for v in inputs[:3])
    return prod(query[:-1]) * key[-2] * (query[-1] + value[-1])


def baddbmm_flop_jit(inputs: list[torch._C.Value], outputs: list[torch._C.Value]) -> int:
    """``aten::baddbmm(self, batch1 [b, n, m], batch2 [b, m, p])``: ``FLOPs = b·n·m·p``; the add of ``self``
    and the ``beta``/``alpha`` scalings are free."""
    b, n, m = _shape(inputs[1])
    return b * n * m * _shape(inputs[2])[-1]


def matmul_flop_jit(inputs: list[torch._C.Value], outputs: list[torch._C.Value]) -> int:
    """``aten::matmul`` with any ranks, broadcast batch dims included: ``FLOPs = numel(output) · K``, K the
    contracted size (last dim of the first operand).

    Replaces fvcore's handle, which counts ``numel(first) · last(second)``: it undercounts when the second
    operand carries the batch dims (``[n, k] @ [b, k, m]``) and fails on a 1-D second operand.
    """
    return prod(_shape(outputs[0])) * _shape(inputs[0])[-1]


def native_mha_flop_jit(inputs: list[torch._C.Value], outputs: list[torch._C.Value]) -> int:
    """``aten::_native_multi_head_attention`` (``nn.MultiheadAttention``'s fast path: eval, no grad).

    query ``[B, L, E]``, key ``[B, S, E]``, value ``[B, S, E]``::

        FLOPs = (B·L + 2·B·S)·E²   in-projections of q, k, v
              + 2·B·L·S·E          Q·Kᵀ and attn·V over all heads (heads·head_dim = E)
              + B·L·E²             out-projection

    the same as the slow path's ``aten::linear``/``aten::bmm``/``aten::scaled_dot_product_attention`` counts.
    Biases, scaling, masking, softmax and head-averaging of the weights are free.
    """
    query, key, value = (_shape(v) for v in inputs[:3])
    e = query[-1]
    projections = (prod(query[:-1]) * 2 + prod(key[:-1]) + prod(value[:-1])) * e * e
    return projections + 2 * prod(query[:-1]) * key[-2] * e


def _einsum_terms(equation: str, shapes: list[list[int]]) -> tuple[list[str], str]:
    """Operand subscripts and output subscripts of an einsum, ``...`` spelled out as letters and an implicit
    output (no ``->``) made explicit (ellipsis dims, then the letters used once, sorted), as ``torch.einsum``."""
    equation = equation.replace(" ", "")
    ins, arrow, out = equation.partition("->")
    terms = ins.split(",")
    rank = max((len(s) - len(t) + 3 for t, s in zip(terms, shapes, strict=True) if "..." in t), default=0)
    spare = "".join(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in equation)
    dots = spare[:rank]
    terms = [t.replace("...", dots[rank - (len(s) - len(t) + 3):]) for t, s in zip(terms, shapes, strict=True)]
    if not arrow:
        letters = "".join(terms)
        out = dots + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in dots))
    return terms, out.replace("...", dots)


def _einsum_step_macs(left: str, right: str, out: str, size: dict[str, int]) -> int:
    """Multiply-adds of contracting two operands into ``out`` (the indices still needed).

    With C the summed indices (in both operands, not in ``out``): 0 when C is empty (an outer or element-wise
    product, free like ``aten::mul``), else ``Π size over (out ∪ C)``; indices in one operand only that are not
    kept are summed before the product (free).
    """
    summed = (set(left) & set(right)) - set(out)
    return prod(size[c] for c in set(out) | summed) if summed else 0


def einsum_flop_jit(inputs: list[torch._C.Value], outputs: list[torch._C.Value]) -> int:
    """``aten::einsum(equation, Tensor[] operands, path)``: Σ over pairwise steps of :func:`_einsum_step_macs`.

    Operands are contracted left to right, as ``torch.einsum`` does without opt_einsum (with opt_einsum a 3+
    operand einsum may run in a cheaper order; 2-operand einsums do not depend on the order); each step keeps the
    indices of the output and of the operands still to come. A single operand (transpose, diagonal, sum) is free.
    E.g. ``bhqd,bhkd->bhqk``: ``b·h·q·k·d``; ``ij,jk->i``: ``i·j``; ``bi,bj->bij``: 0 (element-wise product).

    Replaces fvcore's handle, which takes half of numpy's "optimized flop" on numpy's optimal path: half a FLOP
    per element for outer products, transposes and sums, the full product of sizes where an index of one operand
    alone can be summed first, and a path torch does not take.
    """
    shapes = [_shape(v) for v in _tensors(inputs[1])]
    terms, out = _einsum_terms(inputs[0].toIValue(), shapes)
    size: dict[str, int] = {}
    for term, shape in zip(terms, shapes, strict=True):
        for c, n in zip(term, shape, strict=True):
            size[c] = max(size.get(c, 1), n)
    total, current = 0, terms[0]
    for i, term in enumerate(terms[1:], start=2):
        keep = set(out).union(*terms[i:])
        step_out = "".join(sorted(set(current + term) & keep))
        total += _einsum_step_macs(current, term, step_out, size)
        current = step_out
    return total


FLOP_HANDLES: dict[str, Callable] = {
    "aten::lstm": rnn_flop_jit,
    "aten::gru": rnn_flop_jit,
    "aten::rnn_tanh": rnn_flop_jit,
    "aten::rnn_relu": rnn_flop_jit,
    "aten::scaled_dot_product_attention": sdpa_flop_jit,
    "aten::_native_multi_head_attention": native_mha_flop_jit,
    "aten::baddbmm": baddbmm_flop_jit,
    "aten::matmul": matmul_flop_jit,
    "aten::einsum": einsum_flop_jit,
}
"""Handles for :data:`nas_theseus.measure.flops.EXTRA_HANDLES`; ``aten::matmul`` and ``aten::einsum`` replace
fvcore's (see their docstrings), the rest are operators fvcore has no handle for."""
