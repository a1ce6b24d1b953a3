"""Many workers on one SQLite study; SIGKILL and SIGTERM in the middle of stages; nothing finished is lost."""

from __future__ import annotations

import json
import signal
import socket
import time
import warnings

import pytest
from optuna.trial import TrialState
from workers import (
    finished,
    load_study,
    run_worker,
    start_worker,
    unexplained_duplicates,
    write_study,
)

from nas_theseus.convert.checkpoints import CheckpointStore
from nas_theseus.study.budget import finished_trials

pytestmark = pytest.mark.slow


def snapshot(study) -> dict:
    return {t.number: (t.params, t.values, t.user_attrs.get("test_accuracy")) for t in finished(study)}


def assert_checkpoints_whole(workdir):
    store = CheckpointStore(workdir / "checkpoints")
    files = sorted(f for f in (workdir / "checkpoints").glob("*.ckpt") if not f.name.startswith("."))
    assert files, "no stage checkpoint was written"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unreadable checkpoint warns: fail instead
        for f in files:
            assert store.load(f.stem) is not None, f


def test_workers_share_the_sqlite_study(tmp_path):
    n = 5
    study_file, wd = write_study(tmp_path, n), tmp_path / "wd"
    rc, _, err = run_worker(study_file, wd, "--n-trials", "0")  # trains the guide once
    workers = [start_worker(study_file, wd) for _ in range(3)]
    outs = [w.communicate(timeout=600) for w in workers]
    for w, (_, err) in zip(workers, outs):
        assert w.returncode == 0, err
        assert "locked" not in err and "Traceback" not in err, err
    study = load_study(wd)
    assert finished_trials(study) == n  # a trial starts only within the budget (counted + running < n)
    assert not unexplained_duplicates(study)
    host = socket.gethostname()
    assert {t.user_attrs["worker"] for t in finished(study)} <= {f"{host}/{i}" for i in range(3)}


def kill_once_in_a_trial(study_file, wd, rng) -> int:
    """Start a worker and SIGKILL it at a random moment of a trial: either at a random alignment step or just
    before a random checkpoint's os.replace (test hooks), or after a random delay once its record names a
    trial (any moment: stages, fine-tuning, measuring, writing the trial's files, telling the storage)."""
    how = rng.choice(["step", "replace", "timed"])
    if how == "step":
        proc = start_worker(study_file, wd, NAS_THESEUS_TEST_HOOK=f"stage_step:kill:{rng.randint(1, 40)}")
    elif how == "replace":
        proc = start_worker(study_file, wd, NAS_THESEUS_TEST_HOOK=f"before_replace:kill:{rng.randint(1, 4)}")
    else:
        proc = start_worker(study_file, wd)
        deadline = time.monotonic() + 120
        while not (_record(wd).get("pid") == proc.pid and "trial" in _record(wd)) and proc.poll() is None:
            assert time.monotonic() < deadline, "the worker never started a trial"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, (how, proc.returncode, err)
    return proc.returncode


def _record(wd) -> dict:
    try:
        return json.loads((wd / "workers" / "slot-0.json").read_text())
    except (OSError, ValueError):
        return {}


