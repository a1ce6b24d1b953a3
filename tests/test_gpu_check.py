"""The prepared GPU check cannot rot between GPU sessions: `benchmarks/gpu_check.sh --dry` runs every step on
the CPU with tiny sizes, writes every step's record as it ends, and prints the summary table last."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_gpu_check_runs_every_step_dry_on_the_cpu(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1500)
    log = (tmp_path / "gpu_check.log").read_text() if (tmp_path / "gpu_check.log").exists() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + log[-6000:]
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = results["steps"]
    assert list(steps) == ["tests", "readme", "cka", "stage", "e2e", "workers", "memory", "study", "stream", "ddp"]
    assert all(s["status"] == "ok" and s["rc"] == 0 for s in steps.values()), steps
    assert results["meta"]["commit"] and results["meta"]["torch"]
    table = (tmp_path / "gpu_check.md").read_text()
    assert table in proc.stdout and "not run" not in table and "Error" not in table
    assert steps["cka"]["worst_rel_err_of_1_minus_cka"]["our_loss"] < 1e-2
    assert steps["study"]["trials"] == 3 and steps["study"]["latency_devices"] == ["cpu"]
    readme = steps["readme"]  # the README's first study, end to end (tiny on the CPU), with its front
    assert len(readme["trials"]) == 2 and readme["front"] and readme["guide_s"] > 0 and readme["wall_s"] > 0
    assert sorted(os.listdir(tmp_path)) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]  # 3 of the files
