"""Alignment losses as modules: ``loss(h, a)`` is 1 − similarity between target output h and guide activation a.

A loss is built per part by :func:`make_alignment` with the two per-sample shapes, so a loss may own trainable
parameters (the MSE baseline trains a bridge from h's shape to a's). ``score(h, a)`` is the similarity itself.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import unknown_name
from ..targets.bridges import LowRankBridge
from .cka import linear_cka, unbiased_linear_cka
from .mnn import dmnn


class AlignmentLoss(nn.Module):
    name = "?"

    def score(self, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return 1.0 - self.score(h, a)


class CKALoss(AlignmentLoss):
    """1 − biased linear CKA (the paper's main loss; use batches of ~256)."""

    name = "cka"

    def score(self, h, a):
        return linear_cka(h, a)


class UnbiasedCKALoss(AlignmentLoss):
    """1 − linear CKA from unbiased HSIC₁ (less inflated on wide features; clamped, never NaN)."""

    name = "cka_unbiased"

    def score(self, h, a):
        return unbiased_linear_cka(h, a)


class DMNNLoss(AlignmentLoss):
    """1 − D-MNN with ``k`` guide neighbours and temperature ``tau``."""

    name = "dmnn"

    def __init__(self, k: int = 10, tau: float = 0.05):
        super().__init__()
        self.k, self.tau = k, tau

    def score(self, h, a):
        return dmnn(h, a, k=self.k, tau=self.tau)


class MSELoss(AlignmentLoss):
    """Baseline: ‖bridge(h) − a‖² / ‖a − ā‖² through a trainable linear bridge; score = 1 − that (an R²)."""

    name = "mse"

    def __init__(self, h_shape, a_shape, rank: int | None = None):
        super().__init__()
        self.bridge = LowRankBridge(h_shape, a_shape, rank)

    def score(self, h, a):
        a = a.flatten(1)
        err = (self.bridge(h).flatten(1) - a).pow(2).sum()
        return 1.0 - err / (a - a.mean(0)).pow(2).sum().clamp_min(1e-12)


ALIGNMENTS = ("cka", "cka_unbiased", "dmnn", "mse")


def make_alignment(name: str, h_shape, a_shape, *, dmnn_k: int = 10, dmnn_tau: float = 0.05,
                   bridge_rank: int | None = None) -> AlignmentLoss:
    if name == "cka":
        return CKALoss()
    if name == "cka_unbiased":
        return UnbiasedCKALoss()
    if name == "dmnn":
        return DMNNLoss(dmnn_k, dmnn_tau)
    if name == "mse":
        return MSELoss(h_shape, a_shape, bridge_rank)
    raise unknown_name("alignment loss", name, ALIGNMENTS)
