"""The local-owner records: a dead worker of this machine (its slot lock free) gives its RUNNING trial up at
once, also when it died between Optuna creating the trial and recording it; a live worker's trial is kept."""

from __future__ import annotations

import json
import socket
import time

import optuna
import pytest
from optuna.trial import TrialState

from nas_theseus.study.owners import DIED, LocalOwners
from nas_theseus.study.storage import make_storage
from nas_theseus.utils.locks import Slot

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")


def storage_and_study(tmp_path):
    storage = make_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=60, grace_period=120, max_retry=3,
                           retry_s=10)
    return storage, optuna.create_study(study_name="s", storage=storage)


def test_dead_workers_trials_are_stale_at_once_and_live_ones_are_not(tmp_path):
    storage, study = storage_and_study(tmp_path)
    folder = tmp_path / "workers"
    live_slot = Slot(folder)                      # slot 0: a live worker (this process holds its lock)
    live = LocalOwners(folder, live_slot, "live")
    live_trial = live.wrap_ask(study.ask)()
    dead_slot = Slot(folder)                      # slot 1: recorded a trial, then died (lock released)
    dead = LocalOwners(folder, dead_slot, "dead")
    dead_trial = dead.wrap_ask(study.ask)()
    dead_slot.release()
    # slot 2: died inside ask, after Optuna created the trial and before the record named it
    (folder / "slot-2.lock").touch()
    (folder / "slot-2.json").write_text(json.dumps({"worker": "asker", "host": socket.gethostname(), "pid": 1,
                                                    "asking_since": time.time()}))
    orphan = study.ask()                          # RUNNING, no worker attribute
    me = LocalOwners(folder, Slot(folder), "me")  # takes slot 1 and inherits the dead record
    storage.local_owners = me
    stale = set(storage._get_stale_trial_ids(study._study_id))
    assert stale == {dead_trial._trial_id, orphan._trial_id}
    assert live_trial._trial_id not in stale
    for t in (dead_trial, orphan):
        assert "died while it ran this trial" in storage.get_trial(t._trial_id).user_attrs[DIED]
    # the sweep through Optuna: failed and re-enqueued once; a second sweep finds nothing new
    optuna.storages.fail_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials()}
    assert states[dead_trial.number] == TrialState.FAIL and states[orphan.number] == TrialState.FAIL
    assert states[live_trial.number] == TrialState.RUNNING
    assert sum(s == TrialState.WAITING for s in states.values()) == 2
    assert storage._get_stale_trial_ids(study._study_id) == []  # idempotent: failed trials are skipped


def test_records_of_another_host_are_left_to_heartbeats(tmp_path):
    storage, study = storage_and_study(tmp_path)
    folder = tmp_path / "workers"
    slot = Slot(folder)
    other = LocalOwners(folder, slot, "elsewhere")
    trial = other.wrap_ask(study.ask)()
    record = json.loads((folder / "slot-0.json").read_text())
    (folder / "slot-0.json").write_text(json.dumps({**record, "host": "another-host"}))
    slot.release()
    storage.local_owners = LocalOwners(folder, Slot(folder), "me")
    assert trial._trial_id not in storage._get_stale_trial_ids(study._study_id)
