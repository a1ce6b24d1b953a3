"""Running a study: storage, sampler, resume, retries, interruption. The one place that drives Optuna.

* Storage (storage.py): SQLite in the work directory by default, or any Optuna RDB URL; calls retried through
  outages; heartbeats with a retry callback so a killed worker's trial comes back (Optuna's
  ``RetryHeartbeatStaleTrialCallback``; stale trials are swept when a worker starts and before each trial).
  On one machine a dead worker is known at once (its slot lock is free, owners.py): its trial is swept then,
  without waiting for the grace period.
* Workers: any number share one study; each has a name (``$NAS_THESEUS_WORKER`` or ``<host>/<slot>``) that
  seeds its sampler (the slot alone in the work directory's own storage: :func:`sampler_name`). A worker whose
  trial another worker declared dead abandons that copy and goes on.
* Resume: running again continues the same study until ``study.n_trials`` trials have finished (COMPLETE,
  PRUNED, or FAIL for a recorded reason); a changed study file or search space is refused unless ``force``.
* Ctrl-C / SIGTERM: Optuna marks the running trial FAIL and never retries it by itself, so its parameters
  are re-enqueued before the worker exits; the next run resumes it from its stage checkpoints. After SIGTERM a
  worker asks for no further trial, and one it asked but had not started goes back (stopping.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from ..errors import UserError
from ..utils import cores
from ..utils.devices import resolve_device
from ..utils.distributed import init_from_env, is_main, launched
from ..utils.files import cache_dir
from ..utils.hashing import seed_from_key, stable_hash
from ..utils.locks import Slot, held_slots, usable_cores
from ..utils.progress import progress_bar
from . import ranks
from .budget import Budget, BudgetReached, finished_trials
from .clean import RESUMES, trim_to_cap
from .config import StudyConfig
from .context import StudyContext, build_context
from .guide_reference import record_guide_reference
from .library import seed_study
from .objective import REPEAT_OF, TrialFailed, run_trial
from .objective import train as train_trial
from .owners import LocalOwners
from .stopping import NotStarted, StopSignal
from .storage import ResilientRDBStorage, make_storage
from .workdir import WorkDir

logger = logging.getLogger(__name__)

REQUEUED = "requeued_as_waiting"
MAX_REPEATS_IN_A_ROW = 25


def make_sampler(config: StudyConfig, n_stored: int, worker: str = "0") -> optuna.samplers.BaseSampler:
    """A sampler seeded from (study seed, trials stored, worker): resumed and parallel runs do not replay.
    ``worker``: the name that tells this worker's draws apart (see :func:`sampler_name`)."""
    seed = seed_from_key(stable_hash({"seed": config.study.seed, "stored": n_stored, "worker": worker})) % (2**31)
    name = config.study.sampler
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=config.study.startup_trials)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def open_storage(config: StudyConfig, url: str, *, create: bool = True) -> ResilientRDBStorage:
    s = config.study
    return make_storage(url, heartbeat_interval=s.heartbeat_interval, grace_period=s.grace_period,
                        max_retry=s.max_retry, retry_s=s.storage_retry, create=create)


def sampler_name(worker: str, slot: int | None, *, shared: bool) -> str:
    """What seeds a worker's sampler beside the study's seed: the worker's own name where it was given
    (``$NAS_THESEUS_WORKER``) or where the study's storage is shared with other machines (``host/slot``, so
    they draw apart); else, a study in its work directory's own storage, its slot alone, so the same study
    file draws the same trials on any machine."""
    if os.environ.get("NAS_THESEUS_WORKER") or shared or slot is None:
        return worker
    return f"slot {slot}"


