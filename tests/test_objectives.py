"""Objectives are a registry: adding one is one class, and the study file, constraints, the front, its
hypervolume and the report pick it up."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from studyfiles import tiny_training
from test_study_cli import load

from nas_theseus.cli import main
from nas_theseus.study.objectives import OBJECTIVES, Objective, costs, register

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def linear_layers():
    @register
    class LinearLayers(Objective):
        """Linear layers in the deploy network (a test objective)."""

        name, direction, label, before_training = "linear_layers", "minimize", "linear layers", True

        def measure(self, model, probe):
            return sum(isinstance(m, torch.nn.Linear) for m in model.modules()), {"counted": "nn.Linear"}

    yield LinearLayers
    OBJECTIVES.pop("linear_layers")


def test_the_registry_drives_names_directions_and_costs():
    assert list(OBJECTIVES) == ["accuracy", "perplexity", "flops", "params", "latency_ms"]
    assert {n: o.direction for n, o in OBJECTIVES.items()} == {
        "accuracy": "maximize", "perplexity": "minimize", "flops": "minimize", "params": "minimize",
        "latency_ms": "minimize"}
    assert costs(["accuracy", "latency_ms", "flops"]) == ["flops", "latency_ms"]
    assert costs(OBJECTIVES, before_training=True) == ["flops", "params", "latency_ms"]


@pytest.mark.slow
def test_a_registered_objective_is_searched_constrained_and_reported(tmp_path, linear_layers, capsys):
    study = tmp_path / "s.toml"
    study.write_text(f"""
[study]
name = "custom"
search_space = "{REPO / 'search_spaces' / 'mnist1d_cnn_to_mlp.py'}"
n_trials = 2
sampler = "random"

[objectives]
accuracy = "maximize"
linear_layers = "minimize"

[constraints]
linear_layers = 10
""" + tiny_training(steps_per_stage=8))
    wd = tmp_path / "wd"
    assert main(["run", str(study), "--workdir", str(wd), "--no-progress"]) == 0
    out = capsys.readouterr().out
    trials = load(wd).trials
    assert all(t.values[1] == 4 and t.user_attrs["counted"] == "nn.Linear" for t in trials)  # 3 MLP parts + head
    assert all(t.constraints == {"linear_layers": -6} for t in trials)
    assert "guide (reference): accuracy" in out and "linear_layers 1," in out  # the CNN guide: its linear head
    assert main(["report", str(wd)]) == 0
    page = (wd / "report" / "index.html").read_text()
    assert "linear_layers ÷ guide" in page
