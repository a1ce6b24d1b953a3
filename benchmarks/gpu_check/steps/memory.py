"""memory: conversions one after another in one process, as a study's worker runs its trials: one activation
cache, partitions and device spellings varied; the memory held after each (GPU memory on CUDA, resident memory
on the CPU) should not grow."""

from __future__ import annotations

import gc
from pathlib import Path

import torch

from nas_theseus.convert import Candidate, ConvertConfig, GuideActivations, convert
from nas_theseus.targets import BlockSpec
from nas_theseus.training import FitConfig

from ..measure import peak_memory, rss_mb
from ..sizes import Sizes
from ..workload import prototypes, resnet


def run(sz: Sizes, out: Path) -> dict:
    device = sz.device
    data = prototypes(max(2048, sz.train // 10) if device == "cuda" else sz.train)
    guide = resnet(data).to(device)
    acts = GuideActivations.compute(guide, data.train.x, data_key=data.fingerprint, device=device, progress=False)
    mlp = BlockSpec.of("mlp", width=256)
    cands = [Candidate((mlp, None, None, None)), Candidate((mlp, mlp), partition=(2, 2)),
             Candidate((None, None, mlp, None)), Candidate((mlp, mlp, None), partition=(1, 2, 1)),
             Candidate((None, mlp, None, mlp)), Candidate((mlp,), partition=(4,))]
    cfg = ConvertConfig(steps_per_stage=50 if device == "cuda" else 3, stage_stop="fixed",
                        finetune=FitConfig(max_epochs=1, patience=1))
    held = []
    spellings = ["cuda", "cuda:0"] if device == "cuda" else ["cpu"]
    for i in range(sz.memory_conversions):
        convert(guide, cands[i % len(cands)], data, cfg, activations=acts, device=spellings[i % len(spellings)],
                progress=False)
        gc.collect()
        held.append(round(torch.cuda.memory_allocated(device) / 2**20, 1) if device == "cuda" else round(rss_mb(), 1))
    growth = held[-1] - held[0]
    return {"ok": True, "unit": "MiB allocated on the GPU" if device == "cuda" else "MiB resident (RSS)",
            "held_after_each": held, "growth_first_to_last": growth, **peak_memory(device)}
