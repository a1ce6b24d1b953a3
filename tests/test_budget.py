"""The trial budget is checked where trials are handed out (nas_theseus/study/budget.py): counted + running
trials stay below n, a worker whose budget is held by running trials waits for them, and gets a place back when
one of them ends without counting (the multi-process studies: tests/test_workers.py, tests/test_launcher.py)."""

from __future__ import annotations

import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from nas_theseus.study import budget as budget_module
from nas_theseus.study.budget import Budget, BudgetReached, finished_trials
from nas_theseus.study.owners import LocalOwners
from nas_theseus.utils.locks import Slot


def test_a_trial_starts_only_while_counted_and_running_trials_stay_below_the_budget():
    study = optuna.create_study()
    gate = Budget(study, 3)
    first, second = study.ask(), study.ask()  # two running elsewhere
    assert gate.may_start()  # 0 counted + 2 running < 3
    third = study.ask()
    assert not gate.may_start()  # 3 running: the rest of the budget is taken, wait
    study.tell(first, 1.0)
    study.tell(second, state=TrialState.FAIL)  # interrupted (no recorded reason): its place comes back
    assert finished_trials(study) == 1 and gate.may_start()
    study.tell(third, state=TrialState.PRUNED)
    repeat = study.ask()
    repeat.set_user_attr("repeat_of", 0)
    study.tell(repeat, 1.0)  # answered from an earlier trial: counts toward nothing
    failed = study.ask()
    failed.set_user_attr("fail_reason", "ConversionError: non-finite loss")
    study.tell(failed, state=TrialState.FAIL)  # a recorded reason: it counts
    with pytest.raises(BudgetReached, match="3 of 3 trials finished"):
        gate.may_start()


def test_a_passed_deadline_ends_the_wait():
    study = optuna.create_study()
    study.ask()
    with pytest.raises(BudgetReached, match="timeout"):
        Budget(study, 1, deadline=time.monotonic() - 1).may_start()


def test_an_ask_waits_outside_the_lock_until_a_running_trial_gives_its_place_back(tmp_path, monkeypatch):
    monkeypatch.setattr(budget_module, "POLL_S", 0.05)
    study = optuna.create_study()
    other = study.ask()  # another worker's trial: the whole budget of 1
    slot = Slot(tmp_path)
    ask = LocalOwners(tmp_path, slot, "w").wrap_ask(study.ask, Budget(study, 1))
    got = []
    asker = threading.Thread(target=lambda: got.append(ask()))
    asker.start()
    time.sleep(0.5)
    assert not got and len(study.trials) == 1  # waiting: no second trial was made
    study.tell(other, state=TrialState.FAIL)  # interrupted: its place comes back
    asker.join(timeout=10)
    assert got and got[0].number == 1 and got[0].user_attrs["worker"] == "w"
    slot.release()
