"""The deployer's search space (search_spaces/mnist1d_deploy.py): every trial it can propose builds, and a name
means one choice in every trial."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from nas_theseus.convert import ConvertConfig, Hybrid
from nas_theseus.data import load_mnist1d
from nas_theseus.guides import load_guide
from nas_theseus.search.space import load_search_space

SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "mnist1d_deploy.py"


@pytest.fixture(scope="module")
def guide():
    return load_guide("builtin:mnist1d_cnn", load_mnist1d(num_samples=200), weights="random", channels=64)


def test_every_proposed_candidate_builds(guide):
    space = load_search_space(SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    choices: dict[str, set] = {}
    for _ in range(300):
        trial = study.ask()
        Hybrid(guide, space.fn(trial, guide), ConvertConfig())  # raises on a block that cannot read its input
        study.tell(trial, 0.0)
        for name, dist in trial.distributions.items():
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                choices.setdefault(name, set()).add(dist.choices)
    assert all(len(c) == 1 for c in choices.values())  # one choice set per name
    assert {"conv2.kind_flat", "conv2+conv3.kind", "conv3.conv.channels"} <= set(choices)


def test_after_an_mlp_run_no_convolution_is_offered(guide):
    space = load_search_space(SPACE)
    params = {"partition.cut0": True, "partition.cut1": False, "conv1.kind": "mlp", "conv1.mlp.width": 32,
              "conv2+conv3.kind_flat": "lowrank", "conv2+conv3.lowrank.rank": 8, "order2.0": 0}
    candidate = space.fn(optuna.trial.FixedTrial(params), guide)
    assert [b.kind for b in candidate.blocks] == ["mlp", "lowrank"] and candidate.head == "linear"
    with pytest.raises(ValueError, match="not in"):  # FixedTrial refuses a choice the space does not offer
        space.fn(optuna.trial.FixedTrial({**params, "conv2+conv3.kind_flat": "conv"}), guide)
