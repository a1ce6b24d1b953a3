"""Bad input against a finished study: each mistake is one line that says what to fix (exit code 2, no
traceback), and a failing command never modifies the good work directory it was pointed at."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState
from test_study_cli import load, write_study

from nas_theseus import load_exported
from nas_theseus.cli import main
from nas_theseus.convert import ConversionError
from nas_theseus.errors import UserError

pytestmark = pytest.mark.slow


def tree(root: Path) -> dict:
    """Every file under root with its content hash: what "not modified" means."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    study_file, wd = write_study(root, n_trials=2), root / "wd"
    assert main(["run", str(study_file), "--workdir", str(wd), "--no-progress"]) == 0
    assert main(["export", str(wd), "--trial", "0", "--out", str(root / "export")]) == 0
    return root, study_file, wd


def one_line_error(capsys, *fragments: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in err, err


@pytest.mark.parametrize("argv, fragments", [
    (["run", "{study}", "--set", "study.n_trials=two"], ["study.n_trials must be int"]),
    (["run", "{study}", "--set", "convert.steps_per_stage=1.5"], ["convert.steps_per_stage must be int"]),
    (["run", "{study}", "--set", "guide.source=\"builtin:mnist1d_cn\""], ["did you mean 'mnist1d_cnn'"]),
    (["run", "{study}", "--set", "convert.steps_per_stage=9"], ["changed since", "--force"]),
    (["export", "{wd}", "--trial", "99"], ["trial 99 is not a complete trial", "complete trials: 0, 1"]),
    (["export", "{wd}", "--trial", "0", "--out", "{wd}/trials"], ["is not an earlier export"]),
    (["pareto", "{wd}", "--format", "yaml"], None),
])
def test_failing_commands_leave_the_work_directory_alone(finished, capsys, argv, fragments):
    root, study_file, wd = finished
    before = tree(wd)
    argv = [a.format(study=study_file, wd=wd) for a in argv]
    if fragments is None:  # argparse's own usage error
        with pytest.raises(SystemExit) as e:
            main(argv + ["--no-progress"] if argv[0] == "run" else argv)
        assert e.value.code == 2
        capsys.readouterr()
    else:
        assert main(argv + (["--workdir", str(wd), "--no-progress"] if argv[0] == "run" else [])) == 2
        one_line_error(capsys, *fragments)
    assert tree(wd) == before


def test_convert_out_over_a_users_folder_is_refused_before_any_work(finished, capsys, tmp_path):
    root, study_file, wd = finished
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("my notes")
    params = json.dumps({"conv1.width": 16, "conv2.width": 16, "conv3.width": 16, "order.0": 0, "order.1": 0})
    before = tree(wd)
    assert main(["convert", str(study_file), "--workdir", str(wd), "--params", params, "--no-progress",
                 "--out", str(user)]) == 2
    one_line_error(capsys, "is not an earlier export", "nothing was written")
    assert [p.name for p in user.iterdir()] == ["notes.txt"] and (user / "notes.txt").read_text() == "my notes"
    assert tree(wd) == before  # refused before the guide, the data or the storage were opened


def test_changed_search_space_is_refused(finished, capsys, tmp_path):
    root, study_file, wd = finished
    before = tree(wd)
    space = tmp_path / "space.py"
    space.write_text(Path(load(wd).user_attrs["config"]["study"]["search_space"]).read_text() + "\n# edited\n")
    edited = tmp_path / "study.toml"
    text = study_file.read_text()
    old = load(wd).user_attrs["config"]["study"]["search_space"]
    edited.write_text(text.replace(old, str(space)))
    assert main(["run", str(edited), "--workdir", str(wd), "--no-progress"]) == 2
    one_line_error(capsys, "changed since", "--force")
    assert tree(wd) == before


def test_corrupted_export_and_unknown_format_version(finished, tmp_path):
    root, _, _ = finished
    broken = tmp_path / "broken"
    shutil.copytree(root / "export", broken)
    data = bytearray((broken / "model.safetensors").read_bytes())
    data[-16:] = b"\xff" * 16
    (broken / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupted or does not match arch.json"):
        load_exported(broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(UserError, match="corrupted"):
        load_exported(broken)
    future = tmp_path / "future"
    shutil.copytree(root / "export", future)
    arch = json.loads((future / "arch.json").read_text())
    arch["version"] = 99
    (future / "arch.json").write_text(json.dumps(arch))
    with pytest.raises(UserError, match="export format version 99"):
        load_exported(future)
    (future / "arch.json").write_text("{ not json")
    with pytest.raises(UserError, match="arch.json"):
        load_exported(future)
    assert load_exported(root / "export") is not None  # the good export is untouched


def test_unknown_block_in_a_search_space_is_one_line(tmp_path, capsys):
    space = tmp_path / "typo_space.py"
    space.write_text("from nas_theseus.convert import Candidate\nfrom nas_theseus.targets import BlockSpec\n\n"
                     "def search_space(trial, guide):\n"
                     "    return Candidate(tuple(BlockSpec.of('mpl', width=8) for _ in guide.part_names))\n")
    study_file = write_study(tmp_path)
    study_file.write_text(study_file.read_text().replace(
        str(Path(__file__).resolve().parent.parent / "search_spaces" / "mnist1d_cnn_to_mlp.py"), str(space)))
    assert main(["run", str(study_file), "--workdir", str(tmp_path / "wd"), "--no-progress"]) == 2
    one_line_error(capsys, "unknown block 'mpl' (did you mean 'mlp'?)")
    assert not (tmp_path / "wd").exists()


def test_a_non_finite_loss_fails_that_trial_and_the_study_goes_on(tmp_path, capsys, monkeypatch):
    import nas_theseus.study.objective as objective

    real, calls = objective.convert, []

    def convert_with_nan_in_the_first_trial(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ConversionError("non-finite alignment loss (nan) at stage 2, step 5")
        return real(*args, **kwargs)

    monkeypatch.setattr(objective, "convert", convert_with_nan_in_the_first_trial)
    study_file, wd = write_study(tmp_path, n_trials=2), tmp_path / "wd"
    assert main(["run", str(study_file), "--workdir", str(wd), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "trial 0 failed: ConversionError: non-finite alignment loss (nan)" in err and "Traceback" not in err
    study = load(wd)
    failed = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    assert len(failed) == 1 and "non-finite" in failed[0].user_attrs["fail_reason"]
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 1  # a recorded failure counts toward n_trials


def test_storage_url_mistakes_are_one_line_and_quick(tmp_path, capsys):
    study_file = write_study(tmp_path)
    start = time.monotonic()
    bad = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'x.db'}"
    assert main(["run", str(study_file), "--workdir", str(tmp_path / "wd"), "--storage", bad, "--no-progress"]) == 2
    one_line_error(capsys, "does not exist")
    assert main(["run", str(study_file), "--workdir", str(tmp_path / "wd2"), "--storage", "postgresql+nodriver://x/y",
                 "--no-progress"]) == 2
    one_line_error(capsys, "cannot open storage")
    assert time.monotonic() - start < 60  # refused at once, not after the retry budget


# --- no silent fallbacks ------------------------------------------------------------------------------------------
REFUSING_SPACE = '''
from nas_theseus.convert import Candidate
from nas_theseus.errors import UserError
from nas_theseus.targets import BlockSpec


def search_space(trial, guide):
    drop = trial.suggest_float("drop", 0.0, 1.0)
    if drop == 1.0:  # a value no sampler draws: only an enqueued or --params table gives it
        raise UserError("my space: drop = 1.0 drops every unit")
    overrides = {"finetune": {"max_epoch": 3}} if drop == 0.0 else {}
    return Candidate(tuple(BlockSpec.of("mlp", width=8) for _ in guide.part_names)), overrides
'''


def _study_with_space(tmp_path, text: str, **kw):
    space = tmp_path / "space.py"
    space.write_text(text)
    study_file = write_study(tmp_path, **kw)
    study_file.write_text(study_file.read_text().replace(
        str(Path(__file__).resolve().parent.parent / "search_spaces" / "mnist1d_cnn_to_mlp.py"), str(space)))
    return study_file


def test_a_search_space_refusing_given_parameters_is_its_own_line_not_does_not_fit(tmp_path, capsys):
    study_file = _study_with_space(tmp_path, REFUSING_SPACE)
    argv = ["convert", str(study_file), "--workdir", str(tmp_path / "wd"), "--no-progress", "--params"]
    assert main([*argv, '{"drop": 1.0}']) == 2
    err = capsys.readouterr().err
    assert "my space: drop = 1.0 drops every unit" in err and "does not fit" not in err and "Traceback" not in err
    assert main([*argv, '{"drop": 0.0}']) == 2  # an unknown fine-tuning override: one line, not a TypeError
    one_line_error(capsys, "overrides unknown fine-tuning setting(s) ['max_epoch'] (did you mean 'max_epochs'?)")


@pytest.mark.parametrize("edit, fragment", [
    (lambda t: t.replace('flops = "minimize"\nlatency_ms = "minimize"\n', "").replace(
        "[constraints]\nlatency_ms = 10000.0\n", ""), "have none, so it could never prune"),
    (lambda t: t.replace('method = "not"', 'method = "scratch"'), "method = 'scratch' has none"),
])
def test_pruning_that_could_never_fire_is_refused_at_load(tmp_path, capsys, edit, fragment):
    study_file = write_study(tmp_path)
    study_file.write_text(edit(study_file.read_text()) + "\n[pruning]\nenabled = true\n")
    assert main(["run", str(study_file), "--workdir", str(tmp_path / "wd"), "--no-progress"]) == 2
    one_line_error(capsys, "pruning.enabled", fragment)


def test_a_run_in_which_no_trial_completed_exits_non_zero_saying_why(tmp_path, capsys, monkeypatch):
    import nas_theseus.study.objective as objective

    def always_nan(*args, **kwargs):
        raise ConversionError("non-finite alignment loss (nan) at stage 1, step 3")

    monkeypatch.setattr(objective, "convert", always_nan)
    study_file = write_study(tmp_path, n_trials=2)
    assert main(["run", str(study_file), "--workdir", str(tmp_path / "wd"), "--no-progress"]) == 1
    assert ("no trial completed in this run: 2 failed, 0 pruned; the first failure: ConversionError: "
            "non-finite alignment loss (nan)") in capsys.readouterr().err
    # a run with nothing left to do is no failure
    assert main(["run", str(study_file), "--workdir", str(tmp_path / "wd"), "--no-progress", "--n-trials", "2"]) == 0
    capsys.readouterr()
    assert main(["trials", str(tmp_path / "wd"), "--format", "json"]) == 0  # why each trial ended so
    rows = json.loads(capsys.readouterr().out)
    assert [(r["trial"], r["state"]) for r in rows] == [(0, "FAIL"), (1, "FAIL")]
    assert all(r["note"].startswith("failed: ConversionError: non-finite alignment loss") for r in rows)
    assert main(["trials", str(tmp_path / "wd")]) == 0
    assert "   0  FAIL      [failed: ConversionError" in capsys.readouterr().out


@pytest.mark.slow
def test_single_convert_counts_flops_as_a_study_does(tmp_path, capsys, monkeypatch):
    """An operator nothing counts fails `nas-theseus convert` in one line, as it fails a study's trial, instead
    of a smaller figure (here fvcore is made to forget its linear layers)."""
    import fvcore.nn

    class NoLinear(fvcore.nn.FlopCountAnalysis):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            for op in ("aten::linear", "aten::addmm", "aten::matmul"):
                self._op_handles.pop(op, None)

    monkeypatch.setattr(fvcore.nn, "FlopCountAnalysis", NoLinear)
    study_file = write_study(tmp_path)
    params = {"conv1.width": 16, "conv2.width": 16, "conv3.width": 32, "order.0": 2, "order.1": 0}
    assert main(["convert", str(study_file), "--workdir", str(tmp_path / "wd"), "--params", json.dumps(params),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err  # the device line, then the error's one line
    assert "Traceback" not in err and err.splitlines()[-1].startswith(
        "error: convert: the network trained (its checkpoints are kept), but no FLOP count for operator(s) "
        "aten::linear")
