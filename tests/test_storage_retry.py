"""The storage retry layer without a server: which errors are transient (by code, never by message words),
the retry loop, and the "did my write win" check after a retry."""

from __future__ import annotations

import sqlite3

import optuna
import pytest
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState
from sqlalchemy import exc as sa_exc

from nas_theseus.study import storage as storage_module
from nas_theseus.study.storage import is_transient, make_storage


def sqlite_error(code: int, message: str) -> sa_exc.OperationalError:
    orig = sqlite3.OperationalError(message)
    orig.sqlite_errorcode = code
    return sa_exc.OperationalError("SELECT 1", {}, orig)


class FakePgError(Exception):
    """A DB-API error as psycopg2 raises it, with its SQLSTATE."""

    def __init__(self, pgcode, message):
        super().__init__(message)
        self.pgcode = pgcode


def pg_error(pgcode, message, cls=sa_exc.OperationalError):
    return cls("SELECT 1", {}, FakePgError(pgcode, message))


@pytest.mark.parametrize("error, transient", [
    (sqlite_error(5, "database is locked"), True),
    (sqlite_error(5 | (2 << 8), "la base de données est verrouillée"), True),  # SQLITE_BUSY_SNAPSHOT, any text
    (sqlite_error(6, "database table is locked"), True),
    (sqlite_error(10, "disk I/O error"), False),  # SQLITE_IOERR: waiting does not help
    (sqlite_error(13, "database or disk is full"), False),
    (sqlite_error(8, "attempt to write a readonly database"), False),
    (sqlite_error(14, "unable to open database file (connection timeout)"), False),  # words do not decide
    (pg_error("57P01", "Beendigung der Verbindung aufgrund von Anweisung des Administrators"), True),  # German
    (pg_error("08006", "connexion perdue"), True),
    (pg_error("40P01", "deadlock detected"), True),
    (pg_error("28P01", "password authentication failed: connection refused"), False),
    (pg_error("3D000", "la base de datos «nas» no existe"), False),
    (pg_error("42601", "syntax error", cls=sa_exc.ProgrammingError), False),
    (pg_error(None, "connection to server failed: Connection refused"), True),  # libpq gives no SQLSTATE then
    (sa_exc.InvalidRequestError("timeout in the message, but a usage error"), False),
    (ValueError("connection"), False),
])
def test_is_transient_goes_by_codes(error, transient):
    assert is_transient(error) is transient


def test_is_transient_looks_through_optunas_wrapper():
    try:
        try:
            raise sqlite_error(5, "database is locked")
        except sa_exc.OperationalError as e:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from e
    except optuna.exceptions.StorageInternalError as wrapped:
        assert is_transient(wrapped)


@pytest.fixture
def storage(tmp_path, monkeypatch):
    monkeypatch.setattr(storage_module.time, "sleep", lambda s: None)
    return make_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=None, grace_period=None, max_retry=0,
                        retry_s=30)


def down_for(n: int, calls: list):
    """A storage call that finds the database locked its first ``n`` times (counted in ``calls``), then works."""
    def call():
        calls.append(1)
        if len(calls) <= n:
            raise sqlite_error(5, "database is locked")
        return "done"
    return call


def test_retry_loop_retries_transient_errors_and_raises_the_rest(storage, capsys):
    calls = []
    assert storage._call("get_all_studies", down_for(2, calls)) == "done" and len(calls) == 3
    err = capsys.readouterr().err
    assert "storage unavailable" in err and "storage reachable again" in err

    def broken():
        calls.append(1)
        raise sqlite_error(10, "disk I/O error")

    calls.clear()
    with pytest.raises(sa_exc.OperationalError):
        storage._call("get_all_studies", broken)
    assert len(calls) == 1  # not retried

    storage.retry_s = 0.0  # a budget that is spent: the transient error surfaces
    with pytest.raises(sa_exc.OperationalError):
        storage._call("get_all_studies", lambda: (_ for _ in ()).throw(sqlite_error(5, "locked")))


def test_an_outage_inside_a_trial_says_the_trial_is_still_running_here(storage, capsys):
    """What a worker prints when its storage comes back while it runs a trial (the PostgreSQL restart test
    cannot make sure that the outage lands inside one)."""
    calls = []
    once_down = down_for(1, calls)
    storage.running_trial = 7
    assert storage._call("set_trial_user_attr", once_down) == "done"
    err = capsys.readouterr().err
    assert "retrying for up to 30 s; trial 7 is still running here" in err
    assert "storage reachable again" in err and err.count("trial 7 is still running here") == 2
    storage.running_trial, calls[:] = None, []
    storage._call("get_all_studies", once_down)
    assert "still running here" not in capsys.readouterr().err  # between trials: no trial named


def test_a_retried_write_that_had_committed_counts_as_ours(storage):
    study = optuna.create_study(storage=storage)
    trial_id = study.ask()._trial_id
    real = optuna.storages.RDBStorage.set_trial_state_values
    attempts = []

    def commits_then_loses_the_reply(trial_id, state, values=None):
        attempts.append(1)
        if len(attempts) == 1:
            real(storage, trial_id, state, values)
            raise sqlite_error(5, "database is locked")  # the reply was lost after the COMMIT
        return real(storage, trial_id, state, values)  # raises: the trial is already finished

    assert storage._call("set_trial_state_values", commits_then_loses_the_reply, trial_id, TrialState.COMPLETE,
                         [1.0]) is True
    # another worker's write reached the trial first: the retry must not claim it
    other = study.ask()._trial_id
    real(storage, other, TrialState.FAIL)
    attempts.clear()

    def fails_before_committing_then_finds_it_finished(trial_id, state, values=None):
        attempts.append(1)
        if len(attempts) == 1:
            raise sqlite_error(5, "database is locked")
        return real(storage, trial_id, state, values)

    with pytest.raises(UpdateFinishedTrialError):
        storage._call("set_trial_state_values", fails_before_committing_then_finds_it_finished, other,
                      TrialState.COMPLETE, [1.0])


def test_an_optuna_without_the_wrapped_methods_is_refused():
    from nas_theseus.study.storage import check_wrapped_methods

    check_wrapped_methods()  # this Optuna has them all

    class Renamed:
        pass

    with pytest.raises(ImportError, match="does not have: create_new_study"):
        check_wrapped_methods(Renamed)