def test_ten_sigkills_each_restarted_at_once_lose_nothing(tmp_path):
    """Each kill is followed at once by a new run (no wait for the heartbeat grace period), then a clean run:
    finished trials never change, every killed trial is retried (by the very next run, which sees the dead
    worker's free slot lock) and resumes from its last finished stage, and no trial stays RUNNING."""
    import random

    rng = random.Random(0)
    study_file, wd = write_study(tmp_path, 14), tmp_path / "wd"
    rc, _, err = run_worker(study_file, wd, "--n-trials", "0")  # trains the guide once
    assert rc == 0, err
    kept = {}
    for _ in range(10):
        kill_once_in_a_trial(study_file, wd, rng)
        study = load_study(wd)
        now = snapshot(study)
        assert {k: now[k] for k in kept} == kept, "a finished trial was lost or changed"
        kept = now
        assert_checkpoints_whole(wd)
    rc, _, err = run_worker(study_file, wd)
    assert rc == 0 and "Traceback" not in err, err
    study = load_study(wd)
    assert {k: snapshot(study)[k] for k in kept} == kept
    assert not [t.number for t in study.get_trials() if t.state == TrialState.RUNNING]
    killed = [t for t in study.get_trials() if t.state == TrialState.FAIL and "fail_reason" not in t.user_attrs]
    assert 8 <= len(killed) <= 10  # a timed kill may land between two trials
    resumed_any = False
    for t in killed:
        assert "died while it ran this trial" in t.user_attrs.get("worker_died", ""), t.user_attrs
        retry = next(r for r in study.get_trials() if r.system_attrs.get("retry_history", [None])[-1] == t.number)
        assert retry.params == t.params and retry.state in (TrialState.COMPLETE, TrialState.FAIL)
        done_before = len(t.user_attrs.get("stages", []))  # stages the killed trial had finished
        if retry.state == TrialState.COMPLETE:
            flags = [s["resumed"] for s in retry.user_attrs["stages"]]
            assert flags[:done_before] == [True] * done_before, (t.number, flags, done_before)
            resumed_any |= done_before > 0
    assert resumed_any
    assert not unexplained_duplicates(study)
    assert_checkpoints_whole(wd)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_sigterm_stops_inside_the_running_stage_and_requeues(tmp_path, sig):
    study_file, wd = write_study(tmp_path, 2), tmp_path / "wd"
    long_stages = ("--set", "convert.steps_per_stage=400")  # the signal lands inside a trial, not between
    run_worker(study_file, wd, "--n-trials", "0", *long_stages)
    worker = start_worker(study_file, wd, *long_stages)
    deadline = time.monotonic() + 300
    while not list(wd.glob("checkpoints/[0-9a-f]*.ckpt")):  # the first stage finished: we are mid-trial
        assert worker.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    worker.send_signal(sig)
    _, err = worker.communicate(timeout=60)  # a hang guard: what the test means is below
    assert worker.returncode == 130 and "re-enqueued" in err and "Traceback" not in err, err
    study = load_study(wd)
    waiting = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].user_attrs["resumes_trial"] == 0
    stopped = study.trials[0]  # stopped inside its second stage: the first one done, no other
    assert len(stopped.user_attrs["stages"]) == 1 and len(list(wd.glob("checkpoints/[0-9a-f]*.ckpt"))) == 1
    rc, _, err = run_worker(study_file, wd, *long_stages)
    assert rc == 0, err
    study = load_study(wd)
    resumed = [t for t in finished(study) if t.user_attrs.get("resumes_trial") == 0]
    assert resumed and resumed[0].user_attrs["stages"][0]["resumed"]


def test_two_sqlite_workers_never_take_the_same_queued_trial(tmp_path, monkeypatch):
    """Taking a WAITING trial reads its state, then writes RUNNING; with deferred SQLite transactions two
    workers could both read WAITING. The read is slowed down here to open that window wide."""
    import threading

    import optuna
    from optuna.storages import RDBStorage

    from nas_theseus.study.storage import make_storage

    url = f"sqlite:///{tmp_path / 's.db'}"
    a, b = (make_storage(url, heartbeat_interval=1, grace_period=3, max_retry=3, retry_s=30) for _ in range(2))
    study = optuna.create_study(study_name="s", storage=a)
    study.enqueue_trial({"x": 1.0})
    trial_id = study.get_trials()[0]._trial_id
    real = RDBStorage.check_trial_is_updatable

    def slow(self, tid, state):
        real(self, tid, state)
        time.sleep(0.5)

    monkeypatch.setattr(RDBStorage, "check_trial_is_updatable", slow)
    took = {}
    threads = [threading.Thread(target=lambda n=n, s=s: took.__setitem__(n, s.set_trial_state_values(
        trial_id, TrialState.RUNNING))) for n, s in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(took.values()) == [False, True]
