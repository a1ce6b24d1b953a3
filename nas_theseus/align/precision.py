"""Similarity losses in full float32 on a GPU, whatever the process's precision settings.

Keeping the guide's accuracy needs 1 − CKA below about 0.006 (docs/method.md), and TF32 matmuls (a 10-bit mantissa)
or a bf16 autocast blur the Gram matrices in exactly that regime (the unbiased CKA, a difference of large terms,
most). So on CUDA a loss's forward **and** backward run with TF32 off and autocast disabled
(:class:`_FullFloat32`): the similarity is computed on its own small autograd graph, and the gradient of its
input is handed back to the network, whose own forward and backward keep the precision they were asked for.
On the CPU there is no TF32: a loss there runs outside any autocast, in float32 forward and so backward.
The unbiased CKA computes in float64 on every device (:func:`~nas_theseus.align.cka.unbiased_linear_cka`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch


@contextlib.contextmanager
def tf32_allowed(allow: bool):
    """TF32 matmuls and convolutions on CUDA allowed (or not) inside the block; the previous settings come back
    after it, so a conversion leaves the process as it found it."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


def autocast_off(device_type: str):
    """Autocast disabled on ``device_type`` inside the block; a no-op where a device has no autocast (``meta``,
    which the device tests run on)."""
    if not torch.amp.is_autocast_available(device_type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, enabled=False)


@contextlib.contextmanager
def full_float32(device_type: str = "cuda"):
    """No TF32 and no autocast inside the block (settings restored after)."""
    with tf32_allowed(False), autocast_off(device_type):
        yield


class _FullFloat32(torch.autograd.Function):
    """``fn(h, a)`` computed and differentiated in full float32; the ``params`` that ``fn`` reads get their
    gradients too. The forward keeps its small graph for the backward (nothing is computed twice)."""

    @staticmethod
    def forward(ctx, fn, h, a, *params):
        with torch.enable_grad(), full_float32(h.device.type):
            leaf = h.detach().float().requires_grad_(h.requires_grad)
            out = fn(leaf, a.float())
        ctx.leaf, ctx.out, ctx.params = leaf, out, params
        ctx.device_type, ctx.h_dtype = h.device.type, h.dtype
        return out.detach()

    @staticmethod
    def backward(ctx, grad):
        inputs = [ctx.leaf, *ctx.params]
        wanted = [t for t in inputs if t.requires_grad]
        grads = iter(())
        if wanted and ctx.out.requires_grad:
            with full_float32(ctx.device_type):
                grads = iter(torch.autograd.grad(ctx.out, wanted, grad, allow_unused=True))
        found = [next(grads, None) if t.requires_grad else None for t in inputs]
        h_grad = found[0].to(ctx.h_dtype) if found[0] is not None else None
        ctx.leaf = ctx.out = ctx.params = None
        return (None, h_grad, None, *found[1:])


def in_float32(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], h: torch.Tensor,
               a: torch.Tensor) -> torch.Tensor:
    """``fn(h, a)`` in float32 off CUDA (no TF32 there, and a float32 forward has a float32 backward), outside
    an autocast where one is on."""
    t = h.device.type
    if torch.amp.is_autocast_available(t) and torch.is_autocast_enabled(t):
        with autocast_off(t):
            return fn(h.float(), a.float())
    return fn(h.float(), a.float())


def in_full_float32(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], h: torch.Tensor, a: torch.Tensor,
                    params: list[torch.nn.Parameter]) -> torch.Tensor:
    """``fn(h, a)`` in full float32 on CUDA (see the module docstring), as :func:`in_float32` elsewhere;
    ``params``: the parameters ``fn`` reads (they are trained through it)."""
    if h.device.type != "cuda":
        return in_float32(fn, h, a)
    if not torch.is_grad_enabled():  # an evaluation: no backward to protect
        with full_float32(h.device.type):
            return fn(h.float(), a.float())
    return _FullFloat32.apply(fn, h, a, *params)