def open_study(config: StudyConfig, wd: WorkDir, *, storage: str | None, force: bool, identity: str,
               create: bool = True, worker: str = "0", slot: int | None = None
               ) -> tuple[optuna.Study, ResilientRDBStorage]:
    meta = wd.read_meta()
    url = storage or (meta or {}).get("storage") or wd.default_storage()
    storage_obj = open_storage(config, url)
    directions = list(config.objectives.values())
    try:
        study = optuna.load_study(study_name=config.study.name, storage=storage_obj)
    except KeyError:
        if not create:
            raise UserError(f"no study {config.study.name!r} in {url}") from None
        study = optuna.create_study(study_name=config.study.name, storage=storage_obj, directions=directions,
                                    load_if_exists=True)
    if [d.name.lower() for d in study.directions] != directions:
        raise UserError(f"study {config.study.name!r} in {url} has other objectives; use another study name")
    stored = study.user_attrs.get("identity")
    if stored is not None and stored != identity and not force:
        raise UserError(f"study {config.study.name!r} in {url} was started from other settings; use --force "
                        f"or another study name")
    if stored != identity:
        study.set_user_attr("identity", identity)
        study.set_user_attr("config", config.to_dict())
        study.set_metric_names(list(config.objectives))
    wd.write_meta({"storage": url, "study_name": config.study.name, "identity": identity,
                   "config": config.to_dict(), "base_dir": config.base_dir})
    for params in config.study.enqueue:  # tried first; a resumed or parallel run does not add them again
        study.enqueue_trial(params, skip_if_exists=True)
    study.sampler = make_sampler(config, len(study.get_trials(deepcopy=False)),
                                 sampler_name(worker, slot, shared=url != wd.default_storage()))
    return study, storage_obj


def _taken_over(study: optuna.Study, number: int) -> bool:
    t = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    return (t is not None and t.state == TrialState.FAIL and "fail_reason" not in t.user_attrs
            and not t.user_attrs.get(REQUEUED))


class TrialTakenOver(Exception):
    """This worker's trial was failed as stale by another worker (which retries it)."""


class _DropOwnFailures(logging.Filter):
    """Optuna logs every failed trial with a traceback; ours (a recorded reason, a taken-over trial, an
    interrupted one) are reported in one line by the runner or the CLI instead."""

    def __init__(self):
        super().__init__()
        self.dropped: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        number = re.match(r"Trial (\d+) failed", record.getMessage())
        if isinstance(exc, (TrialFailed, TrialTakenOver, KeyboardInterrupt)):
            if number:
                self.dropped.add(number.group(1))
            return False
        return not (number and number.group(1) in self.dropped)  # its "failed with value None" line


@contextlib.contextmanager
def _quiet_optuna_failures():
    logger, f = logging.getLogger("optuna.study._optimize"), _DropOwnFailures()
    logger.addFilter(f)
    try:
        yield
    finally:
        logger.removeFilter(f)


def run_study(config: StudyConfig, workdir: str | Path, *, storage: str | None = None, force: bool = False,
              progress: bool = True, n_trials: int | None = None, timeout: float | None = None,
              ctx: StudyContext | None = None) -> optuna.Study:
    """Run (or continue) a study until its trial budget is reached; returns the Optuna study (under torchrun:
    on rank 0; the other ranks return None, see :mod:`nas_theseus.study.ranks`)."""
    if launched():
        return _run_as_rank(config, workdir, storage=storage, force=force, progress=progress, n_trials=n_trials,
                            timeout=timeout, ctx=ctx)
    return _run_one(config, workdir, storage=storage, force=force, progress=progress, n_trials=n_trials,
                    timeout=timeout, ctx=ctx)


def _run_one(config: StudyConfig, workdir: str | Path, *, storage, force, progress, n_trials, timeout,
             ctx: StudyContext | None) -> optuna.Study:
    wd = WorkDir(Path(workdir))
    ctx, identity = _checked_context(config, wd, ctx or build_context(config, progress=progress), force)
    slot = Slot(wd.root / "workers")  # a small stable number per concurrent worker of this work directory
    machine = Slot(machine_workers_dir())  # counts the workers of this machine, of any study (see set_threads)
    try:
        worker = os.environ.get("NAS_THESEUS_WORKER") or f"{socket.gethostname()}/{slot.number}"
        owners = LocalOwners(wd.root / "workers", slot, worker)
        with _trainers_pinned(ctx):  # off the cores reserved for timing latency, if any
            return _run(config, ctx, wd, identity, worker, owners, storage=storage, force=force,
                        progress=progress, n_trials=n_trials, timeout=timeout)
    finally:
        slot.release()
        machine.release()


