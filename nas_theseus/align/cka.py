"""Linear CKA (Kornblith et al. 2019), biased and unbiased (HSIC₁, Song et al. 2012; Nguyen et al. 2021).

For per-sample features X ∈ R^{n×p}, Y ∈ R^{n×q} (any per-sample shape is flattened) with centred columns,

    CKA(X, Y) = ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) = tr(K L) / sqrt(tr(K K) tr(L L)),  K = XXᵀ, L = YYᵀ.

It is invariant to orthogonal transforms and isotropic scaling of either side, and CKA(X, X) = 1. The biased
estimate is inflated when features outnumber samples; the unbiased one replaces each HSIC by

    HSIC₁(K, L) = [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1 / ((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3)),  K̃ = K − diag(K),

which can be negative on small batches: the ratio is clamped to [−1, 1], a zero denominator gives 0, and
batches of fewer than 4 rows fall back to the biased estimate (never a crash or a NaN).

With more rows than features (token rows of a language model: n = batch x positions) the biased estimate is
computed in feature space, ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) on centred columns: the same value, at a cost of
n(p + q)² instead of n²(p + q) and without an n x n matrix.
"""

from __future__ import annotations

import torch

EPS = 1e-12


def _gram(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1)
    x = x - x.mean(0, keepdim=True)
    return x @ x.T


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Biased linear CKA between two batches of features (same number of rows)."""
    x, y = x.flatten(1), y.flatten(1)
    if x.shape[0] > x.shape[1] + y.shape[1]:
        x, y = x - x.mean(0, keepdim=True), y - y.mean(0, keepdim=True)
        cross = (y.T @ x).pow(2).sum()
        denom = torch.sqrt(((x.T @ x).pow(2).sum() * (y.T @ y).pow(2).sum()).clamp_min(EPS))
        return cross / denom
    k, l = _gram(x), _gram(y)
    hsic_kl = (k * l).sum()
    denom = torch.sqrt(((k * k).sum() * (l * l).sum()).clamp_min(EPS))  # clamp first: no inf gradient at 0
    return hsic_kl / denom


class FixedSide:
    """One side ``y`` of :func:`linear_cka` fixed across many calls (the guide's activations on the held-out
    rows, scored at every evaluation of a stage): its centred Gram matrix and that matrix's squared norm are
    computed once. :meth:`cka` gives exactly what ``linear_cka(x, y)`` gives (the same operations on the same
    values), computing only x's side."""

    def __init__(self, y: torch.Tensor):
        self.y = y.flatten(1)
        self._l: tuple[torch.Tensor, torch.Tensor] | None = None

    def cka(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if x.shape[0] > x.shape[1] + self.y.shape[1]:  # the feature-space form: nothing of y's to reuse
            return linear_cka(x, self.y)
        if self._l is None:
            l = _gram(self.y)
            self._l = l, (l * l).sum()
        l, ll = self._l
        k = _gram(x)
        return (k * l).sum() / torch.sqrt(((k * k).sum() * ll).clamp_min(EPS))


def _hsic1(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    n = k.shape[0]
    k = k - torch.diag(torch.diagonal(k))
    l = l - torch.diag(torch.diagonal(l))
    ones_kl = k.sum() * l.sum() / ((n - 1) * (n - 2))
    cross = 2.0 / (n - 2) * (k.sum(0) @ l.sum(1))
    return ((k * l).sum() + ones_kl - cross) / (n * (n - 3))


def unbiased_linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA from unbiased HSIC₁ estimates, clamped to [−1, 1]; see the module docstring. Computed in
    float64 (returned in x's dtype): HSIC₁ is a difference of large terms, and in float32 1 − CKA near 1 is
    mostly rounding (on a ResNet-18's activations, 1,024 rows, 1 − CKA of 2.7e-4 read as 0, and 8.6e-4 as
    1.5e-3: ``benchmarks/results/cka_precision.md``)."""
    return unbiased_linear_cka_in(x.double(), y.double()).to(x.dtype)


def unbiased_linear_cka_in(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """:func:`unbiased_linear_cka` in the inputs' own precision (for measuring what a precision costs)."""
    if x.shape[0] < 4:
        return linear_cka(x, y).clamp(-1.0, 1.0)  # rank-1 grams (n = 2) give 1 + rounding
    x, y = x.flatten(1), y.flatten(1)
    k, l = x @ x.T, y @ y.T  # HSIC₁ needs no centring
    denom = _hsic1(k, k) * _hsic1(l, l)
    value = _hsic1(k, l) / torch.sqrt(denom.clamp_min(EPS))
    value = torch.where(denom > EPS, value, torch.zeros_like(value))
    return torch.nan_to_num(value, nan=0.0).clamp(-1.0, 1.0)
