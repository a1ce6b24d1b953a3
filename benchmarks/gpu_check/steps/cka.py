"""cka: CKA numerics on a randomly initialised ResNet-18's activations at 32 px: 1 − CKA in fp32, TF32 and bf16
against fp64, and our loss under a global TF32 setting and a bf16 autocast (it must read as fp32).
benchmarks/cka_precision.py runs the same measurement on the CPU."""

from __future__ import annotations

from pathlib import Path

import torch

from nas_theseus.align import linear_cka, make_alignment
from nas_theseus.align.cka import unbiased_linear_cka_in
from nas_theseus.align.precision import tf32_allowed
from nas_theseus.training import autocast_context

from ..sizes import Sizes
from ..workload import prototypes, resnet

ESTIMATORS = (("biased", linear_cka, "cka"), ("unbiased", unbiased_linear_cka_in, "cka_unbiased"))


def run(sz: Sizes, out: Path) -> dict:
    return cka_numerics(sz.device, sz.cka_rows)


def cka_numerics(device: str, rows: int) -> dict:
    """1 − CKA in each precision against fp64, near CKA = 1 (a layer against itself plus a little noise: the
    regime where accuracy is kept) and between adjacent layers. ``fp32`` / ``tf32`` / ``bf16``: the estimator's
    formula computed in that precision; ``our_loss``: the alignment loss as the engine computes it, under global
    TF32 and a bf16 autocast. It holds when our loss is as accurate as the float32 formula (biased CKA) or
    float64 (unbiased CKA, computed so)."""
    table, ok = {}, True
    for name, (a, b) in _pairs(device, rows).items():
        for est_name, est, loss_name in ESTIMATORS:
            row = _precisions(device, a, b, est, loss_name)
            ref = row["fp64"]
            allowed = max(2 * abs(row["fp32"] - ref), 1e-7) if est_name == "biased" else 1e-7
            ok = ok and abs(row["our_loss"] - ref) <= allowed
            table[f"{name}, {est_name}"] = row
    worst = {p: max(r["rel_err"][p] for r in table.values()) for p in ("fp32", "tf32", "bf16", "our_loss")}
    return {"ok": ok, "rows": rows, "device": device, "pairs": table, "worst_rel_err_of_1_minus_cka": worst}


def _pairs(device: str, rows: int) -> dict:
    """The activation pairs compared: each layer against itself plus noise, and against the next layer."""
    data = prototypes(rows)
    guide = resnet(data).to(device)
    x = data.train.x[:rows].to(device)
    acts = guide.activations(x)
    g = torch.Generator(device=device).manual_seed(0)
    pairs = {}
    for k in range(1, len(guide.parts) + 1):
        a = acts[k].float()
        pairs[f"layer{k} vs itself + noise"] = (a, a + 0.05 * a.std() * torch.randn(a.shape, generator=g,
                                                                                         device=device))
        if k < len(guide.parts):
            pairs[f"layer{k} vs layer{k + 1}"] = (a, acts[k + 1].float())
    return pairs


def _precisions(device: str, a, b, est, loss_name: str) -> dict:
    """1 − CKA of one pair by one estimator in each precision, our loss's value, and each one's relative error."""
    ref = 1.0 - float(est(a.double(), b.double()))
    row = {"fp64": ref}
    with tf32_allowed(False):
        row["fp32"] = 1.0 - float(est(a, b))
    with tf32_allowed(True):
        row["tf32"] = 1.0 - float(est(a, b))
    with autocast_context(device, "bf16"):
        row["bf16"] = 1.0 - float(est(a, b))
    loss = make_alignment(loss_name, a.shape[1:], b.shape[1:])
    with tf32_allowed(True), autocast_context(device, "bf16"):  # what the engine's loss must withstand
        row["our_loss"] = float(loss(a, b))
    row["rel_err"] = {p: abs(v - ref) / max(abs(ref), 1e-12) for p, v in row.items() if p != "fp64"}
    return row
