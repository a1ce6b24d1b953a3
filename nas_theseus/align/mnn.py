"""Mutual k-nearest neighbours (Huh, Cheung, Wang, Isola 2024) and D-MNN, our differentiable relaxation.

Rows are flattened and L2-normalised, similarity is the cosine s_ij, and a point is never its own neighbour.

Hard score:  MNN_k(Z, A) = (1/n) Σ_i |N_k^Z(i) ∩ N_k^A(i)| / k.

D-MNN keeps the guide's hard k-NN mask and softens the target's neighbourhood with a temperature-τ softmax:

    M_ij = 1[j ∈ N_k^A(i)],   P_ij = exp(s^Z_ij / τ) / Σ_{l≠i} exp(s^Z_il / τ)   (P_ii = 0),
    D-MNN(Z, A) = (1/n) Σ_i Σ_j M_ij · P_ij   ∈ [0, 1].

Σ_j M_ij P_ij is the probability mass the target's soft neighbourhood of i puts on the guide's k neighbours of i;
with the hard k-NN indicator in place of k·P_ij it is exactly MNN_k. The loss is 1 − D-MNN. It is invariant to
rotation and scale of either side (cosine similarities), and D-MNN(X, X) → 1 as τ → 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _cosine(x: torch.Tensor) -> torch.Tensor:
    x = F.normalize(x.flatten(1), dim=1)
    s = x @ x.T
    return s.masked_fill(torch.eye(len(x), dtype=torch.bool, device=x.device), float("-inf"))


def knn_mask(x: torch.Tensor, k: int) -> torch.Tensor:
    """(n, n) float mask of each row's k nearest neighbours by cosine similarity, self excluded."""
    s = _cosine(x)
    k = max(1, min(k, len(x) - 1))
    idx = s.topk(k, dim=1).indices
    return torch.zeros_like(s).scatter_(1, idx, 1.0)


def mutual_knn(z: torch.Tensor, a: torch.Tensor, k: int = 10) -> torch.Tensor:
    """Hard mutual k-NN overlap in [0, 1] (not differentiable)."""
    k_eff = max(1, min(k, len(z) - 1))
    return (knn_mask(z, k_eff) * knn_mask(a, k_eff)).sum(1).mean() / k_eff


def dmnn(z: torch.Tensor, a: torch.Tensor, k: int = 10, tau: float = 0.05) -> torch.Tensor:
    """D-MNN score of target features ``z`` against guide features ``a``; see the module docstring."""
    with torch.no_grad():
        mask = knn_mask(a.detach(), k)
    p = torch.softmax(_cosine(z) / tau, dim=1)
    return (mask * p).sum(1).mean()
