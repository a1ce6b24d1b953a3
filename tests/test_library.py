"""The block library (nas_theseus.library): built once and reused by key, resumed after a kill, its costs the
built networks' own, its answers candidates the search space holds; a space that cannot enumerate is refused in
one line; a study seeds itself from it and ``nas-theseus library`` answers budgets."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from studyfiles import tiny_training

from nas_theseus.cli import main
from nas_theseus.convert import ConvertConfig
from nas_theseus.convert.baseline import scratch_model
from nas_theseus.data import load_mnist1d
from nas_theseus.errors import UserError
from nas_theseus.guides import load_guide
from nas_theseus.library import blocks as library_blocks
from nas_theseus.library.answer import absolute_budgets, parse_budget, propose
from nas_theseus.library.build import LibrarySettings, build_library, run_options
from nas_theseus.library.predict import MIN_CALIBRATION, Predictor, calibrate
from nas_theseus.measure import count_flops
from nas_theseus.search import load_search_space

REPO = Path(__file__).resolve().parents[1]
SMALL = REPO / "tests" / "spaces" / "library_small.py"
DEEP = REPO / "search_spaces" / "mnist1d_deep_deploy.py"
CONFIG = ConvertConfig(batch_size=64, probe_size=128, heldout_size=128)
SETTINGS = LibrarySettings(steps=6)


@pytest.fixture(scope="module")
def data():
    return load_mnist1d(num_samples=600)


@pytest.fixture(scope="module")
def guide(data):
    return load_guide("builtin:mnist1d_cnn", data, weights="random", channels=16)


def build(guide, data, folder, space=SMALL, **kw):
    return build_library(guide, load_search_space(space), data, CONFIG, SETTINGS, folder=folder, device="cpu",
                         progress=False, **kw)


@pytest.fixture(scope="module")
def library(guide, data, tmp_path_factory):
    return build(guide, data, tmp_path_factory.mktemp("library"))


def test_a_space_that_cannot_enumerate_is_refused_in_one_line(guide, data, tmp_path):
    with pytest.raises(UserError) as e:
        build(guide, data, tmp_path, space=REPO / "search_spaces" / "mnist1d_cnn_to_mlp.py")
    assert "cannot enumerate its blocks" in str(e.value) and "\n" not in str(e.value)


def test_options_cover_every_run_the_space_forms(guide, library):
    runs = {(o.start, o.stop) for o in library.options}
    assert runs == {(0, 1), (1, 2), (2, 3), (0, 2), (1, 3)}  # max_run = 2: no run of all three parts
    assert all(o.spec is not None for o in library.options if o.stop - o.start > 1)  # a kept run: its parts
    assert all(o.score is not None and 0 <= o.score.val_accuracy <= 1 and o.score.kl >= 0
               for o in library.options if o.spec is not None)


def test_reused_by_key_and_resumed_after_a_kill(guide, data, tmp_path, monkeypatch):
    real = library_blocks.train_alone
    calls = []

    def killed_after_five(*args, **kw):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(args[1:3])
        return real(*args, **kw)

    monkeypatch.setattr(library_blocks, "train_alone", killed_after_five)
    with pytest.raises(KeyboardInterrupt):
        build(guide, data, tmp_path)
    monkeypatch.setattr(library_blocks, "train_alone", real)
    first = build(guide, data, tmp_path)
    assert first.build["read_back"] == 5 and first.build["trained"] == first.build["blocks"] - 5

    def no_training(*args, **kw):
        raise AssertionError("a stored library trained a block again")

    monkeypatch.setattr(library_blocks, "train_alone", no_training)
    again = build(guide, data, tmp_path)  # the assembled library, read back
    assert again.key == first.key and again.options == first.options and again.links == first.links
    for path in tmp_path.glob("library-*.json"):
        path.unlink()
    rebuilt = build(guide, data, tmp_path)  # every block read back by its key; costs measured again
    assert rebuilt.build["read_back"] == rebuilt.build["blocks"] and rebuilt.options == first.options
    other = build(guide, data, tmp_path, latency=dict(batch_size=1, threads=1, block_ms=0.0, device="cpu"))
    assert other.key != first.key and "latency_ms" in other.guide_costs  # another library, the same blocks


def test_a_chains_flops_are_its_built_networks(guide, data, library):
    graph = library.graph(Predictor.additive(library).values(library))
    chains = list(graph.chains())
    assert len(chains) == graph.count() > 20
    for chain in chains:
        model = scratch_model(guide, library.candidate(chain), CONFIG)
        assert chain.costs["flops"] == count_flops(model, data.sample_shape)
    guide_chain = next(c for c in chains if all(library.options[i].spec is None for i in c.options))
    assert guide_chain.costs == library.guide_costs


def test_answers_are_the_best_feasible_chains_the_space_holds(guide, library):
    space = load_search_space(SMALL)
    predictor = Predictor.additive(library)
    graph = library.graph(predictor.values(library))
    for ratio in (0.3, 0.6, 1.0):
        budgets = absolute_budgets(library, [parse_budget(f"flops={ratio}")])
        proposals = propose(library, predictor, budgets, space=space, guide=guide, n=3)
        feasible = [c for c in graph.chains() if c.costs["flops"] <= budgets["flops"]
                    and space.candidate_params(guide, library.candidate(c)) is not None]
        assert proposals and len({p.chain for p in proposals}) == len(proposals)
        assert proposals[0].predicted == pytest.approx(predictor.intercept + max(c.value for c in feasible))
        for p in proposals:
            assert p.costs["flops"] <= budgets["flops"] and p.ratios["flops"] <= ratio + 1e-12
            back, _ = space(optuna.trial.FixedTrial(p.params), guide)  # the space gives the candidate back
            assert back.blocks == p.candidate.blocks and back.partition == p.candidate.partition
    assert propose(library, predictor, {"flops": 1.0}, space=space, guide=guide) == []


@pytest.mark.parametrize("text,expected", [("flops=0.5", ("flops", 0.5, False)),
                                           ("latency=abs:0.2", ("latency_ms", 0.2, True))])
def test_budget_syntax(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["flops", "flops=-1", "flops=abs:x", "flops="])
def test_a_bad_budget_is_one_line(text):
    with pytest.raises(UserError, match="NAME=RATIO"):
        parse_budget(text)


def test_a_cost_the_library_did_not_measure_is_named(library):
    with pytest.raises(UserError, match="no cost 'latency_ms'; it measured: flops"):
        absolute_budgets(library, [parse_budget("latency=0.5")])


def test_the_predictor_is_calibrated_and_reports_rank_agreement(library):
    raw = Predictor.additive(library)
    by_value = {round(c.value, 9): c.options for c in library.graph(raw.values(library)).chains()}
    chains = list(by_value.values())[:12]  # distinct predictions: no ties for the fits to break either way
    truth = [0.5 + 0.8 * (raw.predict(library, c) - raw.intercept) for c in chains]  # a monotone, known relation
    few = calibrate(library, list(zip(chains[:3], truth[:3])))
    assert few.calibrated_on == 0 and few.observed == 3
    fitted = calibrate(library, list(zip(chains, truth)))
    assert len(chains) >= MIN_CALIBRATION and fitted.calibrated_on == len(chains)
    assert fitted.tau_raw == pytest.approx(1.0) and fitted.tau == pytest.approx(1.0)
    assert fitted.predict(library, chains[4]) == pytest.approx(truth[4], abs=1e-4)
    assert "tau +1.00 (raw)" in fitted.describe()


def test_the_deep_space_enumerates_and_inverts(data):
    """search_spaces/mnist1d_deep_deploy.py: its options per run, and candidate_params as search_space's inverse
    on sampled candidates (every partition, kind and order parameter it asks)."""
    guide = load_guide("builtin:mnist1d_cnn", data, weights="random", channels=8, depth=6)
    space = load_search_space(DEEP)
    options = run_options(space, guide)
    assert len([o for o in options if o[2] is not None]) == 11 * 6  # runs of one or two parts, six blocks each
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(150):
        trial = study.ask()
        candidate, _ = space(trial, guide)
        assert space.candidate_params(guide, candidate) == trial.params
        study.tell(trial, 0.0)


STUDY = """
[study]
name = "lib"
search_space = "{space}"
n_trials = 3
sampler = "random"
startup_trials = 1
seed = 0

