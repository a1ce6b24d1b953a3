"""Which trial each worker of this machine runs, so the trial of a worker that died is retried at once.

Heartbeats notice a dead worker only after the grace period, and never notice one killed before its first
heartbeat. On one machine there is a sure sign instead: every worker holds the lock of its slot
(``workers/slot-N.lock``, :class:`~nas_theseus.utils.locks.Slot`) until its process ends, however it ends, and
records beside it (``workers/slot-N.json``) the trial it runs. A record whose lock is free belongs to a dead
worker; its trial, if still RUNNING, is handed to Optuna's stale-trial path (failed, then re-enqueued by
``RetryHeartbeatStaleTrialCallback``, so the retry resumes from the stage checkpoints) with the reason in the
trial's ``worker_died`` attribute.

The window between Optuna creating (or taking) a trial and the record naming it is closed by one lock per
work directory (``workers/ask.lock``), held from before ``study.ask()`` until the record is written, and by the
sweep too: a dead record that says "asking" owns the RUNNING trial that has no ``worker`` attribute and
started after it began asking.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import optuna
from filelock import lock_descriptor, unlock_descriptor
from optuna.trial import TrialState

from ..utils.files import atomic_write_text
from ..utils.locks import Slot, file_lock

DIED = "worker_died"
ASK_WINDOW_S = 60.0  # a trial that a dead "asking" record owns started within this many seconds of its ask


class LocalOwners:
    """This worker's record in ``folder`` (its slot's), and the sweep over the records of dead workers."""

    def __init__(self, folder: Path, slot: Slot, worker: str):
        self.folder, self.slot, self.worker = folder, slot, worker
        self.host = socket.gethostname()
        # the slot was free, so whatever its record says is a dead predecessor's: kept for the sweeps (which
        # are idempotent: a trial already failed is skipped)
        self._inherited = _read(self._record(slot.number))
        self._write({})

    def _record(self, number: int) -> Path:
        return self.folder / f"slot-{number}.json"

    def _write(self, state: dict) -> None:
        atomic_write_text(self._record(self.slot.number), json.dumps(
            {"worker": self.worker, "host": self.host, "pid": os.getpid(), **state}))

    def wrap_ask(self, ask: Callable[..., optuna.Trial], budget=None, stop=None) -> Callable[..., optuna.Trial]:
        """``study.ask`` that records the trial it returns (and its ``worker`` attribute) under the ask lock;
        with a ``budget`` (:class:`~nas_theseus.study.budget.Budget`), only once it says a trial may start,
        asked under the same lock (and waited for outside it); with a ``stop``
        (:class:`~nas_theseus.study.stopping.StopSignal`), none once the stop signal came (checked under the lock,
        each time, before the budget)."""
        def owned_ask(*args, **kwargs) -> optuna.Trial:
            while True:
                with file_lock(self.folder / "ask.lock"):
                    if stop is not None:
                        stop.check()
                    if budget is None or budget.may_start():
                        self._write({"asking_since": time.time()})
                        trial = ask(*args, **kwargs)
                        trial.set_user_attr("worker", self.worker)
                        self._write({"trial": trial.number})
                        return trial
                budget.wait()

        return owned_ask

    def idle(self) -> None:
        self._write({})

    def dead_trials(self, storage: optuna.storages.BaseStorage, study_id: int) -> list[int]:
        """Trial ids still RUNNING under records of dead workers of this machine (each gets its reason)."""
        found: list[int] = []
        with file_lock(self.folder / "ask.lock"):  # no live worker of this machine is between ask and record
            found += self._owned(storage, study_id, self._inherited)
            for path in sorted(self.folder.glob("slot-*.json")):
                number = int(path.stem.split("-")[1])
                if number == self.slot.number:
                    continue
                with _held_if_free(self.folder / f"slot-{number}.lock") as free:
                    if free:  # else its worker is alive
                        found += self._owned(storage, study_id, _read(path))
        return found

    def _owned(self, storage, study_id: int, record: dict) -> list[int]:
        if record.get("host") != self.host:
            return []
        if record.get("trial") is not None:
            try:
                trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, record["trial"])
            except KeyError:
                return []
            trials = [storage.get_trial(trial_id)]
        elif "asking_since" in record:
            # the trial its ask() created or took, if any: started (on this machine's clock) while it asked
            since = datetime.fromtimestamp(record["asking_since"] - 1.0)
            until = datetime.fromtimestamp(record["asking_since"] + ASK_WINDOW_S)
            trials = [t for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                      if "worker" not in t.user_attrs and t.datetime_start is not None
                      and since <= t.datetime_start <= until]
        else:
            return []
        ids = []
        for t in trials:
            if t.state != TrialState.RUNNING:
                continue
            reason = (f"worker {record.get('worker')} (pid {record.get('pid')}) on {self.host} died while it ran "
                      f"this trial (its slot lock was free); retried at once")
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                storage.set_trial_user_attr(t._trial_id, DIED, reason)
                ids.append(t._trial_id)
        return ids


@contextlib.contextmanager
def _held_if_free(path: Path):
    """Hold ``path``'s lock for the block if nobody holds it (yields True), else yield False at once."""
    if not path.exists():  # a record without its lock file was not written by a Slot: leave it
        yield False
        return
    with open(path, "a+") as f:
        if not lock_descriptor(f.fileno(), blocking=False):
            yield False
            return
        try:
            yield True
        finally:
            unlock_descriptor(f.fileno())


def _read(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
