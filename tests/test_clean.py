"""`nas-theseus clean` and `study.checkpoint_cap` on a real small study's work directory: what goes (off-path
checkpoints, the least recently used beyond a size, stale temp files), what never goes (files not ours, anything
outside checkpoints/, checkpoints in use), and the dry run."""

from __future__ import annotations

import os
import shutil
import time

import pytest
from optuna.trial import TrialState
from test_study_cli import load, toml_table, write_study

from nas_theseus.cli import main
from nas_theseus.convert.checkpoints import CheckpointStore
from nas_theseus.utils.sizes import format_size

CHEAP = {"conv1.width": 16, "conv2.width": 16, "conv3.width": 16, "order.0": 0, "order.1": 0}
WIDE = {**CHEAP, "conv1.width": 256, "conv2.width": 256}
DAY = 24 * 3600


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """A finished 2-trial study: trial 0 complete (3 stages and fine-tuning on its path), trial 1 pruned after its
    first stage (that checkpoint on no complete trial's path), as in test_study_cli's pruning test."""
    tmp = tmp_path_factory.mktemp("study")
    study_file, wd = write_study(tmp, n_trials=2), tmp / "wd"
    text = study_file.read_text().replace('method = "not"', f'method = "not"\nenqueue = [{toml_table(CHEAP)}, '
                                                          f'{toml_table(WIDE)}]')
    text = text.replace('latency_ms = "minimize"\n', "", 1)
    study_file.write_text(text + '\n[pruning]\nenabled = true\nmargin = -1.0\nstages = "all"\n')
    assert main(["run", str(study_file), "--workdir", str(wd), "--no-progress"]) == 0
    return wd


@pytest.fixture
def wd(study_dir, tmp_path):
    """A copy of the study's work directory (its storage's path rewritten), with files that are not ours: one in
    checkpoints/ (and a look-alike name, a link) and one beside it; and a stale and a fresh temp file."""
    wd = tmp_path / "wd"
    shutil.copytree(study_dir, wd, symlinks=True)
    meta = (wd / "study.json").read_text().replace(str(study_dir), str(wd))
    (wd / "study.json").write_text(meta)
    ckpt = wd / "checkpoints"
    (ckpt / "notes.txt").write_text("mine")
    (ckpt / "ABCDEF0123456789.ckpt").write_bytes(b"x" * 100)  # not a name CheckpointStore writes
    (ckpt / "0123456789abcdef.ckpt").symlink_to(wd / "study.json")
    (wd / "mine.bin").write_bytes(b"y" * 100)
    stale, fresh = ckpt / ".0123456789abcdef.k1l2m3n4.tmp.ckpt", ckpt / ".fedcba9876543210.a1b2c3d4.tmp.ckpt"
    stale.write_bytes(b"z" * 300)
    fresh.write_bytes(b"w" * 200)  # being written: never touched
    _age(stale, DAY)
    return wd


def _age(path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t), follow_symlinks=False)


def _ours(wd) -> dict[str, int]:
    from nas_theseus.study.clean import CHECKPOINT

    return {p.stem: p.stat().st_size for p in (wd / "checkpoints").iterdir()
            if CHECKPOINT.fullmatch(p.name) and not p.is_symlink()}


def _listing(wd) -> set[str]:
    """Every path under ``wd`` but SQLite's journal files (``study.db-wal``, ``-shm``, ``-journal``), which SQLite
    itself makes and removes as the database is opened (older versions of the stack leave them after a read)."""
    return {str(p.relative_to(wd)) for p in wd.rglob("*")
            if not p.name.endswith(("-wal", "-shm", "-journal"))}


def _paths(wd) -> tuple[list[str], list[str]]:
    complete, pruned = load(wd).trials[:2]
    assert complete.state == TrialState.COMPLETE and pruned.state == TrialState.PRUNED
    return complete.user_attrs["checkpoints"], [k for k in _ours(wd) if k not in complete.user_attrs["checkpoints"]]


