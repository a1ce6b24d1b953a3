"""The study through the CLI, in-process: run, interrupt, resume, Pareto JSON, export and reload; bad input."""

import json
import re
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from studyfiles import tiny_training

from nas_theseus import load_exported
from nas_theseus.cli import main
from nas_theseus.study.pareto import front
from nas_theseus.study.runner import REQUEUED
from nas_theseus.utils import testhooks

REPO = Path(__file__).resolve().parent.parent

STUDY = """
[study]
name = "tiny"
search_space = "{space}"
n_trials = {n_trials}
sampler = "{sampler}"
startup_trials = 2
seed = 0
method = "{method}"

[objectives]
accuracy = "maximize"
flops = "minimize"
latency_ms = "minimize"

[constraints]
latency_ms = 10000.0

[latency]
repeats = 3
warmup = 1
"""


def write_study(tmp_path, *, n_trials=3, sampler="random", method="not", name="tiny.toml"):
    path = tmp_path / name
    path.write_text(STUDY.format(space=REPO / "search_spaces" / "mnist1d_cnn_to_mlp.py", n_trials=n_trials,
                                 sampler=sampler, method=method) + tiny_training(steps_per_stage=8))
    return path


def load(wd):
    meta = json.loads((wd / "study.json").read_text())
    return optuna.load_study(study_name=meta["study_name"], storage=meta["storage"])


@pytest.mark.slow
def test_run_interrupt_resume_pareto_export(tmp_path, monkeypatch, capsys):
    study_file, wd = write_study(tmp_path), tmp_path / "wd"
    # interrupt (as Ctrl-C would) in the middle of an alignment stage of the second trial
    monkeypatch.setenv("NAS_THESEUS_TEST_HOOK", "stage_step:interrupt:36")
    testhooks.reset()
    assert main(["run", str(study_file), "--workdir", str(wd), "--no-progress"]) == 130
    assert "re-enqueued" in capsys.readouterr().err
    monkeypatch.delenv("NAS_THESEUS_TEST_HOOK")
    study = load(wd)
    interrupted = [t for t in study.trials if t.user_attrs.get(REQUEUED)]
    assert len(interrupted) == 1 and interrupted[0].state == TrialState.FAIL
    finished_before = len(interrupted[0].user_attrs.get("stages", []))
    assert finished_before >= 1
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].system_attrs["fixed_params"] == interrupted[0].params

    assert main(["run", str(study_file), "--workdir", str(wd), "--no-progress"]) == 0
    study = load(wd)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 3
    resumed = [t for t in complete if t.user_attrs.get("resumes_trial") == interrupted[0].number]
    assert len(resumed) == 1 and resumed[0].params == interrupted[0].params
    flags = [s["resumed"] for s in resumed[0].user_attrs["stages"]]
    assert flags[:finished_before] == [True] * finished_before and not any(flags[finished_before:])
    # reuse shown: per trial, and over the study in the run's summary
    r = resumed[0].user_attrs
    assert (r["stages_requested"], r["stages_trained"]) == (len(flags), len(flags) - finished_before)
    assert r["reuse_saved_s"] == pytest.approx(sum(s["wall_s"] for s in r["stages"][:finished_before]), abs=0.01)
    trained = sum(t.user_attrs["stages_trained"] for t in complete)
    assert f"stage reuse: {trained} of {3 * len(flags)} stages trained" in capsys.readouterr().out
    assert all(t.user_attrs["threads"] >= 1 for t in complete)
    for t in complete:
        assert t.user_attrs["flops_convention"].startswith("FLOPs = multiply-adds")
        assert t.constraints == {"latency_ms": pytest.approx(t.values[2] - 10000.0)}

    capsys.readouterr()
    assert main(["pareto", str(wd), "--format", "json"]) == 0
    front = json.loads(capsys.readouterr().out)
    assert front and {"trial", "accuracy", "flops", "latency_ms", "params"} <= set(front[0])
    assert all(isinstance(r["params"]["conv1.width"], int) for r in front)
    assert main(["pareto", str(wd)]) == 0
    table = capsys.readouterr().out
    assert "hypervolume" in table
    assert main(["pareto", str(wd), "--format", "csv"]) == 0
    csv_lines = capsys.readouterr().out.splitlines()
    # the three formats show the same columns, params included (what `convert --params` takes)
    assert csv_lines[0].split(",") == list(front[0]) == table.splitlines()[0].split()
    assert len(csv_lines) == len(front) + 1 and '""conv1.width"": ' in csv_lines[1]

    n = front[0]["trial"]
    assert main(["export", str(wd), "--trial", str(n)]) == 0
    assert "verified" in capsys.readouterr().out
    out = wd / "exports" / f"trial-{n}"
    assert {"arch.json", "model.safetensors", "model.pt2", "metrics.json"} <= {p.name for p in out.iterdir()}
    model = load_exported(out)
    from nas_theseus.study.workdir import load_reference

    x, y = load_reference(wd / "trials" / str(n))
    assert (model(x) - y).abs().max().item() <= 1e-5
    program = torch.export.load(str(out / "model.pt2")).module()
    assert torch.allclose(program(x[:5]), y[:5], atol=1e-5)

    assert main(["report", str(wd)]) == 0
    assert {"pareto.png", "pareto.html", "alignment.png", "index.html"} <= {p.name for p in (wd / "report").iterdir()}
    page = (wd / "report" / "index.html").read_text()
    assert "guide (reference): accuracy" in page and "flops ÷ guide" in page and "0 trial(s) pruned" in page
    # another study's front on the same plot and reference point (here the study itself: the same hypervolume)
    assert main(["report", str(wd), "--out", str(tmp_path / "compared"), "--compare", str(wd)]) == 0
    page = (tmp_path / "compared" / "index.html").read_text()
    hv = re.search(r"hypervolume ([0-9.e+]+) \(reference", page).group(1)
    assert f"front trials, hypervolume {hv}</li>" in page

    # budget reached: another run starts nothing; a larger budget continues the same study
    assert main(["run", str(study_file), "--workdir", str(wd), "--no-progress"]) == 0
    assert len(load(wd).get_trials(states=(TrialState.COMPLETE,))) == 3


