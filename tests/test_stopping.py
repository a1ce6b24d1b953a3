"""A worker's stop signal (nas_theseus/study/stopping.py), without races: the signal is delivered by calling the
handler where a real one could land. Inside a trial it interrupts it; anywhere else it only marks the worker
stopping, which then asks for no further trial and gives back a trial it asked but did not start. The same with
real processes and signals: tests/test_launcher.py, tests/test_workers.py."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from nas_theseus.study import runner
from nas_theseus.study.budget import finished_trials
from nas_theseus.study.clean import RESUMES
from nas_theseus.study.owners import LocalOwners
from nas_theseus.study.stopping import NotStarted, Stopped, StopSignal
from nas_theseus.study.storage import make_storage
from nas_theseus.utils.locks import Slot


def signal_arrives(stop: StopSignal) -> None:
    stop.handler(signal.SIGTERM, None)


def stopped_by(kind: type, e: pytest.ExceptionInfo) -> bool:
    """Every stop is a KeyboardInterrupt, caught as one here: one of another kind escaping ``pytest.raises``
    would end the whole test session as Ctrl-C does."""
    return type(e.value) is kind


def worker(tmp_path, monkeypatch, study: optuna.Study, stop: StopSignal, run_trial):
    """A worker's ask (its record, the stop check under the ask lock) and objective, with ``run_trial`` for
    the trial's own work."""
    monkeypatch.setattr(runner, "run_trial", run_trial)
    monkeypatch.setattr(runner, "set_threads", lambda config: 1)
    slot = Slot(tmp_path / "workers")
    study.ask = LocalOwners(tmp_path / "workers", slot, "w").wrap_ask(study.ask, stop=stop)
    objective = runner._objective(None, None, None, None, study, SimpleNamespace(), runner._Loop(bar=None), stop,
                                  progress=False, worker="w")
    return objective, slot


def test_a_signal_interrupts_a_trial_once_and_elsewhere_only_marks_the_worker_stopping():
    stop = StopSignal()
    with stop.trial(), pytest.raises(KeyboardInterrupt):
        signal_arrives(stop)
    assert stop.requested
    signal_arrives(stop)  # a second one (torchrun's after a lost rank), or one between trials: no exception
    with pytest.raises(KeyboardInterrupt) as e:
        stop.check()
    assert stopped_by(Stopped, e)
    with pytest.raises(KeyboardInterrupt) as e, stop.trial():
        pytest.fail("a trial started after the signal")
    assert stopped_by(NotStarted, e)


def test_a_worker_stopped_before_its_next_ask_asks_for_no_trial(tmp_path, monkeypatch):
    study, stop, ran = optuna.create_study(), StopSignal(), []

    def run_trial(trial, *args, **kwargs):
        ran.append(trial.number)
        return 1.0

    def after_trial(study, trial):
        signal_arrives(stop)  # lands after the trial completed, before the next ask

    objective, slot = worker(tmp_path, monkeypatch, study, stop, run_trial)
    with pytest.raises(KeyboardInterrupt) as e:
        study.optimize(objective, n_trials=5, callbacks=[after_trial])
    slot.release()
    assert stopped_by(Stopped, e)
    assert ran == [0] and [t.state for t in study.get_trials()] == [TrialState.COMPLETE]  # none asked after it


def test_a_trial_asked_just_before_the_signal_goes_back_without_starting(tmp_path, monkeypatch):
    study, stop, ran = optuna.create_study(), StopSignal(), []
    study.enqueue_trial({"x": 0.5}, user_attrs={RESUMES: 7})  # e.g. an interrupted trial waiting to resume
    objective, slot = worker(tmp_path, monkeypatch, study, stop, lambda trial, *a, **k: ran.append(trial.number))
    asked = study.ask

    def ask_then_signal(*args, **kwargs):
        trial = asked(*args, **kwargs)
        signal_arrives(stop)  # after the ask, before the objective: outside a trial
        return trial

    study.ask = ask_then_signal
    with pytest.raises(KeyboardInterrupt) as e:
        study.optimize(objective, n_trials=5)
    slot.release()
    assert stopped_by(NotStarted, e) and ran == [] and e.value.requeued_trial == 0
    given_back, again = study.get_trials()
    assert given_back.state == TrialState.FAIL and given_back.user_attrs[runner.REQUEUED]
    assert again.state == TrialState.WAITING and again.system_attrs["fixed_params"] == {"x": 0.5}
    assert again.user_attrs[RESUMES] == 7  # what the given-back trial would have resumed
    assert finished_trials(study) == 0  # counted for nothing


def test_a_trial_interrupted_inside_comes_back_with_all_its_parameters(tmp_path, monkeypatch):
    study, stop = optuna.create_study(), StopSignal()
    study.enqueue_trial({"x": 0.5, "y": 2})

    def run_trial(trial, *args, **kwargs):
        trial.suggest_float("x", 0, 1)  # "y" not suggested yet when the signal comes
        signal_arrives(stop)

    objective, slot = worker(tmp_path, monkeypatch, study, stop, run_trial)
    with pytest.raises(KeyboardInterrupt) as e:
        study.optimize(objective, n_trials=5)
    slot.release()
    assert stopped_by(KeyboardInterrupt, e)  # the signal's own, inside the trial
    interrupted, again = study.get_trials()
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs[runner.REQUEUED]
    assert again.system_attrs["fixed_params"] == {"x": 0.5, "y": 2} and again.user_attrs[RESUMES] == 0


def test_a_signal_during_a_storage_call_in_a_trial_interrupts_once_the_call_has_ended(tmp_path):
    storage = make_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=60, grace_period=120, max_retry=3,
                           retry_s=10)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    stop = storage.stop = StopSignal()

    def write_as_the_signal_comes():
        signal_arrives(stop)  # lands in the call: a transaction cut in two would leave the session unusable
        storage.set_trial_user_attr(trial._trial_id, "written", True)

    with pytest.raises(KeyboardInterrupt) as e, stop.trial():
        storage._call("a write", write_as_the_signal_comes)
        pytest.fail("the trial went on after the signal")
    assert stopped_by(KeyboardInterrupt, e) and "storage call" in str(e.value)
    assert study.get_trials()[0].user_attrs == {"written": True}  # the call ended first
    study.tell(trial, state=TrialState.FAIL)  # and the session is usable


def test_ctrl_c_stops_a_single_run_as_sigterm_does_and_a_second_one_at_once(monkeypatch):
    stop = StopSignal()
    stop.handler(signal.SIGINT, None)  # between trials: it only marks the worker stopping
    assert stop.requested
    with pytest.raises(KeyboardInterrupt) as e:
        stop.handler(signal.SIGINT, None)  # pressed again: at once, wherever the worker is
    assert str(e.value) == "a second Ctrl-C"
    stop.handler(signal.SIGTERM, None)  # a second SIGTERM (torchrun's after a lost rank) still waits
    for handler in (signal.default_int_handler, signal.SIG_IGN):  # as in a terminal; as in a script's background
        previous = signal.signal(signal.SIGINT, handler)
        try:
            with stop.on_signals():
                assert signal.getsignal(signal.SIGTERM) == stop.handler
                # Ctrl-C handled as SIGTERM is, unless the run was started with it ignored: then it stays so
                assert signal.getsignal(signal.SIGINT) == (stop.handler if handler is not signal.SIG_IGN else handler)
            assert signal.getsignal(signal.SIGINT) is handler
        finally:
            signal.signal(signal.SIGINT, previous)
