"""readme: ``nas-theseus run studies/mnist1d_deploy.toml`` end to end on the check's device, as a new user runs
it (empty guide cache; tiny settings on a dry run): wall time, where each trial's time went, the front; beside
this repo's record of the same command on a 2-core CPU (benchmarks/results/readme_study_cpu.json,
benchmarks/readme_study.py)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from _common import ROOT
from readme_study import run_readme_study

from ..sizes import Sizes

DRY_README = ("study.n_trials=2", "convert.steps_per_stage=4", "convert.finetune.max_epochs=1",
              "guide.fit.max_epochs=1", "data.options.num_samples=600", "latency.repeats=3", "latency.block_ms=1")


def run(sz: Sizes, out: Path) -> dict:
    result = run_readme_study(sz.device, settings=() if sz.device == "cuda" else DRY_README)
    cpu_file = ROOT / "benchmarks" / "results" / "readme_study_cpu.json"
    cpu = [r for r in json.loads(cpu_file.read_text())["runs"].values() if r.get("ok")] if cpu_file.exists() else []
    if result.get("ok") and cpu and sz.device == "cuda":
        cpu_wall = statistics.median(r["wall_s"] for r in cpu)
        cpu_trial = statistics.median(r["per_trial_s"] for r in cpu)
        result.update(cpu_wall_s=cpu_wall, cpu_per_trial_s=cpu_trial,
                      cpu_commits=sorted({r["commit"] for r in cpu}), cpu_over_device=cpu_wall / result["wall_s"],
                      cpu_over_device_per_trial=cpu_trial / result["per_trial_s"])
    return result
