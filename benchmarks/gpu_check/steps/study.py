"""study: ``nas-theseus run`` of a synthetic-ResNet study, 3 trials on the check's device, then one of its trials
(the same parameters) again with ``--device cpu``: the per-trial time ratio."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import ROOT

from ..sizes import Sizes
from ..workload import prototypes

STUDY_FILE = """[study]
name = "gpu_check"
search_space = "{space}"
n_trials = {n_trials}
startup_trials = 3
device = "{device}"

[objectives]
accuracy = "maximize"
flops = "minimize"
latency_ms = "minimize"

[guide]
source = "timm:resnet18"
fit = {{ max_epochs = 1, patience = 1, batch_size = 256 }}

[data]
name = "npz"
options = {{ path = "{npz}" }}

[convert]
steps_per_stage = {steps}
stage_stop = "fixed"

[convert.finetune]
max_epochs = 2
patience = 2
"""


def run(sz: Sizes, out: Path) -> dict:
    data = prototypes(max(4096, sz.train // 5) if sz.device == "cuda" else sz.train)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "data.npz", X=torch.cat([data.train.x, data.val.x]).numpy(),
                 y=torch.cat([data.train.y, data.val.y]).numpy(), X_test=data.test.x.numpy(),
                 y_test=data.test.y.numpy())
        rc, wall, trials = _run_study(tmp, sz, sz.device, 3, "on_device")
        if rc != 0 or not trials:
            return {"ok": False, "rc": rc, "reason": "the study on the device did not complete its trials"}
        params = json.loads(next((tmp / "on_device" / "trials").glob("*/arch.json")).read_text())["params"]
        rc_cpu, _, cpu_trials = _run_study(tmp, sz, "cpu", 1, "on_cpu",
                                           ["--set", f"study.enqueue=[{_toml_table(params)}]"])
    first = trials[0]
    record = {"ok": rc_cpu == 0 and bool(cpu_trials), "device_wall_s": wall, "trials": len(trials),
              "trial_wall_s": [t["trial_wall_s"] for t in trials], "timings": [t.get("timings") for t in trials],
              "test_accuracy": [t["test_accuracy"] for t in trials],
              "latency_devices": sorted({t["latency"]["device"] for t in trials if "latency" in t})}
    if cpu_trials:
        record.update(cpu_trial_wall_s=cpu_trials[0]["trial_wall_s"], cpu_timings=cpu_trials[0].get("timings"),
                      cpu_over_device_per_trial=cpu_trials[0]["trial_wall_s"] / first["trial_wall_s"])
    return record


def _run_study(tmp: Path, sz: Sizes, device: str, n_trials: int, workdir: str, extra=()) -> tuple:
    """``nas-theseus run`` of the study over ``tmp/data.npz`` into ``tmp/workdir`` (its guide cache in ``tmp``):
    its exit status, wall time and trials' metrics."""
    space = ROOT / "search_spaces" / "cifar10_resnet18_to_mlp.py"
    env = {**os.environ, "NAS_THESEUS_CACHE": str(tmp / "cache"), "NAS_THESEUS_PROGRESS": "0"}
    study = tmp / f"{workdir}.toml"
    study.write_text(STUDY_FILE.format(space=space, n_trials=n_trials, device=device, npz=tmp / "data.npz",
                                       steps=sz.study_steps))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nas_theseus", "run", str(study), "--workdir", str(tmp / workdir),
                           "--no-progress", *extra], cwd=ROOT, env=env, capture_output=True, text=True)
    print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
    trials = [json.loads(p.read_text()) for p in sorted((tmp / workdir / "trials").glob("*/metrics.json"))]
    return proc.returncode, time.perf_counter() - t0, trials


def _toml_table(params: dict) -> str:
    return "{" + ", ".join(f'"{k}" = {json.dumps(v)}' for k, v in params.items()) + "}"
