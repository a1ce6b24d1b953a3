"""workers: 1, 2 and 4 concurrent workers on the GPU, each running the stage of the stage step (TF32) from a
common start signal: aggregate samples/s, peak memory each."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from stage_loop import time_engine

from nas_theseus.align.precision import tf32_allowed
from nas_theseus.convert import ConvertConfig, GuideActivations

from ..harness import PACKAGE
from ..measure import peak_memory
from ..sizes import Sizes, sizes
from ..workload import prototypes, resnet


def run(sz: Sizes, out: Path) -> dict:
    results = {}
    for n in sz.worker_counts:
        outputs = _run_together(n, sz)
        if any(rc != 0 or not text.strip() for text, rc in outputs):
            return {"ok": False, "reason": f"a worker of {n} failed (exit codes {[rc for _, rc in outputs]})",
                    "results": results}
        each = [json.loads(text.strip().splitlines()[-1]) for text, _ in outputs]
        results[str(n)] = {"aggregate_samples_per_s": sum(e["samples_per_s"] for e in each), "workers": each}
    one = results[str(sz.worker_counts[0])]["aggregate_samples_per_s"]
    return {"ok": True, "steps": sz.worker_steps, "results": results,
            "scaling": {n: r["aggregate_samples_per_s"] / one for n, r in results.items()}}


def _run_together(n: int, sz: Sizes) -> list[tuple[str, int]]:
    """``n`` worker processes, started together once all are set up (or one failed): each one's output and
    exit status."""
    with tempfile.TemporaryDirectory() as tmp:
        go = Path(tmp) / "go"
        threads = max(1, (os.cpu_count() or 1) // n)
        procs = [subprocess.Popen([sys.executable, str(PACKAGE), "worker", "--ready", f"{tmp}/ready{i}", "--go",
                                   str(go), "--threads", str(threads), *(["--dry"] if sz.device == "cpu" else [])],
                                  stdout=subprocess.PIPE, text=True) for i in range(n)]
        while sum(Path(f"{tmp}/ready{i}").exists() for i in range(n)) < n:
            if any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.05)
        go.touch()
        return [(p.communicate()[0], p.returncode) for p in procs]


def worker(args) -> None:
    """One of N concurrent workers (``python benchmarks/gpu_check worker``): the stage, timed from the common
    start signal, its samples/s printed."""
    torch.set_num_threads(args.threads)
    sz = sizes(args.dry)
    device = sz.device
    data = prototypes(max(2048, sz.train // 10) if device == "cuda" else sz.train)
    guide = resnet(data).to(device)
    acts = GuideActivations.compute(guide, data.train.x, data_key=data.fingerprint, device=device,
                                    progress=False).on(device)
    cfg = ConvertConfig(steps_per_stage=sz.worker_steps, stage_stop="fixed")
    with tf32_allowed(True):
        time_engine(guide, data, acts, 0, dataclasses.replace(cfg, steps_per_stage=2), device)  # warm-up
        Path(args.ready).touch()
        while not Path(args.go).exists():
            time.sleep(0.01)
        seconds = time_engine(guide, data, acts, 0, cfg, device)
    print(json.dumps({"samples_per_s": sz.worker_steps * cfg.batch_size / seconds, "s": seconds,
                      **peak_memory(device)}))
