"""Bridges join a module's output to a reader that expects another shape or basis.

Two kinds, chosen by name (``make_bridge``):

* ``lowrank`` — flatten -> Linear(p, r, no bias) -> Linear(r, q) -> reshape (a single Linear when ``rank`` is
  None or not smaller than p and q). :meth:`fit` sets it in closed form: ridge regression, then the best
  rank-r solution (reduced-rank regression: project the fitted values on their top r right singular vectors).
* ``stitch`` — the model-stitching layer of Bansal et al. (2021): BatchNorm -> 1x1 conv -> BatchNorm when both
  sides are (C, *S) with the same spatial size S, else BatchNorm -> Linear -> BatchNorm on flattened features.
  :meth:`fit` standardises the input with the first BatchNorm's statistics, solves the 1x1 conv by ridge, and
  sets the second BatchNorm so that it passes the fitted output through unchanged in train and eval mode.

Token-wise bridges (``tokenwise=True``, for (T, D) sequences of a language model): the same bridge acts on the
last axis, one position at a time, (T, D) -> (T, D'), fit on the (N·T, D) rows. Flattening across time would
let position t read later positions; a token-wise bridge never does. Its stitch BatchNorms always normalise
with the statistics set by :meth:`fit` (never a batch's own, which would mix positions), so the bridge is
causal in training as well as in inference.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from ..utils.registry import Registry
from .layers import Reshape, numel

Shape = tuple[int, ...]


def ridge_solve(x: torch.Tensor, y: torch.Tensor, ridge: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """W (p, q), b (q,) minimising ‖x W + b − y‖² + λ‖W‖², λ = ridge · trace(XᵀX)/p, in float64.

    Uses the dual form (n x n) when there are more features than rows.
    """
    x64, y64 = x.double().flatten(1), y.double().flatten(1)
    xm, ym = x64.mean(0), y64.mean(0)
    xc, yc = x64 - xm, y64 - ym
    n, p = xc.shape
    scale = (xc.pow(2).sum() / p).clamp_min(1e-12)
    lam = ridge * scale
    if p <= n:
        w = torch.linalg.solve(xc.T @ xc + lam * torch.eye(p, dtype=xc.dtype, device=xc.device), xc.T @ yc)
    else:
        w = xc.T @ torch.linalg.solve(xc @ xc.T + lam * torch.eye(n, dtype=xc.dtype, device=xc.device), yc)
    b = ym - xm @ w
    return w, b


class LowRankBridge(nn.Module):
    """Linear map between any two shapes, optionally of low rank; see the module docstring."""

    def __init__(self, in_shape: Shape, out_shape: Shape, rank: int | None = None):
        super().__init__()
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        p, q = numel(in_shape), numel(out_shape)
        self.rank = rank if rank is not None and rank < min(p, q) else None
        if self.rank is None:
            self.proj = nn.Sequential(nn.Linear(p, q))
        else:
            self.proj = nn.Sequential(nn.Linear(p, self.rank, bias=False), nn.Linear(self.rank, q))
        self.reshape = Reshape(self.out_shape)

    def forward(self, x):
        return self.reshape(self.proj(x.flatten(1)))

    @torch.no_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor, ridge: float = 1e-3) -> None:
        w, b = ridge_solve(x, y, ridge)
        if self.rank is None:
            self.proj[0].weight.copy_(w.T)
            self.proj[0].bias.copy_(b)
            return
        fitted = (x.double().flatten(1) - x.double().flatten(1).mean(0)) @ w
        _, _, vh = torch.linalg.svd(fitted, full_matrices=False)
        v = vh[: self.rank].T  # (q, r)
        self.proj[0].weight.copy_((w @ v).T)
        self.proj[1].weight.copy_(v)
        self.proj[1].bias.copy_(b)


class StitchBridge(nn.Module):
    """BatchNorm -> 1x1 conv (or Linear) -> BatchNorm; see the module docstring."""

    def __init__(self, in_shape: Shape, out_shape: Shape):
        super().__init__()
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        spatial = len(in_shape) in (2, 3) and len(out_shape) == len(in_shape) and in_shape[1:] == out_shape[1:]
        self.conv = spatial
        if spatial:
            dims = len(in_shape) - 1
            bn = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
            conv = nn.Conv1d if dims == 1 else nn.Conv2d
            self.bn_in, self.map, self.bn_out = bn(in_shape[0]), conv(in_shape[0], out_shape[0], 1), bn(out_shape[0])
        else:
            p, q = numel(in_shape), numel(out_shape)
            self.bn_in, self.map, self.bn_out = nn.BatchNorm1d(p), nn.Linear(p, q), nn.BatchNorm1d(q)
        self.reshape = Reshape(self.out_shape)

    def forward(self, x):
        if self.conv:
            return self.bn_out(self.map(self.bn_in(x)))
        return self.reshape(self.bn_out(self.map(self.bn_in(x.flatten(1)))))

    def _rows(self, t: torch.Tensor, channels: int) -> torch.Tensor:
        """(N, C, *S) -> (N·S, C) for the 1x1 conv; (N, ...) -> (N, p) for the Linear."""
        if self.conv:
            return t.movedim(1, -1).reshape(-1, channels)
        return t.flatten(1)

    @torch.no_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor, ridge: float = 1e-3) -> None:
        xr = self._rows(x.double(), self.bn_in.num_features)
        yr = self._rows(y.double(), self.bn_out.num_features)
        mean, var = xr.mean(0), xr.var(0, unbiased=False)
        for bn, m, v in ((self.bn_in, mean, var),):
            bn.reset_parameters()
            bn.running_mean.copy_(m)
            bn.running_var.copy_(v)
        xs = (xr - mean) / torch.sqrt(var + self.bn_in.eps)
        w, b = ridge_solve(xs, yr, ridge)
        if self.conv:
            self.map.weight.copy_(w.T.reshape(self.map.weight.shape))
        else:
            self.map.weight.copy_(w.T)
        self.map.bias.copy_(b)
        z = xs @ w + b
        zm, zv = z.mean(0), z.var(0, unbiased=False)
        self.bn_out.running_mean.copy_(zm)
        self.bn_out.running_var.copy_(zv)
        self.bn_out.weight.copy_(torch.sqrt(zv + self.bn_out.eps))
        self.bn_out.bias.copy_(zm)


class TokenwiseBridge(nn.Module):
    """A bridge applied to every position of (T, D) sequences alone: (B, T, D) -> (B, T, D'); see the docstring."""

    tokenwise = True  # per position: incremental decoding runs it on one token at a time

    def __init__(self, kind: str, in_shape: Shape, out_shape: Shape, rank: int | None = None):
        super().__init__()
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        inner = (in_shape[-1],), (out_shape[-1],)
        self.inner = BRIDGES.lookup(kind)(*inner, rank)
        self.train()

    def forward(self, x):
        return self.inner(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], self.out_shape[-1])

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.inner.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.eval()  # fixed statistics: batch statistics would mix positions
        return self

    @torch.no_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor, ridge: float = 1e-3) -> None:
        self.inner.fit(x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]), ridge)


