"""Stitching penalty (Bansal, Nakkiran, Barak 2021) as a diagnostic of a converted network, with its floor.

At each part boundary k, the converted network's bottom (stem .. part k) feeds the guide's top (parts k+1 ..
K and head) through a stitching layer (BatchNorm -> 1x1 conv / Linear -> BatchNorm), the only thing that
trains (on the task loss; AdamW with cosine decay, initialised by least squares to the guide activation, run
to convergence: ``STITCH_FIT``). The penalty is guide accuracy − stitched accuracy on the test split
(per-token accuracy for a language model, whose stitching layer then acts on each position alone).

A penalty means little without its **floor**: what the same stitch costs between two networks that are both
good at the task, here a second guide of the same architecture trained with another seed (``floor_guide``),
stitched into the guide at the same boundary. It is computed once per (guide, floor guide, data, rule) and
cached under ``$NAS_THESEUS_CACHE/stitch_floors``. A converted network whose penalty is within a point of
the floor is as compatible with the guide as an independently trained twin.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..data import TaskData
from ..guides import Guide
from ..targets import make_bridge
from ..training import FitConfig, evaluate, fit_classifier
from ..utils.devices import resolve_device
from ..utils.files import atomic_write_text, cache_dir
from ..utils.hashing import stable_hash

# converged on MNIST-1D: 15 epochs at lr 1e-3 left a same-architecture twin 3-6 points "worse" than the guide
STITCH_FIT = FitConfig(max_epochs=60, patience=10, lr=3e-3)


@dataclass
class StitchReport:
    part: str
    guide_accuracy: float
    stitched_accuracy: float
    penalty: float
    floor: float | None = None  # the penalty of the same-architecture twin at this boundary, if asked for


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


def _guide_prefix(guide: Guide, k: int) -> nn.Module:
    """A guide's stem and parts up to k (shared modules)."""
    return nn.Sequential(guide.stem, *(p.module for p in guide.parts[: k + 1]))


def _stitched_accuracies(bottoms, guide: Guide, data: TaskData, fit: FitConfig, seed: int, device, progress,
                         probe_size: int) -> list[float]:
    probe = data.train.head(probe_size)[0].to(device)
    guide_acts = guide.activations(probe)
    out = []
    for k, bottom in enumerate(bottoms):
        with torch.no_grad():
            h = bottom(probe)
        stitch = make_bridge("stitch", tuple(h.shape[1:]), guide.shapes[k + 1], tokenwise=guide.tokens).to(device)
        stitch.fit(h, guide_acts[k + 1])
        stitched = _Stitched(bottom, stitch, guide, k)
        fit_classifier(stitched, data, fit, seed=seed, device=device, progress=progress,
                       desc=f"stitch {guide.parts[k].name}")
        out.append(evaluate(stitched, data.test)[0])
    return out


def stitching_floor(guide: Guide, floor_guide: Guide, data: TaskData, *, fit: FitConfig = STITCH_FIT,
                    seed: int = 0, device: str = "auto", progress: bool = True, probe_size: int = 1024
                    ) -> list[float]:
    """Per boundary, the penalty of stitching ``floor_guide`` (the same architecture, another seed) into
    ``guide``: guide accuracy − stitched accuracy. Cached by content (guides, data, rule, seed)."""
    if [p.name for p in floor_guide.parts] != guide.part_names or floor_guide.shapes != guide.shapes:
        raise ValueError("the floor guide must have the guide's parts and activation shapes")
    device = resolve_device(device)
    key = stable_hash({"guide": guide.identity, "floor": floor_guide.identity, "data": data.fingerprint_on(device),
                       "fit": fit, "seed": seed, "probe": probe_size})
    path = cache_dir() / "stitch_floors" / f"{key}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())["floor"]
        except (ValueError, KeyError):
            pass  # unreadable: computed again
    guide.to(device)
    floor_guide.to(device)
    guide_acc = evaluate(guide.module, data.test)[0]
    try:
        accs = _stitched_accuracies([_guide_prefix(floor_guide, k) for k in range(len(guide.parts))], guide, data,
                                    fit, seed, device, progress, probe_size)
    finally:
        guide.freeze()
        floor_guide.freeze()
    floor = [guide_acc - a for a in accs]
    atomic_write_text(path, json.dumps({"floor": floor, "fit": asdict(fit), "seed": seed}))
    return floor


def stitching_penalty(model, guide: Guide, data: TaskData, *, fit: FitConfig = STITCH_FIT, seed: int = 0,
                      device: str = "auto", progress: bool = True, probe_size: int = 1024,
                      floor_guide: Guide | None = None) -> list[StitchReport]:
    """One :class:`StitchReport` per part boundary of ``model`` (a converted network of ``guide``); with
    ``floor_guide``, each report carries the floor at its boundary (see the module)."""
    device = resolve_device(device)
    guide.to(device)
    model.to(device)
    guide_acc = evaluate(guide.module, data.test)[0]
    model.eval()
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        accs = _stitched_accuracies([model.prefix(k) for k in range(len(guide.parts))], guide, data, fit, seed,
                                    device, progress, probe_size)
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        guide.freeze()
    floor = (stitching_floor(guide, floor_guide, data, fit=fit, seed=seed, device=device, progress=progress,
                             probe_size=probe_size) if floor_guide is not None else [None] * len(accs))
    return [StitchReport(p.name, guide_acc, a, guide_acc - a, f) for p, a, f in zip(guide.parts, accs, floor)]
