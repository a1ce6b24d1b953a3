"""Stitching penalty (Bansal, Nakkiran, Barak 2021) as a diagnostic of a converted network.

At each part boundary k, the converted network's bottom (stem .. part k) feeds the guide's top (parts k+1 ..
K and head) through a stitching layer (BatchNorm -> 1x1 conv / Linear -> BatchNorm), the only thing that
trains (on the task loss; AdamW with cosine decay, initialised by least squares to the guide activation).
The penalty is guide accuracy − stitched accuracy on the test split (per-token accuracy for a language model,
whose stitching layer then acts on each position alone): near 0 means the converted network's representation at
k is as usable to the guide as the guide's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data import TaskData
from ..guides import Guide
from ..targets import make_bridge
from ..training import FitConfig, evaluate, fit_classifier
from .hybrid import DeployModel


@dataclass
class StitchReport:
    part: str
    guide_accuracy: float
    stitched_accuracy: float
    penalty: float


class _Stitched(nn.Module):
    """frozen bottom -> trainable stitch -> frozen guide top; only the stitch is registered (and trains)."""

    def __init__(self, bottom: nn.Module, stitch: nn.Module, guide: Guide, k: int):
        super().__init__()
        self.stitch = stitch
        object.__setattr__(self, "_bottom", bottom)
        object.__setattr__(self, "_top", [p.module for p in guide.parts[k + 1:]] + [guide.head])

    def forward(self, x):
        with torch.no_grad():
            h = self._bottom(x)
        h = self.stitch(h)
        for m in self._top:
            h = m(h)
        return h


def stitching_penalty(model: DeployModel, guide: Guide, data: TaskData, *,
                      fit: FitConfig = FitConfig(max_epochs=15, patience=5, lr=1e-3), seed: int = 0,
                      device: str = "cpu", progress: bool = True, probe_size: int = 1024) -> list[StitchReport]:
    """One :class:`StitchReport` per part boundary of ``model`` (a converted network of ``guide``)."""
    guide_acc = evaluate(guide.module, data.test, device=device)[0]
    model.eval()
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    probe = data.train.x[:probe_size].to(device)
    guide_acts = guide.activations(probe)
    reports = []
    try:
        for k, part in enumerate(guide.parts):
            bottom = model.prefix(k)
            with torch.no_grad():
                h = bottom(probe)
            stitch = make_bridge("stitch", tuple(h.shape[1:]), guide.shapes[k + 1], tokenwise=guide.tokens).to(device)
            stitch.fit(h, guide_acts[k + 1])
            stitched = _Stitched(bottom, stitch, guide, k)
            fit_classifier(stitched, data, fit, seed=seed, device=device, progress=progress,
                           desc=f"stitch {part.name}")
            acc = evaluate(stitched, data.test, device=device)[0]
            reports.append(StitchReport(part.name, guide_acc, acc, guide_acc - acc))
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        guide.freeze()
    return reports