def _clean(capsys, *args) -> str:
    assert main(["clean", *map(str, args)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out  # one summary line
    return out


def test_a_complete_trial_records_its_path_and_a_load_marks_a_checkpoint_used(wd):
    path, off = _paths(wd)
    assert len(path) == 3 + 1 and set(path) | set(off) == set(_ours(wd)) and len(off) == 1  # trial 1's stage
    victim = wd / "checkpoints" / f"{path[0]}.ckpt"
    _age(victim, DAY)
    assert CheckpointStore(wd / "checkpoints").load(path[0]) is not None
    assert time.time() - victim.stat().st_mtime < 60  # what least-recently-used goes by


def test_dry_run_deletes_nothing_and_reports_the_bytes(wd, capsys):
    before, sizes = _listing(wd), _ours(wd)
    _, off = _paths(wd)
    out = _clean(capsys, wd, "--dry-run")[len(f"{wd / 'checkpoints'}: "):]
    assert _listing(wd) == before
    kept = sum(sizes.values()) - sizes[off[0]]
    assert out.startswith(f"would remove 2 file(s), {format_size(sizes[off[0]] + 300)}: "
                          f"1 off path ({format_size(sizes[off[0]])}), 1 stale temp (300 B); "
                          f"would keep 4 checkpoint(s), {format_size(kept)}; 3 other file(s) left alone"), out


def test_clean_removes_exactly_the_off_path_checkpoints(wd, capsys):
    before = _listing(wd)
    path, off = _paths(wd)
    out = _clean(capsys, wd)
    assert "removed 2 file(s)" in out and "1 off path" in out and "1 stale temp" in out
    gone = before - _listing(wd)
    assert gone == {f"checkpoints/{off[0]}.ckpt", "checkpoints/.0123456789abcdef.k1l2m3n4.tmp.ckpt"}
    assert sorted(_ours(wd)) == sorted(path)
    assert "removed 0 file(s), 0 B" in _clean(capsys, wd)  # nothing more to do
    # the complete trial's conversion is still whole: rerun from its checkpoints, nothing trained
    from nas_theseus.study.clean import plan_clean

    assert not plan_clean(load(wd), wd / "checkpoints").remove["off path"]


def test_max_size_trims_the_least_recently_used(wd, capsys):
    path, _ = _paths(wd)
    sizes = _ours(wd)
    for age, key in enumerate(reversed(path)):  # the path's first stage the least recently used
        _age(wd / "checkpoints" / f"{key}.ckpt", DAY + 60 * age)
    cap = sizes[path[-1]] + sizes[path[-2]]
    out = _clean(capsys, wd, "--max-size", cap)
    assert f"2 over the cap ({format_size(sizes[path[0]] + sizes[path[1]])})" in out
    assert sorted(_ours(wd)) == sorted(path[2:])
    assert (wd / "checkpoints" / "notes.txt").read_text() == "mine" and (wd / "mine.bin").exists()
    assert (wd / "checkpoints" / "ABCDEF0123456789.ckpt").exists() and (wd / "checkpoints" / "0123456789abcdef.ckpt")
    assert _clean(capsys, wd, "--max-size", "0").startswith(f"{wd / 'checkpoints'}: removed 2 file(s)")
    assert not _ours(wd) and (wd / "study.db").exists() and (wd / "trials" / "0" / "model.safetensors").exists()
    assert (wd / "checkpoints" / ".fedcba9876543210.a1b2c3d4.tmp.ckpt").exists()  # a writer's, in flight


def test_nothing_in_use_goes_while_a_trial_runs_or_waits_to_resume(wd, capsys):
    path, off = _paths(wd)
    for key in path[:2]:
        _age(wd / "checkpoints" / f"{key}.ckpt", DAY)  # long unused; the rest used minutes ago
    study = load(wd)
    running = study.ask()  # a RUNNING trial, started now
    out = _clean(capsys, wd, "--max-size", 0)
    assert "removed 3 file(s)" in out and "0 off path" in out and "2 over the cap" in out, out
    assert "3 of them in use" in out and "the rest is in use" in out
    assert sorted(_ours(wd)) == sorted(path[2:] + off)
    study.tell(running, state=TrialState.FAIL)  # interrupted, and re-enqueued as the runner does
    study.enqueue_trial(CHEAP, user_attrs={"resumes_trial": running.number})
    assert "would remove 0 file(s)" in _clean(capsys, wd, "--max-size", 0, "--dry-run")
    _age(wd / "checkpoints" / f"{off[0]}.ckpt", DAY)
    assert "1 off path" in _clean(capsys, wd)


def test_a_folder_that_is_not_a_work_directory_is_one_line(tmp_path, capsys):
    assert main(["clean", str(tmp_path)]) == 2
    assert "is not a study work directory (no study.json)" in capsys.readouterr().err
    assert main(["clean", str(tmp_path / "missing"), "--dry-run"]) == 2
    assert "not a study work directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["clean", str(tmp_path), "--max-size", "5Q"])
    assert "--max-size must be a size such as 5G" in capsys.readouterr().err


def test_the_cap_trims_during_a_study(tmp_path, capsys):
    """A study's first trial, then the study continued with a cap (a resumable setting: no --force): after the
    next trial, the least recently used checkpoints beyond the cap are gone and the folder fits."""
    study_file, wd = write_study(tmp_path, n_trials=2), tmp_path / "wd"
    first = {**CHEAP, "conv1.width": 64}  # the second trial (CHEAP) writes less than the first did
    enqueue = f'method = "not"\nenqueue = [{toml_table(first)}, {toml_table(CHEAP)}]'
    study_file.write_text(study_file.read_text().replace('method = "not"', enqueue))
    assert main(["run", str(study_file), "--workdir", str(wd), "--n-trials", "1", "--no-progress"]) == 0
    before = _ours(wd)
    order = load(wd).trials[0].user_attrs["checkpoints"]  # the first stage the least recently used
    for age, key in enumerate(reversed(order)):
        _age(wd / "checkpoints" / f"{key}.ckpt", DAY + 60 * age)
    (wd / "checkpoints" / "notes.txt").write_text("mine")
    cap = sum(before.values())
    started = time.time()
    capsys.readouterr()
    assert main(["run", str(wd), "--set", f'study.checkpoint_cap="{cap}"', "--no-progress"]) == 0
    assert "checkpoint cap" in capsys.readouterr().err
    after = _ours(wd)
    new = load(wd).trials[1].user_attrs["checkpoints"]
    assert sum(after.values()) <= cap and set(new) <= set(after)  # the new trial's checkpoints stay
    removed = [k for k in order if k not in after]
    assert 0 < len(removed) < len(order) and removed == order[: len(removed)]  # the least recently used first
    assert max((wd / "checkpoints" / f"{k}.ckpt").stat().st_mtime for k in after) >= started
    assert (wd / "checkpoints" / "notes.txt").read_text() == "mine"


def test_a_cap_that_is_not_a_size_is_one_line(tmp_path, capsys):
    assert main(["run", str(write_study(tmp_path)), "--set", 'study.checkpoint_cap="lots"', "--no-progress"]) == 2
    assert "study.checkpoint_cap must be a size such as 5G, 500M or 2048 (bytes), got 'lots'" in \
        capsys.readouterr().err
