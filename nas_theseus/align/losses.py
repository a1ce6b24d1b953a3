"""Alignment losses as modules: ``loss(h, a)`` is 1 − similarity between target output h and guide activation a.

A loss is built per part by :func:`make_alignment` with the two per-sample shapes, so a loss may own trainable
parameters (the MSE baseline trains a bridge from h's shape to a's). ``score(h, a)`` is the similarity itself.

**Sequences** (``tokens=True``, a language-model guide): (B, T, D) activations are compared over the B·T token
rows, each position of each sequence one row of D features (:func:`token_rows`). We take rows rather than
per-position similarity averaged over t because (a) a per-position score compares only B rows at each t (32 in
a typical batch: a noisy CKA and a tiny neighbourhood for D-MNN), while rows use every token of the batch;
(b) it matches what a token-wise target computes, one representation per token; (c) flattening (T·D) per
sample instead would reward a target for matching the guide at future positions, which a causal target cannot
see. CKA is exact on all rows (feature-space form); the n x n estimates (unbiased CKA, D-MNN) take a random
subset of at most ``max_rows`` rows per batch.
"""

from __future__ import annotations

import torch
from torch import nn

from ..targets.bridges import LowRankBridge
from ..utils.registry import Registry
from .cka import linear_cka, unbiased_linear_cka
from .mnn import dmnn
from .precision import in_float32, in_full_float32


def token_rows(h: torch.Tensor, a: torch.Tensor, max_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D) and (B, T, D') -> (B·T, D) and (B·T, D') rows; a random common subset when over ``max_rows``."""
    h, a = h.reshape(-1, h.shape[-1]), a.reshape(-1, a.shape[-1])
    if max_rows is not None and len(h) > max_rows:
        idx = torch.randperm(len(h), device=h.device)[:max_rows]
        h, a = h[idx], a[idx]
    return h, a


class AlignmentLoss(nn.Module):
    name = "?"
    tokens = False  # compare token rows (see the module docstring); set by make_alignment
    max_rows: int | None = None  # row subset for n x n estimates on token rows

    def score(self, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """1 − ``score(h, a)``, in full float32 on a GPU whatever the process's TF32 and autocast settings
        (:mod:`nas_theseus.align.precision`)."""
        if h.device.type != "cuda":
            return in_float32(self._loss, h, a)
        return in_full_float32(self._loss, h, a, [p for p in self.parameters() if p.requires_grad])

    def _loss(self, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        if self.tokens:
            h, a = token_rows(h, a, self.max_rows)
        return 1.0 - self.score(h, a)


class CKALoss(AlignmentLoss):
    """1 − biased linear CKA (the paper's main loss; use batches of ~256)."""

    name = "cka"

    def score(self, h, a):
        return linear_cka(h, a)


class UnbiasedCKALoss(AlignmentLoss):
    """1 − linear CKA from unbiased HSIC₁ (less inflated on wide features; clamped, never NaN)."""

    name = "cka_unbiased"
    max_rows = 2048

    def score(self, h, a):
        return unbiased_linear_cka(h, a)


class DMNNLoss(AlignmentLoss):
    """1 − D-MNN with ``k`` guide neighbours and temperature ``tau``."""

    name = "dmnn"
    max_rows = 2048

    def __init__(self, k: int = 10, tau: float = 0.05):
        super().__init__()
        self.k, self.tau = k, tau

    def score(self, h, a):
        return dmnn(h, a, k=self.k, tau=self.tau)


class MSELoss(AlignmentLoss):
    """Baseline: ‖bridge(h) − a‖² / (n · v) through a trainable linear bridge; score = 1 − that (an R²).

    v is the larger of the batch's per-row target variance ‖a − ā‖² / n and its running mean over the batches
    seen in training: a batch in which the guide activation is (nearly) constant, as where most of a part's
    ReLUs are dead, would otherwise divide by ~0 and throw the bridge far off.
    """

    name = "mse"

    def __init__(self, h_shape, a_shape, rank: int | None = None, tokens: bool = False):
        super().__init__()
        self.bridge = (LowRankBridge(h_shape[-1:], a_shape[-1:], rank) if tokens  # applied to token rows
                       else LowRankBridge(h_shape, a_shape, rank))
        self.register_buffer("running_var", torch.zeros(()), persistent=False)
        self.register_buffer("seen", torch.zeros(()), persistent=False)

    def score(self, h, a):
        a = a.flatten(1)
        var = (a - a.mean(0)).pow(2).sum() / len(a)
        if self.training:
            with torch.no_grad():
                self.seen += 1
                self.running_var += (var - self.running_var) / self.seen
        err = (self.bridge(h).flatten(1) - a).pow(2).sum()
        return 1.0 - err / (len(a) * torch.maximum(var, self.running_var)).clamp_min(1e-12)


# name -> a factory (h_shape, a_shape, options) -> the loss; options: dmnn_k, dmnn_tau, bridge_rank, tokens
ALIGNMENTS: Registry = Registry("alignment loss", {
    "cka": lambda h_shape, a_shape, o: CKALoss(),
    "cka_unbiased": lambda h_shape, a_shape, o: UnbiasedCKALoss(),
    "dmnn": lambda h_shape, a_shape, o: DMNNLoss(o["dmnn_k"], o["dmnn_tau"]),
    "mse": lambda h_shape, a_shape, o: MSELoss(h_shape, a_shape, o["bridge_rank"], o["tokens"]),
})


def make_alignment(name: str, h_shape, a_shape, *, dmnn_k: int = 10, dmnn_tau: float = 0.05,
                   bridge_rank: int | None = None, tokens: bool = False) -> AlignmentLoss:
    """The loss ``name`` between per-sample shapes ``h_shape`` and ``a_shape``; ``tokens``: compare token rows."""
    loss = ALIGNMENTS.lookup(name)(h_shape, a_shape, {"dmnn_k": dmnn_k, "dmnn_tau": dmnn_tau,
                                                      "bridge_rank": bridge_rank, "tokens": tokens})
    loss.tokens = tokens
    return loss