[objectives]
accuracy = "maximize"
flops = "minimize"

[library]
enabled = true
steps = 4
levels = [0.3, 0.7]
"""


@pytest.mark.slow
def test_a_study_seeds_itself_from_the_library_and_answers_budgets(tmp_path, capsys):
    study_file, wd = tmp_path / "lib.toml", tmp_path / "wd"
    study_file.write_text(STUDY.format(space=SMALL) + tiny_training(steps_per_stage=4))
    assert main(["run", str(study_file), "--workdir", str(wd), "--no-progress"]) == 0
    study = optuna.load_study(study_name="lib", storage=f"sqlite:///{wd / 'study.db'}")
    seeded = study.user_attrs["library"]
    assert seeded["enqueued"] >= 1 and seeded["build"]["trained"] == seeded["build"]["blocks"]
    from_library = [t for t in study.trials if "library_predicted" in t.user_attrs]
    assert len(from_library) == seeded["enqueued"] and [t.number for t in from_library] == \
        list(range(len(from_library)))  # tried first
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in from_library)
    capsys.readouterr()
    assert main(["library", str(wd), "--budget", "flops=0.6", "--top", "2", "--format", "json",
                 "--no-progress"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert 1 <= len(answers) <= 2 and all(a["ratios"]["flops"] <= 0.6 for a in answers)
    before = len(study.trials)
    assert main(["library", str(wd), "--budget", "flops=0.9", "--top", "3", "--convert", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "predicted" in out and "tau" in out and "converted as trial(s)" in out
    study = optuna.load_study(study_name="lib", storage=f"sqlite:///{wd / 'study.db'}")
    added = study.trials[before:]
    assert added and all(t.state == optuna.trial.TrialState.COMPLETE and "library_predicted" in t.user_attrs
                         for t in added)
    assert main(["run", str(study_file), "--workdir", str(wd), "--no-progress", "--n-trials", str(len(study.trials)
                                                                                               + 1)]) == 0
    study = optuna.load_study(study_name="lib", storage=f"sqlite:///{wd / 'study.db'}")
    assert study.user_attrs["library"] == seeded  # seeded once: a resumed run enqueues nothing again
    assert len([t for t in study.trials if "library_predicted" in t.user_attrs]) == len(from_library) + len(added)


def test_a_study_refuses_a_library_its_space_cannot_feed_before_any_trial(tmp_path, capsys):
    study_file, wd = tmp_path / "lib.toml", tmp_path / "wd"
    study_file.write_text(STUDY.format(space=REPO / "search_spaces" / "mnist1d_cnn_to_mlp.py")
                          + tiny_training(steps_per_stage=4))
    assert main(["run", str(study_file), "--workdir", str(wd), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: library.enabled: search space mnist1d_cnn_to_mlp.py cannot enumerate")
    assert not (wd / "study.db").exists()
