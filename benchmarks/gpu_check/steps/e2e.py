"""e2e: a trained ResNet-18 guide -> MLP(512) in every part at fixed steps, fine-tuned; fp32 (TF32 off) and
bf16."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from nas_theseus.convert import Candidate, ConvertConfig, GuideActivations, convert
from nas_theseus.targets import BlockSpec
from nas_theseus.training import FitConfig, evaluate

from ..measure import peak_memory
from ..sizes import Sizes
from ..workload import prototypes, resnet


def run(sz: Sizes, out: Path) -> dict:
    device = sz.device
    data = prototypes(sz.train)
    guide = resnet(data, epochs=sz.e2e_guide_epochs, device=device).to(device)
    guide_acc = evaluate(guide.module, data.test)[0]
    cand = Candidate((BlockSpec.of("mlp", width=512),) * 4)
    acts = GuideActivations.compute(guide, data.train.x, data_key=data.fingerprint, device=device, progress=False)
    runs = {}
    for precision in ("fp32", "bf16"):
        half = None if precision == "fp32" else "bf16"
        cfg = ConvertConfig(steps_per_stage=sz.e2e_steps, stage_stop="fixed", batch_size=256, autocast=half,
                            tf32=False, finetune=FitConfig(max_epochs=sz.e2e_finetune_epochs, patience=5,
                                                           lr=1e-3, batch_size=256, autocast=half))
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        r = convert(guide, cand, data, cfg, activations=acts, device=device, progress=False)
        wall = time.perf_counter() - t0
        align_s = sum(s.wall_s for s in r.stages)
        runs[precision] = {"wall_s": wall, "s_per_stage": [s.wall_s for s in r.stages], "timings": r.timings,
                           "align_samples_per_s": sum(s.steps for s in r.stages) * cfg.batch_size / align_s,
                           "test_accuracy": r.test_accuracy, "heldout_alignment": r.stages[-1].alignment,
                           **peak_memory(device)}
    return {"ok": True, "guide_test_accuracy": guide_acc, "steps_per_stage": sz.e2e_steps, "train": sz.train,
            "runs": runs, "bf16_speedup": runs["fp32"]["wall_s"] / runs["bf16"]["wall_s"]}