def _run_as_rank(config: StudyConfig, workdir: str | Path, *, storage, force, progress, n_trials, timeout,
                 ctx: StudyContext | None) -> optuna.Study | None:
    """One rank of a study under torchrun: every rank builds the context (a guide to train is trained by all,
    data parallel; rank 0's weights are then every rank's), then rank 0 runs the study as one worker does,
    training every trial with the others, who follow it (:mod:`nas_theseus.study.ranks`)."""
    init_from_env(torch.device(resolve_device(config.study.device)))
    ranks.control()  # made by every rank at once
    ctx = ctx or build_context(config, progress=progress and is_main())
    ranks.guide_from_main(ctx.guide)
    if is_main():
        return _run_one(config, workdir, storage=storage, force=force, progress=progress, n_trials=n_trials,
                        timeout=timeout, ctx=ctx)
    wd = WorkDir(Path(workdir))
    activations = wd.activations(ctx.guide, ctx.data, device=ctx.device, progress=False) \
        if ctx.caches_activations() else None
    machine = Slot(machine_workers_dir())  # this rank's share of the cores (set_threads)

    def train(candidate, conv_cfg, method, on_stage):
        set_threads(config)
        return train_trial(ctx, wd, activations, candidate, conv_cfg, method, on_stage=on_stage, progress=False)

    try:
        with _trainers_pinned(ctx):
            ranks.follow(ctx, train)
    finally:
        machine.release()
    return None


@contextlib.contextmanager
def _trainers_pinned(ctx: StudyContext):
    """This process trains on the cores not reserved for timing latency (``[latency] cores``) for the block,
    and its measurer there ends with it (whatever it may still time was for a trial that no longer waits)."""
    rest = ctx.trainer_cores()
    if rest is None:
        yield
        return
    try:
        with cores.pinned(rest):
            yield
    finally:
        ctx.aside().close()


def _checked_context(config: StudyConfig, wd: WorkDir, ctx: StudyContext, force: bool) -> tuple[StudyContext, str]:
    """The context and the study's identity, once the work directory agrees with it and the search space has
    built a candidate (``dry_run``); the work directory is made."""
    identity = config.identity(ctx.space.sha256)
    meta = wd.read_meta()
    if meta is not None and meta.get("identity") != identity and not force:
        raise UserError(f"the study file or search space changed since {wd.root} was started; run with --force "
                        f"to continue this study with the new settings, or give a new --workdir")
    ctx.dry_run()
    wd.root.mkdir(parents=True, exist_ok=True)
    return ctx, identity


def prepare_study(config: StudyConfig, workdir: str | Path, *, storage: str | None = None, force: bool = False,
                  progress: bool = True) -> optuna.Study:
    """Everything a worker would do before its first trial, once: the guide trained (or read from its cache),
    the search space checked, the study created and the guide's own figures recorded. Workers started after
    it find all of it done (``nas-theseus run --workers`` calls it before starting them)."""
    wd = WorkDir(Path(workdir))
    ctx, identity = _checked_context(config, wd, build_context(config, progress=progress), force)
    study, _ = open_study(config, wd, storage=storage, force=force, identity=identity)
    record_guide_reference(study, ctx)
    if ctx.aside() is not None:
        ctx.aside().close()  # this process trains no trial: the workers it starts have their own measurers
    if config.library.enabled:
        set_threads(config)  # the library trains: the same share of the cores as a trial
    seed_study(study, ctx, wd, progress=progress)  # [library] enabled: built once, its front enqueued
    return study


def machine_workers_dir() -> Path:
    return cache_dir() / "locks" / f"workers-{socket.gethostname()}"


