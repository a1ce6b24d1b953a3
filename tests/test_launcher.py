"""``nas-theseus run --workers N --devices ...``: N worker processes of one study on this machine."""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

import pytest
from optuna.trial import TrialState
from workers import finished, load_study, worker_env, write_study

from nas_theseus.cli import main
from nas_theseus.errors import UserError
from nas_theseus.study.budget import finished_trials
from nas_theseus.study.launcher import assign, parse_devices
from nas_theseus.study.launcher import worker_env as launched_env


def test_devices_are_assigned_round_robin():
    assert assign(None, ["cuda:0", "cuda:1"]) == ["cuda:0", "cuda:1"]
    assert assign(5, ["cuda:0", "cuda:1"]) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert assign(2, ["cpu"]) == ["cpu", "cpu"]
    with pytest.raises(UserError, match="at least 1"):
        assign(0, ["cpu"])


def test_workers_named_by_the_environment_get_a_name_each(monkeypatch):
    monkeypatch.setenv("NAS_THESEUS_WORKER", "7")  # e.g. a job array's task id
    assert [launched_env(i)["NAS_THESEUS_WORKER"] for i in range(2)] == ["7/0", "7/1"]
    monkeypatch.delenv("NAS_THESEUS_WORKER")
    assert "NAS_THESEUS_WORKER" not in launched_env(0)  # then <host>/<slot>, as for any worker


def test_devices_are_checked_once_before_any_worker_starts(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert parse_devices("cpu, cpu") == ["cpu", "cpu"]
    for text, message in (("cuda:0,cpu", "CUDA is not available"), ("gpu0", "unknown device"),
                          (",", "names no device"), ("auto", "leave it out")):
        with pytest.raises(UserError, match=message):
            parse_devices(text)


def test_device_and_workers_together_are_one_line(tmp_path, capsys):
    study = write_study(tmp_path, 2)
    assert main(["run", str(study), "--workdir", str(tmp_path / "wd"), "--workers", "2", "--device", "cpu"]) == 2
    assert "--devices" in capsys.readouterr().err


def launcher(study, wd, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "nas_theseus", "run", str(study), "--workdir", str(wd), "--no-progress", *args]
    return subprocess.Popen(cmd, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_workers_share_the_study_and_the_front_is_printed_once(tmp_path):
    n = 4
    study_file, wd = write_study(tmp_path, n), tmp_path / "wd"
    proc = launcher(study_file, wd, "--workers", "2", "--devices", "cpu")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "started 2 workers (cpu, cpu" in err and "Traceback" not in err, err
    lines = out.splitlines() + err.splitlines()
    assert any(line.startswith("[0 cpu] ") for line in lines) and any(line.startswith("[1 cpu] ") for line in lines)
    assert out.count("Pareto front:") == 1, out  # the launcher's, not one per worker
    study = load_study(wd)
    done = finished(study)
    assert finished_trials(study) == n  # a trial starts only within the budget (counted + running < n)
    host = socket.gethostname()
    assert {t.user_attrs["worker"] for t in done} == {f"{host}/0", f"{host}/1"}  # both ran trials
    assert all(t.state != TrialState.RUNNING for t in study.get_trials())


def _running_trials(wd) -> dict[int, int]:
    """The trial each worker's record names, by slot."""
    running = {}
    for path in (wd / "workers").glob("slot-*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if "trial" in record:
            running[int(path.stem.split("-")[1])] = record["trial"]
    return running


def _ended(trial) -> bool:
    """Finished as a trial does, not stopped: complete, pruned, or failed for a recorded reason."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or "fail_reason" in trial.user_attrs


def _params(trial) -> str:
    """A trial's parameters, those it suggested and those it was enqueued with (one that never started has
    only these)."""
    return json.dumps({**trial.system_attrs.get("fixed_params", {}), **trial.params}, sort_keys=True)


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_and_their_trials_come_back(tmp_path):
    study_file, wd = write_study(tmp_path, 40), tmp_path / "wd"
    proc = launcher(study_file, wd, "--workers", "2", "--devices", "cpu,cpu")
    deadline = time.monotonic() + 300
    while len(running := _running_trials(wd)) < 2:  # both workers in a trial
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    signalled = datetime.datetime.now()  # as Optuna stamps a trial's start
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert time.monotonic() - t0 < 60, err  # within seconds (a stage step, a checkpoint), not a whole trial
    assert "stopping 2 workers" in err and "re-enqueued" in err, err
    study = load_study(wd)
    trials = study.get_trials()
    every = [(t.number, t.state, t.datetime_start, t.user_attrs) for t in trials]
    assert not [t for t in trials if t.state == TrialState.RUNNING], every
    interrupted = [t for t in trials if t.user_attrs.get("requeued_as_waiting")]
    numbers = {t.number for t in interrupted}
    # each trial running at the signal was interrupted, or ended right at it (a legitimate outcome); not all ended
    assert all(n in numbers or _ended(trials[n]) for n in running.values()), (running, every)
    assert interrupted, every
    # no worker started a trial after the signal: one asked in the instant before it heard the signal was given
    # back (re-enqueued) or interrupted, never run on, and no worker asked for another
    late = [t for t in trials if t.datetime_start is not None and t.datetime_start > signalled
            and t.number not in running.values()]
    assert {t.number for t in late} <= numbers, (signalled, every)
    assert max(Counter(t.user_attrs.get("worker") for t in late).values(), default=0) <= 1, (signalled, every)
    # each interrupted trial comes back in the next run: its parameters wait, resuming an interrupted trial
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert {_params(t) for t in waiting} == {_params(t) for t in interrupted}, every
    assert {t.user_attrs["resumes_trial"] for t in waiting} <= numbers, every
    kept = {t.number: t.values for t in finished(study)}
    proc = launcher(study_file, wd, "--workers", "2", "--devices", "cpu", "--n-trials", str(len(kept) + len(waiting)))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    study = load_study(wd)
    assert {t.number: t.values for t in finished(study) if t.number in kept} == kept  # nothing finished is lost
    assert not [t for t in study.get_trials() if t.state == TrialState.WAITING]  # the re-enqueued ones ran


@pytest.mark.slow
def test_a_worker_that_dies_is_reported_and_its_trial_is_taken_over(tmp_path):
    n = 6
    study_file, wd = write_study(tmp_path, n), tmp_path / "wd"
    proc = launcher(study_file, wd, "--workers", "2", "--devices", "cpu")
    deadline = time.monotonic() + 300
    while set(_running_trials(wd)) != {0, 1}:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    record = json.loads((wd / "workers" / "slot-1.json").read_text())
    victim = record["trial"]
    os.kill(record["pid"], signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err
    assert "was killed by SIGKILL; its trial is taken over" in err, err
    study = load_study(wd)
    assert len(finished(study)) >= n  # the other worker filled the budget
    assert not [t for t in study.get_trials() if t.state == TrialState.RUNNING]
    retried = [t for t in study.get_trials() if t.system_attrs.get("failed_trial") == victim
               or t.user_attrs.get("resumes_trial") == victim]
    assert retried and retried[0].state == TrialState.COMPLETE  # the killed worker's trial ran again