@pytest.mark.slow
def test_changed_study_is_refused_unless_forced(tmp_path, capsys):
    study_file, wd = write_study(tmp_path, n_trials=1), tmp_path / "wd"
    assert main(["run", str(study_file), "--workdir", str(wd), "--no-progress"]) == 0
    before = (wd / "study.json").read_text()
    changed = ["--set", "convert.steps_per_stage=9"]
    assert main(["run", str(study_file), "--workdir", str(wd), "--no-progress", *changed]) == 2
    assert "changed since" in capsys.readouterr().err
    assert (wd / "study.json").read_text() == before
    # a bigger budget is not a change
    assert main(["run", str(study_file), "--workdir", str(wd), "--no-progress", "--n-trials", "2"]) == 0
    assert main(["run", str(study_file), "--workdir", str(wd), "--no-progress", "--force", *changed,
                 "--n-trials", "3"]) == 0
    assert len(load(wd).get_trials(states=(TrialState.COMPLETE,))) == 3


@pytest.mark.slow
def test_scratch_method_and_single_convert(tmp_path, capsys):
    study_file, wd = write_study(tmp_path, n_trials=2, method="scratch", sampler="nsga2"), tmp_path / "wd"
    assert main(["run", str(study_file), "--workdir", str(wd), "--no-progress"]) == 0
    study = load(wd)
    assert all(t.user_attrs["method"] == "scratch" for t in study.get_trials(states=(TrialState.COMPLETE,)))
    conv_file = write_study(tmp_path, name="conv.toml")
    params = {"conv1.width": 16, "conv2.width": 16, "conv3.width": 32, "order.0": 2, "order.1": 0}
    capsys.readouterr()
    assert main(["convert", str(conv_file), "--workdir", str(tmp_path / "w2"), "--params", json.dumps(params),
                 "--no-progress", "--out", str(tmp_path / "one")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["flops"] == 40 * 16 + 16 * 16 + 16 * 32 + 32 * 10
    assert [s["parts"] for s in summary["stages"]] == [["conv3"], ["conv1"], ["conv2"]]
    assert load_exported(tmp_path / "one").arch[1]["spec"]["width"] == 16
    assert main(["convert", str(conv_file), "--params", '{"conv1.width": 16}', "--no-progress"]) == 2
    assert "does not fit" in capsys.readouterr().err


def test_the_method_as_a_choice_per_trial(tmp_path, capsys):
    """`study.method = ["not", "kd"]`: each trial's `method` parameter says how it trains (NoT stages, or KD with
    none), the front says which method made each point, and `convert --params` rebuilds either."""
    study_file = write_study(tmp_path, n_trials=4)
    both = ", ".join(f'{{ "method" = "{m}", "conv1.width" = 16, "conv2.width" = 16, "conv3.width" = 16, '
                     f'"order.0" = 0, "order.1" = 0 }}' for m in ("not", "kd"))
    study_file.write_text(study_file.read_text().replace('method = "not"', f'method = ["not", "kd"]\n'
                                                                            f'enqueue = [{both}]'))
    wd = tmp_path / "wd"
    assert main(["run", str(study_file), "--workdir", str(wd), "--no-progress"]) == 0
    complete = load(wd).get_trials(states=(TrialState.COMPLETE,))
    assert {t.params["method"] for t in complete} == {"not", "kd"}  # both enqueued: whatever the sampler draws
    for t in complete:
        assert t.user_attrs["method"] == t.params["method"]
        assert (len(t.user_attrs["stages"]) == 3) == (t.params["method"] == "not")
    capsys.readouterr()
    assert main(["pareto", str(wd), "--format", "json"]) == 0
    front = json.loads(capsys.readouterr().out)
    assert all(r["method"] == r["params"]["method"] for r in front)
    kd = next(t for t in complete if t.params["method"] == "kd")
    assert main(["convert", str(study_file), "--workdir", str(wd), "--params", json.dumps(kd.params),
                 "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["stages"] == [] and summary["val_accuracy"] == pytest.approx(kd.values[0])
    bad = write_study(tmp_path, name="bad.toml")
    bad.write_text(bad.read_text().replace('method = "not"', 'method = ["not", "kdd"]'))
    assert main(["run", str(bad), "--workdir", str(tmp_path / "w3")]) == 2
    assert "unknown method 'kdd' (did you mean 'kd'?)" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["function_matching", "hinton"])
def test_knowledge_distillation_as_a_study_method(tmp_path, variant):
    study_file, wd = write_study(tmp_path, n_trials=1, method="kd"), tmp_path / "wd"
    assert main(["run", str(study_file), "--workdir", str(wd), "--no-progress", "--set",
                 f'baseline.kd="{variant}"']) == 0
    (t,) = load(wd).get_trials(states=(TrialState.COMPLETE,))
    assert t.user_attrs["method"] == "kd" and t.user_attrs["stages"] == [] and 0 < t.values[0] <= 1
    assert (wd / "trials" / str(t.number) / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_repeated_proposal_is_answered_from_its_trial_and_costs_no_budget(tmp_path, capsys):
    study_file, wd = write_study(tmp_path, n_trials=2), tmp_path / "wd"
    study_file.write_text(study_file.read_text().replace(str(REPO / "search_spaces" / "mnist1d_cnn_to_mlp.py"),
                                                         str(REPO / "tests" / "spaces" / "two_candidates.py")))
    assert main(["run", str(study_file), "--workdir", str(wd), "--no-progress", "--n-trials", "1"]) == 0
    load(wd).enqueue_trial(load(wd).trials[0].params)  # the same proposal again, for certain
    capsys.readouterr()
    assert main(["run", str(study_file), "--workdir", str(wd), "--no-progress"]) == 0
    out = capsys.readouterr().out
    study = load(wd)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    repeats = [t for t in done if "repeat_of" in t.user_attrs]
    originals = {t.number: t for t in done if "repeat_of" not in t.user_attrs}
    assert sorted(t.params["width"] for t in originals.values()) == [8, 16]  # the budget: two real trials
    assert repeats and f"{len(repeats)} proposal(s) repeated an earlier candidate" in out
    for r in repeats:
        o = originals[r.user_attrs["repeat_of"]]
        assert r.params == o.params and r.values == o.values and r.constraints == o.constraints
        assert not (wd / "trials" / str(r.number)).exists()  # no work: no network of its own
    # the printed front is the study's front (whichever of the two near-chance trials it holds), repeats left out
    names = ["accuracy", "flops", "latency_ms"]
    df, _, _ = front(study, names, ["maximize", "minimize", "minimize"])
    assert set(df["trial"]) <= set(originals) and len(df) >= 1
    assert f"Pareto front: {len(df)} of" in out and out.count("mlp(width=") == len(df)
    r = repeats[0]
    assert main(["export", str(wd), "--trial", str(r.number), "--out", str(tmp_path / "e")]) == 0  # its original's
    assert load_exported(tmp_path / "e").arch[1]["spec"]["width"] == r.params["width"]
    # the space has no third candidate: a larger budget ends with the sampler repeating itself, not a hang
    capsys.readouterr()
    assert main(["run", str(study_file), "--workdir", str(wd), "--no-progress", "--n-trials", "3"]) == 0
    assert "search space looks exhausted" in capsys.readouterr().err


@pytest.mark.slow
def test_export_from_another_work_directory_names_the_worker_that_has_the_files(tmp_path, capsys):
    study_file, shared = write_study(tmp_path, n_trials=1), f"sqlite:///{tmp_path / 'shared.db'}"
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["run", str(study_file), "--workdir", str(a), "--storage", shared, "--no-progress"]) == 0
    assert main(["run", str(study_file), "--workdir", str(b), "--storage", shared, "--no-progress"]) == 0  # budget met
    capsys.readouterr()
    assert main(["export", str(b), "--trial", "0"]) == 2
    err = capsys.readouterr().err
    worker = load(a).trials[0].user_attrs["worker"]
    assert "trial 0 is complete, but its network is not in this work directory" in err and worker in err, err
    assert "the study had no artifact store when it ran" in err, err


@pytest.mark.slow
def test_a_costlier_trial_behind_a_cheaper_one_is_pruned_by_our_rule(tmp_path, capsys):
    """margin -1 makes the rule fire whenever an earlier trial costs no more: the wide second candidate is
    pruned after its first stage, with the reason; its finished stage stays checkpointed; the front holds the
    cheap one. (Latency is left out of the objectives here, so that a timing hiccup cannot decide the test; the
    rule's comparison of every cost is tests/test_pruning.py.)"""
    study_file, wd = write_study(tmp_path, n_trials=2), tmp_path / "wd"
    cheap = {"conv1.width": 16, "conv2.width": 16, "conv3.width": 16, "order.0": 0, "order.1": 0}
    wide = {**cheap, "conv1.width": 256, "conv2.width": 256}
    text = study_file.read_text().replace('method = "not"', f'method = "not"\nenqueue = [{toml_table(cheap)}, '
                                                          f'{toml_table(wide)}]')
    text = text.replace('latency_ms = "minimize"\n', "", 1)
    study_file.write_text(text + '\n[pruning]\nenabled = true\nmargin = -1.0\nstages = "all"\n')
    assert main(["run", str(study_file), "--workdir", str(wd), "--no-progress"]) == 0
    assert "pruned: after stage 1, trial 0" in capsys.readouterr().err
    first, second = load(wd).trials[:2]
    assert first.state == TrialState.COMPLETE and second.state == TrialState.PRUNED
    assert second.user_attrs["pre_training_costs"]["flops"] > first.user_attrs["pre_training_costs"]["flops"]
    assert "prune_reason" in second.user_attrs and len(second.user_attrs["stages"]) == 1
    assert len(list((wd / "checkpoints").glob("*.ckpt"))) >= 3 + 1  # trial 0's stages and fine-tuning, trial 1's


def test_a_baselines_repeat_ignores_the_swap_order():
    from nas_theseus.convert import Candidate, ConvertConfig
    from nas_theseus.study.objective import candidate_key
    from nas_theseus.targets import BlockSpec

    blocks = (BlockSpec.of("mlp", width=8), None, BlockSpec.of("mlp", width=16))
    a, b, cfg = Candidate(blocks, order=(0, 2)), Candidate(blocks, order=(2, 0)), ConvertConfig()
    assert candidate_key(a, cfg, "not") != candidate_key(b, cfg, "not")  # another conversion
    assert candidate_key(a, cfg, "scratch") == candidate_key(b, cfg, "scratch")  # the same network to train
    assert candidate_key(a, cfg, "kd") != candidate_key(a, cfg, "scratch")


def toml_table(params: dict) -> str:
    return "{ " + ", ".join(f'"{k}" = {v}' for k, v in params.items()) + " }"


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace("n_trials", "n_trails"), "unknown key 'study.n_trails' (did you mean 'n_trials'?)"),
    (lambda s: s.replace('sampler = "random"', 'sampler = "tpes"'), "unknown sampler 'tpes' (did you mean 'tpe'?)"),
    (lambda s: s.replace('flops = "minimize"', 'flop = "minimize"'), "unknown objective 'flop'"),
    (lambda s: s.replace("[study]", "[study"), "is not valid TOML"),
    (lambda s: s.replace("steps_per_stage = 8", "steps_per_stage = 8.5"), "convert.steps_per_stage must be int"),
    (lambda s: s.replace('source = "builtin:mnist1d_cnn"', 'source = "biltin:mnist1d_cnn"'),
     "did you mean 'builtin'"),
])
def test_bad_study_files_are_one_line_errors(tmp_path, capsys, edit, message):
    path = write_study(tmp_path)
    path.write_text(edit(path.read_text()))
    assert main(["run", str(path), "--workdir", str(tmp_path / "wd"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "wd").exists()


@pytest.mark.parametrize("override, message", [
    ("study.n_trials=many", "study.n_trials must be int, got str 'many'"),
    ("convert.schedul=joint", "unknown key 'convert.schedul' (did you mean 'schedule'?)"),
    ("convert.schedule=jiont", "unknown schedule 'jiont' (did you mean 'joint'?)"),
    ("nonsense", "--set expects key=value"),
    ("convert.seed=3", "convert.seed cannot be set in a study; the conversion seed is study.seed"),
    ('baseline.kd="hintn"', "unknown baseline.kd 'hintn' (did you mean 'hinton'?)"),
    ("latency.block_ms=-1", "latency.block_ms must be >= 0 (milliseconds), got -1.0"),
    ("baseline.fit={lr_rate=1}", "baseline.fit: unknown training setting(s) ['lr_rate']"),
    ("study.n_trials=-3", "study.n_trials must be >= 1, got -3"),
    ("study.timeout=0", "study.timeout must be > 0 (seconds), got 0.0"),
    ("study.timeout=-5", "study.timeout must be > 0 (seconds), got -5.0"),
    ("study.threads=0", "study.threads must be >= 1, got 0"),
    ("study.heartbeat_interval=0", "study.heartbeat_interval must be >= 1, got 0"),
    ("study.max_retry=-1", "study.max_retry must be >= 0, got -1"),
    ("latency.repeats=0", "latency.repeats must be >= 1, got 0"),
    ("latency.threads=-1", "latency.threads must be >= 1, got -1"),
])
def test_bad_overrides(tmp_path, capsys, override, message):
    assert main(["run", str(write_study(tmp_path)), "--set", override, "--no-progress"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["run", "{study}", "--n-trials", "-3"],
     "argument --n-trials: must be a number of trials, or 0 to prepare the study and run none, got -3"),
    (["run", "{study}", "--n-trials", "2.5"], "argument --n-trials: must be a whole number of trials, got '2.5'"),
    (["run", "{study}", "--timeout", "0"], "argument --timeout: must be a number of seconds above 0, got 0"),
    (["run", "{study}", "--timeout", "-60"], "argument --timeout: must be a number of seconds above 0, got -60"),
    (["run", "{study}", "--workers", "0"], "argument --workers: --workers must be at least 1, got 0"),
    (["run", "{study}", "--workers", "-2"], "argument --workers: --workers must be at least 1, got -2"),
    (["dashboard", "{wd}", "--port", "0"], "argument --port: must be a port number (1-65535), got 0"),
    (["dashboard", "{wd}", "--port", "70000"], "argument --port: must be a port number (1-65535), got 70000"),
])
def test_bad_numbers_on_the_command_line_are_refused_before_any_work(tmp_path, monkeypatch, capsys, argv, message):
    """A zero or negative budget once ran nothing and exited 0 ("no complete trials yet"): now argparse's usage
    and one line naming the option and the value, exit 2, before a guide, a storage or a folder is made."""
    monkeypatch.chdir(tmp_path)  # the default work directory, runs/<name>, would be made here
    study = write_study(tmp_path)
    with pytest.raises(SystemExit) as e:
        main([a.format(study=study, wd=tmp_path / "wd") for a in argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].endswith(message) and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]


def test_good_numbers_on_the_command_line_parse():
    from nas_theseus.cli import build_parser

    args = build_parser().parse_args(["run", "s.toml", "--n-trials", "3", "--timeout", "1.5", "--workers", "auto"])
    assert (args.n_trials, args.timeout, args.workers) == (3, 1.5, "auto")
    assert build_parser().parse_args(["run", "s.toml", "--workers", "2"]).workers == 2
    assert build_parser().parse_args(["run", "s.toml", "--n-trials", "0"]).n_trials == 0  # prepare, no trial
    assert build_parser().parse_args(["dashboard", "wd"]).port == 8080


def test_unknown_subcommand_and_missing_workdir(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["serch"])
    assert "invalid choice: 'serch'" in capsys.readouterr().err
    assert main(["pareto", str(tmp_path)]) == 2
    assert "not a study work directory" in capsys.readouterr().err


def test_blocks_lists_every_block(capsys):
    from nas_theseus.targets import list_blocks

    assert main(["blocks"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in list_blocks())


def test_guide_activation_cache_is_computed_once_and_keyed_by_guide_and_data(tmp_path, monkeypatch):
    from nas_theseus.convert import GuideActivations
    from nas_theseus.data import load_mnist1d
    from nas_theseus.study.workdir import WorkDir
    from nas_theseus.testing import tiny_guide

    wd, guide, data = WorkDir(tmp_path), tiny_guide("conv1d"), load_mnist1d(num_samples=300)
    first = wd.activations(guide, data, device="cpu", progress=False)
    files = list((tmp_path / "cache").glob("activations-*.f32"))
    assert len(files) == 1

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(GuideActivations, "compute", boom)
    again = wd.activations(guide, data, device="cpu", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(first.acts, again.acts))
    monkeypatch.undo()
    wd.activations(tiny_guide("conv1d", seed=1), data, device="cpu", progress=False)
    wd.activations(guide, load_mnist1d(num_samples=300, split_seed=1), device="cpu", progress=False)
    assert len(list((tmp_path / "cache").glob("activations-*.f32"))) == 3
    del first, again  # release the memory maps before the file is damaged
    (files[0] / "a1.npy").write_bytes(b"junk")
    with pytest.warns(UserWarning, match="unreadable"):
        redone = wd.activations(guide, data, device="cpu", progress=False)
    assert len(redone) == len(data.train) and (files[0] / "a1.npy").stat().st_size > 4


def test_large_activation_cache_is_a_memory_mapped_folder_reused_across_runs(tmp_path, monkeypatch):
    from nas_theseus.convert import GuideActivations
    from nas_theseus.data import load_mnist1d
    from nas_theseus.study.workdir import WorkDir
    from nas_theseus.testing import tiny_guide

    monkeypatch.setenv("NAS_THESEUS_ACTIVATION_MEMORY", "0")
    wd, guide, data = WorkDir(tmp_path), tiny_guide("conv1d"), load_mnist1d(num_samples=300)
    first = wd.activations(guide, data, device="cpu", progress=False)
    folders = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert first.mapped and len(folders) == 1 and not list((tmp_path / "cache").glob("*.safetensors"))
    monkeypatch.setattr(GuideActivations, "compute", lambda *a, **k: pytest.fail("recomputed"))
    again = wd.activations(guide, data, device="cpu", progress=False)
    idx = torch.arange(10)
    assert again.mapped and all(torch.equal(a, b) for a, b in zip(first.batch(idx), again.batch(idx)))


def test_one_merge_rule_for_partial_fine_tuning_settings(tmp_path):
    """A partial fine-tuning rule fills from the same defaults in Python and in a study file."""
    from nas_theseus.convert import ConvertConfig
    from nas_theseus.convert.config import DEFAULT_FINETUNE
    from nas_theseus.study.config import load_study_config

    in_python = ConvertConfig(finetune={"max_epochs": 2, "patience": 2}).finetune
    in_study = load_study_config(write_study(tmp_path)).convert.finetune  # [convert.finetune] max_epochs/patience 2
    assert in_python == in_study
    assert (in_python.lr, in_python.batch_size) == (DEFAULT_FINETUNE.lr, DEFAULT_FINETUNE.batch_size)


@pytest.mark.slow
def test_a_study_from_python_as_the_cli_runs_it(tmp_path, capsys):
    """nas_theseus.run_study takes a study file and --set-style overrides and returns the Optuna study;
    nas_theseus.pareto_front is `pareto`'s front as a DataFrame."""
    import nas_theseus

    study_file, wd = write_study(tmp_path, n_trials=3), tmp_path / "wd"
    study = nas_theseus.run_study(study_file, wd, overrides={"study.n_trials": 1}, progress=False)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 1
    front = nas_theseus.pareto_front(wd)
    capsys.readouterr()
    assert main(["pareto", str(wd), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert list(front["trial"]) == [r["trial"] for r in rows] and list(front["flops"]) == [r["flops"] for r in rows]
    with pytest.raises(nas_theseus.UserError, match="study.n_trials must be int"):
        nas_theseus.run_study(study_file, wd, overrides=["study.n_trials=two"])
    # continued from its work directory alone, as recorded there
    assert main(["run", str(wd), "--n-trials", "2", "--no-progress"]) == 0
    assert len(load(wd).get_trials(states=(TrialState.COMPLETE,))) == 2
    assert main(["run", str(tmp_path), "--no-progress"]) == 2
    assert "is not a study work directory" in capsys.readouterr().err