def set_threads(config: StudyConfig) -> int:
    """torch's CPU threads for the next trial: ``study.threads`` if set, else the cores this process may use
    divided by the workers running on this machine now (torch's default, one thread per core in every
    worker, oversubscribes the cores: a stage ran 12-17x slower on a busy 2-core machine than with 1 thread)."""
    threads = config.study.threads or max(1, usable_cores() // max(1, held_slots(machine_workers_dir())))
    torch.set_num_threads(threads)
    return threads


def _run(config: StudyConfig, ctx: StudyContext, wd: WorkDir, identity: str, worker: str, owners: LocalOwners, *,
         storage, force, progress, n_trials, timeout) -> optuna.Study:
    study, storage_obj = open_study(config, wd, storage=storage, force=force, identity=identity, worker=worker,
                                    slot=owners.slot.number)
    storage_obj.local_owners = owners
    target = n_trials if n_trials is not None else config.study.n_trials
    # Optuna's optimize() asks through the instance: a trial starts only within the budget (budget.py), and the
    # worker's record names it
    budget, stop = Budget(study, target), StopSignal()
    study.ask = owners.wrap_ask(study.ask, budget, stop)
    storage_obj.stop = stop  # a signal inside a trial waits for the storage call it lands in
    # trials of workers that died (no heartbeat for the grace period, or a free slot lock on this machine) are
    # failed and re-enqueued now; Optuna sweeps again before every trial
    optuna.storages.fail_stale_trials(study)
    record_guide_reference(study, ctx)  # the guide's own figures, once per study (also for earlier studies)
    if config.library.enabled:
        set_threads(config)  # the library trains: the same share of the cores as a trial
    seed_study(study, ctx, wd, progress=progress)  # [library] enabled: built once, its front enqueued
    done = finished_trials(study)
    remaining = target - done
    if target == 0:  # --n-trials 0: the study prepared (guide, storage, reference), no trial
        logger.info("study %r prepared (guide trained and cached, storage and guide reference made); no trial run "
                    "(--n-trials 0)", config.study.name)
    elif remaining <= 0:
        logger.warning("study %r already has %d finished trials (budget %d); raise study.n_trials (--n-trials) to "
                       "run more", config.study.name, done, target)
    if remaining <= 0:
        ranks.tell(False)  # under torchrun: the other ranks, no trial comes
        return study
    ctx.say_device()
    activations = wd.activations(ctx.guide, ctx.data, device=ctx.device, progress=progress) \
        if ctx.caches_activations() else None  # else the trials' conversions stream the guide
    loop = _Loop(progress_bar(total=remaining, desc=f"trials ({config.study.name})", unit="trial",
                              enabled=progress, leave=True))
    objective = _objective(config, ctx, wd, activations, study, storage_obj, loop, stop, progress=progress,
                           worker=worker)
    after_trial = _after_trial(owners, loop, target, wd.checkpoints, config.study.checkpoint_cap)
    limit = timeout if timeout is not None else config.study.timeout
    deadline = budget.deadline = None if limit is None else time.monotonic() + limit
    try:
        with stop.on_signals(), _quiet_optuna_failures():
            _optimize(study, objective, after_trial, loop, target, deadline)
    finally:
        loop.bar.close()
    ranks.tell(False)  # under torchrun: the other ranks, no more trials
    return study


@dataclass
class _Loop:
    """What a worker's trials share while it runs them: its progress bar, the number of the trial it ran last,
    and how many repeated proposals (answered from earlier trials) came in a row."""

    bar: Any
    last: list[int] = field(default_factory=list)
    streak: int = 0


def _objective(config: StudyConfig, ctx: StudyContext, wd: WorkDir, activations, study: optuna.Study,
               storage_obj: ResilientRDBStorage, loop: _Loop, stop: StopSignal, *, progress: bool, worker: str):
    """The function Optuna optimizes: one trial run (:func:`run_trial`); an interrupted trial is re-enqueued (the
    next run resumes it from its stage checkpoints), and so is one the stop signal came for before it started; a
    trial another worker took over is told apart."""
    def objective(trial: optuna.Trial):
        set_threads(config)  # recorded by run_trial; re-read per trial as workers come and go
        storage_obj.running_trial = trial.number
        loop.last[:] = [trial.number]
        try:
            with stop.trial():  # the only place a signal interrupts; after one, no trial starts
                try:
                    return run_trial(trial, ctx, wd, activations, progress=progress, worker=worker)
                except RuntimeError as e:  # under torchrun: another rank died in a collective
                    if not ranks.lost(e):
                        raise
                    raise ranks.RankLost(f"trial {trial.number}: another rank stopped "
                                         f"({str(e).splitlines()[0]})") from e
        except KeyboardInterrupt as e:  # SIGTERM, Ctrl-C, or a lost rank (torchrun SIGTERMs the rest)
            _requeue(study, trial, e)
            raise
        except optuna.exceptions.UpdateFinishedTrialError as e:
            raise TrialTakenOver(str(e)) from e
        finally:
            storage_obj.running_trial = None

    return objective


def _requeue(study: optuna.Study, trial: optuna.Trial, e: KeyboardInterrupt) -> None:
    """``trial`` interrupted: failed by Optuna (it counts for nothing) and its parameters enqueued again, marked
    with the trial to resume (one that never started resumes what it would have). Its enqueued parameters too:
    those it had not suggested yet (or at all, never started) are not lost."""
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    params = {**frozen.system_attrs.get("fixed_params", {}), **frozen.params}
    resumes = frozen.user_attrs.get(RESUMES, trial.number) if isinstance(e, NotStarted) else trial.number
    trial.set_user_attr(REQUEUED, True)
    study.enqueue_trial(params, user_attrs={RESUMES: resumes})
    e.requeued_trial = trial.number  # the CLI says which trial comes back


def _after_trial(owners: LocalOwners, loop: _Loop, target: int, checkpoints: Path, cap: str | int | None):
    """Optuna's callback after each trial: the stage checkpoints trimmed to ``cap`` (``study.checkpoint_cap``),
    a line for a pruned or failed trial, the bar moved, and the study stopped once the budget is reached or the
    sampler only repeats earlier candidates."""
    def after_trial(study: optuna.Study, trial) -> None:
        owners.idle()  # told: no longer this worker's to resume
        trim_to_cap(study, checkpoints, cap)  # least recently used first, none in use
        if trial.state == TrialState.COMPLETE and REPEAT_OF in trial.user_attrs:
            loop.streak += 1  # answered from an earlier trial: no budget spent
            if loop.streak >= MAX_REPEATS_IN_A_ROW:
                loop.bar.write(f"the sampler proposed only earlier candidates {loop.streak} times in a row: the "
                               f"search space looks exhausted; stopping", file=sys.stderr)
                study.stop()
            return
        loop.streak = 0
        loop.bar.update(1)
        if trial.state == TrialState.PRUNED and "prune_reason" in trial.user_attrs:
            loop.bar.write(f"trial {trial.number} pruned: {trial.user_attrs['prune_reason']}", file=sys.stderr)
        if trial.state == TrialState.FAIL and "fail_reason" in trial.user_attrs:
            loop.bar.write(f"trial {trial.number} failed: {trial.user_attrs['fail_reason']}", file=sys.stderr)
        if finished_trials(study) >= target:
            study.stop()

    return after_trial


def _optimize(study: optuna.Study, objective, after_trial, loop: _Loop, target: int, deadline: float | None) -> None:
    """Optuna's optimize() until the budget, the deadline or an exhausted search space ends it: repeats and trials
    retried elsewhere use up optimize's count without filling the budget, so it is called again."""
    while True:
        left = target - finished_trials(study)
        if left <= 0 or (deadline is not None and time.monotonic() >= deadline):
            break
        if loop.streak >= MAX_REPEATS_IN_A_ROW:
            break
        try:
            study.optimize(objective, n_trials=left, catch=(TrialFailed,), callbacks=[after_trial],
                           timeout=None if deadline is None else deadline - time.monotonic())
        except BudgetReached:  # asked for a trial when none may start: the others' trials filled it
            break
        except (TrialTakenOver, ValueError, AssertionError) as e:
            if not _taken_over_during_outage(study, loop, e):
                raise
            number = loop.last.pop()
            loop.bar.write(f"trial {number} was declared dead by another worker while the storage was "
                           f"unreachable and is retried there; this worker goes on with the next trial",
                           file=sys.stderr)


def _taken_over_during_outage(study: optuna.Study, loop: _Loop, e: BaseException) -> bool:
    """Whether ``e`` says our heartbeat lapsed (a storage outage longer than the grace period): another worker
    declared our trial dead and retries it; Optuna cannot tell it ("Cannot tell a FAIL trial"), so this worker
    abandons its copy."""
    text = f"{e} {e.__context__}"
    optuna_could_not_tell = "Cannot tell" in text or "Should not reach" in text
    return bool(loop.last and (isinstance(e, TrialTakenOver) or optuna_could_not_tell)
                and _taken_over(study, loop.last[0]))
