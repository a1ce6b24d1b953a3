"""Every shipped study file runs end to end (tiny budgets through --set), so none of them rots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from studyfiles import SHIPPED, small_settings

from nas_theseus.cli import main

STUDIES = Path(__file__).resolve().parent.parent / "studies"


@pytest.mark.slow
@pytest.mark.parametrize("study", SHIPPED)
def test_shipped_study_runs(study, tmp_path, capsys):
    args = ["run", str(STUDIES / study), "--workdir", str(tmp_path / "wd"), "--no-progress"]
    for s in small_settings(study, tmp_path):
        args += ["--set", s]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["pareto", str(tmp_path / "wd"), "--format", "json"]) == 0
    front = json.loads(capsys.readouterr().out)
    assert front and all(row["flops"] > 0 for row in front)
    if study.startswith("pydoc"):  # perplexity objective, per-token decoding cost beside the full sequence
        assert all(1 < row["perplexity"] < 256 and row["test_perplexity"] > 1 for row in front)
        metrics = json.loads((tmp_path / "wd" / "trials" / str(front[0]["trial"]) / "metrics.json").read_text())
        assert metrics["flops"] == metrics["flops_decode"]["per_token"] < metrics["flops_full_sequence"]
        assert metrics["latency"]["per_token_ms"] == metrics["latency_ms"] > 0
        assert "median_ms" in metrics["latency_full_sequence"]
