"""Swap-order encoding, search-space loading and checking, hypervolume."""

import itertools

import numpy as np
import optuna
import pytest

from nas_theseus.errors import UserError
from nas_theseus.search import lehmer_decode, lehmer_encode, load_search_space, suggest_swap_order
from nas_theseus.study.pareto import hypervolume, pareto_mask
from nas_theseus.testing import tiny_guide

REPO_SPACE = "search_spaces/mnist1d_cnn_to_mlp.py"


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_lehmer_round_trip_covers_every_order(n):
    perms = list(itertools.permutations(range(n)))
    codes = [lehmer_encode(p) for p in perms]
    assert len(set(map(tuple, codes))) == len(perms)
    assert all(lehmer_decode(c) == list(p) for c, p in zip(codes, perms))
    with pytest.raises(ValueError):
        lehmer_decode([n] + [0] * (n - 1))


def test_suggest_swap_order_uses_fixed_ranges():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        t = study.ask()
        seen.add(tuple(suggest_swap_order(t, 3)))
        study.tell(t, 0.0)
    assert len(seen) == 6
    dists = {name for t in study.trials for name in t.distributions}
    assert dists == {"order.0", "order.1"}


def test_fixed_trial_rebuilds_the_candidate():
    space = load_search_space(REPO_SPACE)
    guide = tiny_guide("conv1d")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    trial = study.ask()
    cand, _ = space(trial, guide)
    again, _ = space(optuna.trial.FixedTrial(trial.params), guide)
    assert again == cand


def test_non_primitive_suggestions_are_refused(tmp_path):
    path = tmp_path / "bad_space.py"
    path.write_text("from nas_theseus.targets import BlockSpec\n"
                    "def search_space(trial, guide):\n"
                    "    return trial.suggest_categorical('block', [BlockSpec.of('mlp')])\n")
    space = load_search_space(path)
    with pytest.raises(UserError, match="non-primitive choices"):
        space(optuna.create_study().ask(), tiny_guide("conv1d"))


def test_bad_search_space_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_search_space(tmp_path / "missing.py")
    (tmp_path / "syntax.py").write_text("def search_space(trial, guide)\n")
    with pytest.raises(UserError, match="failed to import: SyntaxError"):
        load_search_space(tmp_path / "syntax.py")
    (tmp_path / "nofn.py").write_text("x = 1\n")
    with pytest.raises(UserError, match="defines no search_space"):
        load_search_space(tmp_path / "nofn.py")
    (tmp_path / "wrong.py").write_text("def search_space(trial, guide):\n    return 3\n")
    with pytest.raises(UserError, match="must return a Candidate"):
        load_search_space(tmp_path / "wrong.py")(optuna.create_study().ask(), tiny_guide("conv1d"))


def test_hypervolume_two_and_three_objectives():
    # maximise accuracy, minimise flops; reference (0, 10)
    pts = np.array([[0.5, 2.0], [0.8, 6.0]])
    # union of rectangles [0,0.5]x[2,10] and [0,0.8]x[6,10]: 0.5*8 + 0.3*4
    assert hypervolume(pts, ["maximize", "minimize"], np.array([0.0, 10.0])) == pytest.approx(5.2)
    rng = np.random.default_rng(0)
    p3 = rng.uniform(0, 1, size=(6, 3))
    ref = np.ones(3)
    samples = rng.uniform(0, 1, size=(200_000, 3))
    dominated = np.zeros(len(samples), dtype=bool)
    for p in p3:
        dominated |= np.all(samples >= p, axis=1)
    hv = hypervolume(p3, ["minimize"] * 3, ref)
    assert hv == pytest.approx(dominated.mean(), abs=5e-3)


def test_pareto_mask():
    v = np.array([[0.9, 10.0], [0.8, 5.0], [0.7, 7.0], [0.9, 12.0]])
    assert pareto_mask(v, ["maximize", "minimize"]).tolist() == [True, True, False, False]
