"""Disk a user can manage: which stage checkpoints of a work directory may go, and removing them
(``nas-theseus clean DIR [--max-size SIZE] [--dry-run]``, and ``study.checkpoint_cap`` after every trial).

Stage checkpoints (``DIR/checkpoints/<16 hex>.ckpt``, :mod:`nas_theseus.convert.checkpoints`) are keyed by
content and reused by every later trial that shares a prefix of stages, so a study never removes one by itself
and the folder grows with every new candidate. A complete trial records its *path*, the keys of the checkpoints
its conversion loaded or wrote (its stages in order, then fine-tuning), in its ``checkpoints`` attribute; and
loading a checkpoint sets its mtime to now, so the mtime says when it was last used.

What may go, by kind:

* ``off path`` (``clean``): a checkpoint on no complete trial's path (the stages of pruned, failed or
  interrupted trials, of ``convert`` runs, of older settings). Only when every complete trial that converted
  records its path: trials run before they did leave their paths unknown, and then none goes by path.
* ``over the cap`` (``clean --max-size``, ``study.checkpoint_cap``): then the least recently used, until the
  checkpoints' files fit in the size.
* ``stale temp`` (``clean``): a writer's temp file (``.<key>.*.tmp.ckpt``) over an hour old, whose writer died
  before its rename (the rule by which the store itself sweeps them).

What never goes:

* anything that is not one of those names in ``checkpoints/``, and nothing outside it (the study's database,
  ``trials/``, ``exports/``, ``cache/``, files of yours); symbolic links neither;
* a checkpoint in use: while a trial of the study is RUNNING (in its storage), or an interrupted or killed
  trial waits to be resumed (WAITING with ``resumes_trial`` or Optuna's ``retry_history``), every checkpoint
  written or used since the earliest such trial (or its first attempt) started, less 10 minutes for the clocks
  of other machines (Optuna stamps a start with its worker's clock);
* a checkpoint being written: it is a temp file until its atomic rename (``os.replace``), and a temp file goes
  only when stale;
* a checkpoint used after the plan was made: its mtime is checked again just before it is removed.

A trial that still wanted a removed checkpoint trains that stage again; a shared artifact store's copies are
not touched (checkpoints missing here are fetched from there again).
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..convert.checkpoints import STALE_TEMP_S
from ..utils.sizes import format_size, over_size, parse_size
from .objective import CHECKPOINT_PATH, REPEAT_OF

logger = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"[0-9a-f]{16}\.ckpt")  # CheckpointStore.path: a 16-hex content key
TEMP = re.compile(r"\.[0-9a-f]{16}\.[A-Za-z0-9_]+\.tmp\.ckpt")  # atomic_write's temp file for one
CLOCK_SLACK_S = 600.0
RESUMES = "resumes_trial"  # the runner's mark on an interrupted trial's re-enqueued copy


@dataclass(frozen=True)
class CheckpointFile:
    path: Path
    size: int
    mtime_ns: int


@dataclass
class Plan:
    """What a clean removes, per kind (in the order they are listed), and what it leaves."""

    remove: dict[str, list[CheckpointFile]]
    kept: list[CheckpointFile] = field(default_factory=list)  # checkpoints left
    in_use: int = 0  # of the kept, how many are guarded as in use
    foreign: int = 0  # files in the folder that are not ours: never touched
    notes: list[str] = field(default_factory=list)


def scan(folder: Path) -> tuple[list[CheckpointFile], list[CheckpointFile], int]:
    """The checkpoints and temp files in ``folder`` (regular files with our names, least recently used first),
    and how many other entries it holds."""
    ours, temps, foreign = [], [], 0
    if not folder.is_dir():
        return ours, temps, foreign
    for entry in os.scandir(folder):
        kind = ours if CHECKPOINT.fullmatch(entry.name) else temps if TEMP.fullmatch(entry.name) else None
        try:
            if kind is None or not entry.is_file(follow_symlinks=False):
                foreign += 1
                continue
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # removed meanwhile
            continue
        kind.append(CheckpointFile(Path(entry.path), st.st_size, st.st_mtime_ns))
    ours.sort(key=lambda f: (f.mtime_ns, f.path.name))
    return ours, temps, foreign


def in_use_since(study: optuna.Study) -> float | None:
    """Seconds since the epoch from which a checkpoint's mtime marks it in use (see the module's rules), or None
    when no trial runs or waits to resume."""
    trials = study.get_trials(deepcopy=False)
    started = {t.number: t.datetime_start for t in trials}
    starts = []
    for t in trials:
        if t.state == TrialState.RUNNING:
            starts.append(t.datetime_start)
        elif t.state == TrialState.WAITING:
            earlier = [t.user_attrs.get(RESUMES), t.system_attrs.get("failed_trial"),
                       *t.system_attrs.get("retry_history", [])]
            starts += [started[n] for n in earlier if started.get(n) is not None]
    if not starts:
        return None
    if any(s is None for s in starts):  # a RUNNING trial with no start recorded: everything may be in use
        return float("-inf")
    return min(s.timestamp() for s in starts) - CLOCK_SLACK_S


def kept_keys(study: optuna.Study) -> tuple[set[str] | None, str]:
    """The keys on the complete trials' paths; None (and why) when a complete trial that converted did not
    record its path."""
    keys, unknown = set(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if CHECKPOINT_PATH in t.user_attrs:
            keys.update(t.user_attrs[CHECKPOINT_PATH])
        elif REPEAT_OF not in t.user_attrs and t.user_attrs.get("method", "not") == "not":
            unknown += 1
    if unknown:
        return None, (f"{unknown} complete trial(s) ran before trials recorded their stage checkpoints, so "
                      f"their paths are unknown: none removed as off path (--max-size still trims)")
    return keys, ""


def plan_clean(study: optuna.Study, folder: Path, *, by_path: bool = True, max_size: int | None = None,
               temps: bool = True) -> Plan:
    """What to remove from the checkpoint folder ``folder`` of ``study``'s work directory: checkpoints on no
    complete trial's path (``by_path``), then the least recently used beyond ``max_size`` bytes, and stale temp
    files (``temps``); nothing in use."""
    files, temp_files, foreign = scan(folder)
    since = in_use_since(study)
    guarded = {f for f in files if since is not None and f.mtime_ns / 1e9 >= since}
    plan = Plan(remove={}, foreign=foreign)
    if by_path:
        keep, why = kept_keys(study)
        plan.remove["off path"] = [] if keep is None else [
            f for f in files if f.path.stem not in keep and f not in guarded]
        plan.notes += [why] if why else []
    if max_size is not None:
        plan.remove["over the cap"] = _over(files, set(plan.remove.get("off path", [])), guarded, max_size, plan)
    if temps:
        plan.remove["stale temp"] = [f for f in temp_files if time.time() - f.mtime_ns / 1e9 > STALE_TEMP_S]
    removed = {f for kind in plan.remove.values() for f in kind}
    plan.kept = [f for f in files if f not in removed]
    plan.in_use = sum(f in guarded for f in plan.kept)
    return plan


def _over(files: list[CheckpointFile], gone: set, guarded: set, max_size: int, plan: Plan) -> list[CheckpointFile]:
    """The least recently used of ``files`` (not already ``gone``, not ``guarded``) whose removal brings the rest
    within ``max_size`` bytes; a note in ``plan`` when the checkpoints in use alone exceed it."""
    over, size = over_size([f for f in files if f not in gone], lambda f: f.size, max_size, keep=guarded)
    if size > max_size:
        plan.notes.append(f"still {format_size(size - max_size)} over {format_size(max_size)}: the rest is in use "
                          f"(by running trials, or by trials waiting to resume)")
    return over


def remove(plan: Plan) -> Plan:
    """Remove what ``plan`` lists; returns the plan of what was removed (a file used or removed since the plan was
    made is left, and counted as kept)."""
    done = Plan(remove={}, kept=list(plan.kept), in_use=plan.in_use, foreign=plan.foreign, notes=plan.notes)
    for kind, files in plan.remove.items():
        done.remove[kind] = []
        for f in files:
            try:
                if f.path.lstat().st_mtime_ns != f.mtime_ns:  # used since: in use again
                    done.kept.append(f)
                    continue
                f.path.unlink()
            except FileNotFoundError:  # another clean (or the store's sweep) took it
                continue
            done.remove[kind].append(f)
    return done


def summary(plan: Plan, *, dry_run: bool = False) -> str:
    """One line: files and bytes removed (or that would be) per kind, and what is kept."""
    gone = [f for files in plan.remove.values() for f in files]
    kinds = ", ".join(f"{len(files)} {kind} ({format_size(sum(f.size for f in files))})"
                      for kind, files in plan.remove.items())
    line = (f"{'would remove' if dry_run else 'removed'} {len(gone)} file(s), "
            f"{format_size(sum(f.size for f in gone))}" + (f": {kinds}" if kinds else "")
            + f"; {'would keep' if dry_run else 'kept'} {len(plan.kept)} checkpoint(s), "
              f"{format_size(sum(f.size for f in plan.kept))}"
            + (f", {plan.in_use} of them in use" if plan.in_use else ""))
    if plan.foreign:
        line += f"; {plan.foreign} other file(s) left alone"
    return "; ".join([line, *plan.notes])


def clean(study: optuna.Study, folder: Path, *, max_size: int | None = None, dry_run: bool = False) -> str:
    """``nas-theseus clean``: remove (or, ``dry_run``, only count) what :func:`plan_clean` lists; the summary."""
    plan = plan_clean(study, folder, max_size=max_size)
    return summary(plan if dry_run else remove(plan), dry_run=dry_run)


def trim_to_cap(study: optuna.Study, folder: Path, cap: str | int | None) -> None:
    """After a trial: with a cap (``study.checkpoint_cap``), the least recently used checkpoints beyond it
    removed by ``clean --max-size``'s rules (nothing in use, nothing by path), and one line when any was."""
    if cap is None:
        return
    plan = plan_clean(study, folder, by_path=False, max_size=parse_size(cap), temps=False)
    if plan.remove["over the cap"]:
        logger.info("checkpoint cap %s: %s", format_size(parse_size(cap)), summary(remove(plan)))
