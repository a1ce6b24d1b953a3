"""Every shipped study file runs end to end (tiny budgets through --set), so none of them rots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nas_theseus.cli import main

STUDIES = Path(__file__).resolve().parent.parent / "studies"
TINY = ["study.n_trials=2", "study.startup_trials=1", "convert.steps_per_stage=4", "convert.probe_size=64",
        "convert.finetune.max_epochs=1", "guide.fit.max_epochs=2"]


@pytest.mark.slow
@pytest.mark.parametrize("study", ["mnist1d_cnn_to_mlp.toml", "digits_vit_to_mlp.toml"])
def test_shipped_study_runs(study, tmp_path, capsys):
    args = ["run", str(STUDIES / study), "--workdir", str(tmp_path / "wd"), "--no-progress"]
    for s in TINY:
        args += ["--set", s]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["pareto", str(tmp_path / "wd"), "--format", "json"]) == 0
    front = json.loads(capsys.readouterr().out)
    assert front and all(row["flops"] > 0 for row in front)
