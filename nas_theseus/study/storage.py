"""Optuna storage that survives what long multi-worker studies meet: a database restart, a busy SQLite file.

* Every storage call is retried with exponential backoff (0.5 s doubling to 10 s) while the error is a lost
  or refused connection or a locked SQLite database (:func:`is_transient`: by the driver's error code or
  SQLSTATE, never by the message), for up to ``retry_s`` seconds (``study.storage_retry``);
  the first failure and the recovery are one line each (WARNING, logger ``nas_theseus.study.storage``), naming
  the trial this worker is running.
  Heartbeats go through the same retries, so a database restart never kills the heartbeat thread (which would
  let another worker declare a live trial stale).
* PostgreSQL/MySQL engines use ``pool_pre_ping`` so connections broken by a restart are replaced on checkout.
* SQLite files are switched to WAL mode (readers never block the writer; persistent in the file) with a 60 s
  busy timeout and ``BEGIN IMMEDIATE`` transactions, so several workers on one machine share the default
  storage and never take the same queued trial.
* Known limit: a write whose COMMIT succeeded but whose reply was lost (a restart at that instant) is
  retried; for creating a trial that leaves one extra RUNNING trial without a heartbeat (never counted).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import time
import warnings
import weakref
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from ..errors import UserError

logger = logging.getLogger(__name__)

# calls that only read or that are safe to repeat; everything the study and its trials do goes through these
_RETRIED = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies", "create_new_trial", "set_trial_param",
    "get_trial_param", "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr",
    "set_trial_system_attr", "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials",
    "get_best_trial", "record_heartbeat", "get_n_trials",
    # the private entry points that Optuna's _CachedStorage calls instead of the public ones
    "_create_new_trial", "_set_trial_param", "_get_best_trial_id", "_get_trials",
)
# SQLite primary result codes worth waiting for (extended codes carry them in the low byte)
SQLITE_BUSY, SQLITE_LOCKED = 5, 6
# PostgreSQL SQLSTATEs worth retrying: connection exceptions (class 08), the server shutting down or starting
# (57P01-57P03), serialization failures and deadlocks (40001, 40P01), too many connections (53300)
TRANSIENT_SQLSTATE_CLASSES = ("08",)
TRANSIENT_SQLSTATES = ("57P01", "57P02", "57P03", "40001", "40P01", "53300")
# MySQL client/server error numbers worth retrying: can't connect (2002, 2003), server gone away or lost
# (2006, 2013), lock wait timeout (1205), deadlock (1213), too many connections (1040)
TRANSIENT_MYSQL_ERRNOS = (1040, 1205, 1213, 2002, 2003, 2006, 2013)


def _chain(e: BaseException):
    """``e``, what it wraps (SQLAlchemy's ``orig``), its cause and context: each once."""
    seen, todo = [], [e]
    while todo:
        err = todo.pop(0)
        if err is None or any(err is s for s in seen):
            continue
        seen.append(err)
        todo += [getattr(err, "orig", None), err.__cause__, err.__context__]
    return seen


def _code(err: BaseException):
    """(kind, code) of a driver error that carries one: SQLite's result code, a SQLSTATE, a MySQL errno."""
    if isinstance(err, sqlite3.Error) and getattr(err, "sqlite_errorcode", None) is not None:
        return "sqlite", err.sqlite_errorcode
    state = getattr(err, "pgcode", None) or getattr(err, "sqlstate", None)
    if isinstance(state, str) and len(state) == 5:
        return "sqlstate", state
    module = type(err).__module__ or ""
    if module.split(".")[0] in ("MySQLdb", "pymysql", "mysql") and err.args and isinstance(err.args[0], int):
        return "mysql", err.args[0]
    return None


def is_transient(e: BaseException) -> bool:
    """Whether a storage error is worth retrying, by what the driver says, never by the message's words.

    A code decides when any error in the chain carries one: SQLite BUSY / LOCKED (not I/O errors, a full or
    read-only disk, a missing file); a SQLSTATE of class 08 or 57P01-57P03, 40001, 40P01, 53300; a MySQL
    errno of a lost connection, lock timeout or deadlock. Without a code (libpq reports a failed or dropped
    connection without SQLSTATE, so a refused connection, a server restart and a login the server rejects all
    look alike), a connection that SQLAlchemy invalidated or a driver-level OperationalError / InterfaceError
    counts as transient: the first retry line names the driver's message.
    """
    chain = _chain(e)
    for err in chain:
        found = _code(err)
        if found is None:
            continue
        kind, code = found
        if kind == "sqlite":
            return code & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED)
        if kind == "sqlstate":
            return code[:2] in TRANSIENT_SQLSTATE_CLASSES or code in TRANSIENT_SQLSTATES
        return code in TRANSIENT_MYSQL_ERRNOS
    for err in chain:
        if isinstance(err, sa_exc.DBAPIError) and err.connection_invalidated:
            return True
        if isinstance(err, (sa_exc.DisconnectionError, sa_exc.TimeoutError)):
            return True
        if isinstance(err, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return True  # a driver error without a code (see above)
    return False


class ResilientRDBStorage(optuna.storages.RDBStorage):
    """``RDBStorage`` whose calls are retried through database restarts and lock contention (see module)."""

    retry_s: float = 300.0
    running_trial: int | None = None  # set by the runner, named in the log lines
    local_owners = None  # set by the runner: a LocalOwners whose dead workers' trials count as stale
    stop = None  # set by the runner: a StopSignal (stopping.py), whose interrupt waits for a call to end

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Heartbeat-stale trials (Optuna's rule), and the RUNNING trials of dead workers of this machine (whose
        slot lock is free: no need to wait for the grace period). Optuna fails both before every trial and
        re-enqueues them through ``RetryHeartbeatStaleTrialCallback``."""
        ids = self._call("_get_stale_trial_ids", functools.partial(optuna.storages.RDBStorage._get_stale_trial_ids,
                                                                   self), study_id)
        if self.local_owners is not None:
            ids += [i for i in self._call("dead_trials", self.local_owners.dead_trials, self, study_id)
                    if i not in ids]
        return ids

    def _call(self, name: str, method, *args, **kwargs):
        start, delay, attempt, announced = time.monotonic(), 0.5, 0, False
        while True:
            try:
                with self.stop.held() if self.stop is not None else contextlib.nullcontext():
                    out = method(*args, **kwargs)
            except UpdateFinishedTrialError:
                if attempt and name == "set_trial_state_values" and self._wrote(*args, **kwargs):
                    return True  # the first attempt committed before its connection dropped
                raise
            except Exception as e:  # noqa: BLE001 - filtered by is_transient
                waited = time.monotonic() - start
                if name == "record_heartbeat" and is_transient(e) and waited > self.retry_s:
                    # a dead heartbeat thread never comes back: skip this beat, the next one retries
                    self._log(f"heartbeat not recorded for {waited:.0f} s ({_first_line(e)}); still trying")
                    return None
                if not is_transient(e) or waited > self.retry_s:
                    raise
                with contextlib.suppress(Exception):
                    self.scoped_session.remove()  # a session broken mid-transaction cannot be reused
                if not announced:
                    self._log(f"storage unavailable ({type(e).__name__}: {_first_line(e)}); retrying for up to "
                              f"{self.retry_s:.0f} s{self._trial_words()}")
                    announced = True
                time.sleep(delay)
                delay, attempt = min(2 * delay, 10.0), attempt + 1
                continue
            if announced:
                self._log(f"storage reachable again after {time.monotonic() - start:.1f} s{self._trial_words()}")
            return out

    def _wrote(self, trial_id: int, state, values=None) -> bool:
        """Whether the stored trial holds exactly the state and values this worker tried to write (and not
        another worker's, which reached it first)."""
        t = optuna.storages.RDBStorage.get_trial(self, trial_id)
        return t.state == state and (values is None or list(t.values or []) == list(values))

    def _trial_words(self) -> str:
        return f"; trial {self.running_trial} is still running here" if self.running_trial is not None else ""

    def _log(self, line: str) -> None:
        logger.warning("nas-theseus: %s", line)


def _wrap(name: str):
    base = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(base)
    def method(self, *args, **kwargs):
        return self._call(name, functools.partial(base, self), *args, **kwargs)

    return method


def check_wrapped_methods(cls: type = optuna.storages.RDBStorage) -> None:
    """Refuse an Optuna whose RDBStorage lacks a method we wrap: those calls would run without retries."""
    missing = [name for name in (*_RETRIED, "_get_stale_trial_ids") if not hasattr(cls, name)]
    if missing:
        raise ImportError(f"nas_theseus's storage retries wrap {cls.__qualname__} methods that this Optuna "
                          f"{optuna.__version__} does not have: {', '.join(missing)}; install a supported Optuna "
                          f"(see pyproject.toml)")


check_wrapped_methods()
for _name in _RETRIED:
    setattr(ResilientRDBStorage, _name, _wrap(_name))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:160] if text else ""


def enable_sqlite_wal(url: str, *, create: bool = True) -> None:
    """Switch an SQLite database file to WAL mode; in-memory databases are left alone. With ``create=False``
    a missing file is an error instead of a new empty database."""
    db = make_url(url).database
    if not db or db == ":memory:":
        return
    if not create and not Path(db).is_file():
        raise UserError(f"storage {url!r}: no such database file {db}")
    if not Path(db).expanduser().resolve().parent.is_dir():
        raise UserError(f"storage {url!r}: the folder of {db} does not exist")
    for attempt in range(20):
        try:
            con = sqlite3.connect(db, timeout=60)
            try:
                con.execute("PRAGMA journal_mode=WAL")
            finally:
                con.close()
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise UserError(f"storage {url!r}: {e}") from None
            if attempt == 19:
                raise UserError(f"storage {url!r} stayed locked: {e}") from None
            time.sleep(0.5)


_OPENED: weakref.WeakSet = weakref.WeakSet()  # the storages this process made (see close_storages)


def close_storages() -> None:
    """Dispose the engines of the storages this process opened: their pooled connections close now, not whenever
    the garbage collector reaches them, so a SQLite file is checkpointed when a command ends, not at a random
    later moment (a command that fails then leaves the work directory as it found it)."""
    for storage in list(_OPENED):
        storage.engine.dispose()


def make_storage(url: str, *, heartbeat_interval: int | None, grace_period: int | None, max_retry: int,
                 retry_s: float = 300.0, create: bool = True) -> ResilientRDBStorage:
    """An Optuna RDB storage with heartbeats, stale-trial retries and connection retries (see module)."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        backend = make_url(url).get_backend_name()
    except Exception as e:  # noqa: BLE001 - sqlalchemy raises several types for a bad URL
        raise UserError(f"cannot parse storage URL {url!r}: {e}") from None
    if backend == "sqlite":
        enable_sqlite_wal(url, create=create)
        kwargs = {"connect_args": {"timeout": 60}}
    else:
        kwargs = {"pool_pre_ping": True}
    deadline, delay = time.monotonic() + retry_s, 0.5
    while True:
        try:
            storage = ResilientRDBStorage(
                url, engine_kwargs=kwargs, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry))
            break
        except (ValueError, ImportError, ModuleNotFoundError) as e:
            raise UserError(f"cannot open storage {url!r}: {_first_line(e)}") from None
        except Exception as e:  # noqa: BLE001 - a server that is restarting: retry, then say what failed
            if not is_transient(e) or time.monotonic() > deadline:
                raise UserError(f"cannot open storage {url!r}: {type(e).__name__}: {_first_line(e)}") from None
            time.sleep(delay)
            delay = min(2 * delay, 10.0)
    storage.retry_s = retry_s
    if backend == "sqlite":
        _immediate_transactions(storage.engine)
    _OPENED.add(storage)
    return storage


def _immediate_transactions(engine) -> None:
    """Make every SQLite transaction ``BEGIN IMMEDIATE``: Optuna reads a trial's state, then writes it (taking
    a WAITING trial); pysqlite's deferred transactions let two workers both read WAITING and both take the
    trial. With the write lock taken at BEGIN, the second waits (busy timeout) and then sees RUNNING."""
    @sa_event.listens_for(engine, "connect")
    def _no_pysqlite_transactions(dbapi_connection, record):
        dbapi_connection.isolation_level = None

    @sa_event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the listeners were attached
