"""The trial budget as the storage's truth: a trial starts only while the trials that count plus those running
stay below it.

Optuna's own budget (``n_trials``, ``MaxTrialsCallback``) is counted when a trial ends, so W workers that each
see n − 1 finished trials all start one: up to n + W − 1 trials. Here the count is taken where trials are handed
out, under the work directory's ask lock (:class:`~nas_theseus.study.owners.LocalOwners`): every worker of a work
directory checks and starts in turn, so exactly n count. A worker that finds the budget taken by running trials
waits and checks again (a running trial that fails without counting, an interrupted one, gives its place back),
so the study never stops short either. Workers on several machines, each with its own work directory and ask
lock, can each pass the check at the same moment: up to one trial more per further machine.
"""

from __future__ import annotations

import logging
import time
import warnings

import optuna
from optuna.trial import TrialState

from .objective import REPEAT_OF

logger = logging.getLogger(__name__)
POLL_S = 1.0  # how often a worker whose budget is taken by running trials checks again


class BudgetReached(Exception):
    """No trial may start: the budget is met (or the run's deadline passed while waiting for it)."""


def counts(trial) -> bool:
    """Whether a finished trial counts toward the budget: COMPLETE (but a repeat of an earlier candidate, which
    is answered from it), PRUNED, and FAIL with a recorded reason (not an interrupted or abandoned one)."""
    if trial.state == TrialState.COMPLETE:
        return REPEAT_OF not in trial.user_attrs
    if trial.state == TrialState.PRUNED:
        return True
    return trial.state == TrialState.FAIL and "fail_reason" in trial.user_attrs


def finished_trials(study: optuna.Study) -> int:
    """Trials that count toward the budget (see :func:`counts`)."""
    return sum(counts(t) for t in study.get_trials(deepcopy=False))


class Budget:
    """``target`` counted trials for a study; :meth:`may_start` is asked under the ask lock before each trial."""

    def __init__(self, study: optuna.Study, target: int, *, deadline: float | None = None):
        self.study, self.target, self.deadline = study, target, deadline
        self._said = False

    def may_start(self) -> bool:
        """True when one more trial fits (counted + running < target); False when running trials hold the rest
        of it (wait, then ask again); raises :class:`BudgetReached` when the counted trials meet it or the
        deadline has passed."""
        trials = self.study.get_trials(deepcopy=False)
        counted = sum(counts(t) for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if counted >= self.target:
            raise BudgetReached(f"{counted} of {self.target} trials finished")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise BudgetReached("the run's timeout passed")
        if counted + running < self.target:
            self._said = False
            return True
        if not self._said:
            self._said = True
            logger.info("budget: %d finished and %d running of %d trials; waiting for a running trial to end",
                        counted, running, self.target)
        return False

    def wait(self) -> None:
        """Between two checks: dead workers' trials are swept (they give their place back), then a pause."""
        with warnings.catch_warnings():  # "experimental since 2.9": Optuna's one sweep of stale trials
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)
        time.sleep(POLL_S)
