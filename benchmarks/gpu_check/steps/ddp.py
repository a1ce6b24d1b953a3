"""ddp: one conversion across 1 and 2 GPUs under torchrun (ResNet-18 layer1 -> MLP(256), the guide streamed, the
same global batch): alignment samples/s each, and their ratio; skipped with one GPU (a dry run: 2 CPU processes
on gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from nas_theseus.convert import Candidate, ConvertConfig, convert
from nas_theseus.targets import BlockSpec
from nas_theseus.training import FitConfig

from ..harness import PACKAGE
from ..measure import peak_memory
from ..sizes import Sizes, sizes
from ..workload import prototypes, resnet


def run(sz: Sizes, out: Path) -> dict:
    gpus = torch.cuda.device_count() if sz.device == "cuda" else 2
    if gpus < 2:
        return {"ok": True, "reason": f"skipped: {gpus} GPU here, the scaling of one conversion needs 2 or more"}
    runs = {}
    for ranks in (1, 2):
        threads = max(1, (os.cpu_count() or 2) // ranks) if sz.device == "cuda" else 1
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               f"--nproc-per-node={ranks}", str(PACKAGE), "ddp_rank", "--threads", str(threads),
                               *(["--dry"] if sz.device == "cpu" else [])], capture_output=True, text=True)
        if proc.returncode != 0 or not proc.stdout.strip():
            return {"ok": False, "reason": f"{ranks} rank(s) failed (exit code {proc.returncode}): "
                                           f"{proc.stderr.strip()[-300:]}", "runs": runs}
        runs[str(ranks)] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"ok": True, "case": "ResNet-18 32 px, layer1 -> MLP(256), guide streamed", "steps": sz.ddp_steps,
            "global_batch": sz.ddp_batch, "runs": runs,
            "two_over_one": runs["2"]["samples_per_s"] / runs["1"]["samples_per_s"]}


def rank(args) -> None:
    """One rank (``python benchmarks/gpu_check ddp_rank`` under torchrun): the conversion, its alignment samples/s
    printed by rank 0."""
    sz = sizes(args.dry)
    torch.set_num_threads(args.threads)
    data = prototypes(max(2048, sz.train // 10) if sz.device == "cuda" else sz.train)
    candidate = Candidate((BlockSpec.of("mlp", width=256), None, None, None), order=(0,))
    config = ConvertConfig(steps_per_stage=sz.ddp_steps, batch_size=sz.ddp_batch, stage_stop="fixed",
                           activations="stream", finetune=FitConfig(max_epochs=1, patience=1))
    result = convert(resnet(data), candidate, data, config, device=sz.device, progress=False)
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return
    align_s = result.timings["align_s"]
    print(json.dumps({"align_s": align_s, "samples_per_s": sz.ddp_steps * sz.ddp_batch / align_s,
                      "ranks": int(os.environ.get("WORLD_SIZE", "1")), **peak_memory(sz.device)}))