# name -> a factory (in_shape, out_shape, rank) -> the bridge
BRIDGES: Registry = Registry("bridge", {
    "lowrank": lambda in_shape, out_shape, rank: LowRankBridge(in_shape, out_shape, rank),
    "stitch": lambda in_shape, out_shape, rank: StitchBridge(in_shape, out_shape),
})


def make_bridge(kind: str, in_shape: Shape, out_shape: Shape, *, rank: int | None = None,
                tokenwise: bool = False) -> nn.Module:
    """A bridge from per-sample ``in_shape`` to ``out_shape``; both must be non-empty shapes.

    ``tokenwise``: both shapes are (T, D) sequences of equal T and the bridge maps each position alone.
    """
    factory = BRIDGES.lookup(kind)
    if not in_shape or not out_shape or numel(in_shape) == 0 or numel(out_shape) == 0:
        raise UserError(f"no bridge can join shape {tuple(in_shape)} to {tuple(out_shape)}")
    if tokenwise:
        if len(in_shape) != 2 or len(out_shape) != 2 or in_shape[0] != out_shape[0]:
            raise UserError(f"a token-wise bridge joins (T, D) sequences of equal length, not {tuple(in_shape)} "
                            f"to {tuple(out_shape)}")
        return TokenwiseBridge(kind, in_shape, out_shape, rank)
    return factory(in_shape, out_shape, rank)
