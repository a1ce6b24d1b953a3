"""A study under ``torchrun``: rank 0 is the study's worker, every other rank lends it its device.

``torchrun --nproc-per-node G -m nas_theseus run STUDY`` starts G processes. Every rank builds the study's
context (a guide to train is trained by all of them, data parallel, and cached by rank 0; rank 0's weights are
then every rank's). Rank 0 alone talks to the storage, samples, measures, saves and exports, exactly as one
worker does; each trial's conversion (or KD / scratch training) runs on all G ranks at once, data parallel
(:mod:`nas_theseus.utils.distributed`), so the trial sees the global batch of one process G times faster. The
others follow rank 0 through a few messages on a gloo group of their own (``control``; its timeout is long,
since rank 0 may measure a trial while they wait):

1. before each trial: whether there is one; the candidate then comes from the search space on every rank, asked
   through Optuna's :class:`~optuna_integration.TorchDistributedTrial` (rank 0's suggestions broadcast);
2. whether the trial trains (not a repeated proposal, which rank 0 answers from storage alone, nor one whose
   costs it could not measure);
3. after each stage, while the pruning rule is on: whether rank 0 pruned the trial.

A rank that dies ends the whole run (torchrun stops the others; rank 0 re-enqueues its trial first, see
:class:`RankLost`); the trial comes back resumed from its stage checkpoints, which rank 0 writes. After each
trial's training every rank says how it ended (:func:`agreed`): a rank whose training failed where rank 0's did
not (or the reverse) stops the run in one line within ``RANK_WAIT_S`` seconds, instead of leaving the others in
a collective until its timeout.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import time
import warnings
from typing import NoReturn

import optuna
import torch
import torch.distributed as dist

from ..errors import UserError
from ..utils.distributed import from_main, is_main, leave, world

_CONTROL: list = []  # the gloo group rank 0's messages go through, made once per process
CONTROL_TIMEOUT = datetime.timedelta(days=7)  # rank 0 may measure or export at length while the others wait
# how long the ranks wait for one another at the end of a trial's training (they end it together, within a step)
RANK_WAIT_S = float(os.environ.get("NAS_THESEUS_RANK_WAIT_S", "60"))
OUTCOME_TAG = 7  # the control group's point-to-point messages of the end of a trial
KINDS = ("trained", "pruned", "failed")  # how a rank's training of a trial ended


def control():
    """The ranks' own gloo group (also where NCCL holds the default group): CPU messages, long timeout."""
    if not _CONTROL:
        _CONTROL.append(dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT))
        atexit.register(leave, _CONTROL[0])
    return _CONTROL[0]


def active() -> bool:
    """Whether this process is one of several ranks of a study."""
    return world()[1] > 1


class RankLost(KeyboardInterrupt):
    """Another rank stopped in the middle of a trial: this rank ends too, as if interrupted (its trial is
    re-enqueued and resumes from its stage checkpoints on the next run)."""


def lost(e: BaseException) -> bool:
    """Whether ``e`` is a collective that failed because another rank is gone (gloo: "Connection reset by peer";
    NCCL: a ``DistError``): raised inside ``torch.distributed`` while this process is one of several ranks."""
    if not active():
        return False
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "torch/distributed/" in tb.tb_frame.f_code.co_filename.replace("\\", "/")


class RankDiverged(UserError):
    """This rank's training of a trial ended otherwise than rank 0's (a failure on one side only)."""


@contextlib.contextmanager
def agreed():
    """Around a trial's training on every rank: on the way out (trained, pruned or failed), the ranks meet
    within ``RANK_WAIT_S`` seconds and compare how it ended. Where they differ, rank 0 stops as if interrupted
    (:class:`RankLost`: its trial is re-enqueued) and the others with :class:`RankDiverged`, each in one line
    saying how it ended there (a failure with its reason) and how it ended on the others; the run ends
    (torchrun stops the rest). An interrupt, or a collective
    broken by a rank that died, passes through as it is. In one process: nothing."""
    if not active():
        yield
        return
    try:
        yield
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt) or lost(e):
            raise
        _compare(f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
                 if not isinstance(e, optuna.TrialPruned) else "pruned")
        raise
    _compare("trained")


def _compare(mine: str) -> None:
    """Every rank tells rank 0 how its training ended and hears rank 0's, the messages waited for at most
    ``RANK_WAIT_S`` seconds in all (a receive without a limit of its own waits the control group's timeout, days,
    where a rank is stuck in a collective of the trial)."""
    rank, n = world()
    kind = mine if mine in KINDS[:2] else "failed"
    code = torch.tensor([KINDS.index(kind)])
    if rank == 0:
        heard = [torch.zeros(1, dtype=torch.long) for _ in range(n)]
        works = [w for r in range(1, n) for w in (dist.irecv(heard[r], src=r, group=control(), tag=OUTCOME_TAG),
                                                  dist.isend(code, dst=r, group=control(), tag=OUTCOME_TAG))]
    else:
        heard = [torch.zeros(1, dtype=torch.long)]
        works = [dist.isend(code, dst=0, group=control(), tag=OUTCOME_TAG),
                 dist.irecv(heard[0], src=0, group=control(), tag=OUTCOME_TAG)]
    deadline = time.monotonic() + RANK_WAIT_S
    try:
        for w in works:
            w.wait(timeout=datetime.timedelta(seconds=max(0.001, deadline - time.monotonic())))
    except RuntimeError:  # gloo: "Timed out waiting ... for recv"
        here = f"its training {'failed' if kind == 'failed' else 'ended'} ({mine})"
        _diverged(f"rank {rank}: {here}, but the other ranks did not end the trial within {RANK_WAIT_S:g} s "
                  f"(still training, or failed elsewhere)")
    others = {r: KINDS[int(heard[r])] for r in range(1, n)} if rank == 0 else {0: KINDS[int(heard[0])]}
    differ = {r: k for r, k in others.items() if k != kind}
    if differ:
        told = ", ".join(f"rank {r} {k}" for r, k in sorted(differ.items()))
        _diverged(f"rank {rank}: its training of the trial ended otherwise than the others' (here: {mine}; "
                  f"{told})")


def _diverged(text: str) -> NoReturn:
    if is_main():
        raise RankLost(text + "; stopping (the trial is re-enqueued)")
    raise RankDiverged(text + "; stopping the run (torchrun stops the other ranks)")


def tell(value=None):
    """Rank 0's ``value`` on every rank (others pass nothing), over the control group; ``value`` itself in one
    process."""
    return from_main(lambda: value, group=control() if active() else None)


def shared_trial(trial):
    """What the search space is asked through: on rank 0 ``trial`` (wrapped), elsewhere ``None`` (wrapped), so
    every rank builds the same candidate; ``trial`` itself in one process."""
    if not active():
        return trial
    try:
        from optuna_integration import TorchDistributedTrial
    except ImportError:
        raise UserError("a study under torchrun needs optuna-integration (pip install 'nas-theseus[distributed]')"
                        ) from None
    with warnings.catch_warnings():  # "experimental since 2.6": Optuna's one way to share a trial across ranks
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return TorchDistributedTrial(trial, group=control())


def prune_decision(check) -> None:
    """After a stage: rank 0 runs ``check`` (the pruning rule, which raises ``optuna.TrialPruned``) and tells the
    others whether it fired; every rank then raises, so none waits on a stage the others left."""
    if not active():
        check()
        return
    if is_main():
        try:
            check()
        except optuna.TrialPruned:
            tell(True)
            raise
        tell(False)
    elif tell():
        raise optuna.TrialPruned("pruned by rank 0")


def follow(ctx, train) -> None:
    """The loop of every rank but 0: a trial's candidate and training as rank 0 says, until it says stop.
    ``train(candidate, conv_cfg, method, on_stage)`` runs the trial's conversion (or baseline) on this rank."""
    from ..convert import ConversionError

    while tell():  # True: a trial; False: the study ends
        trial = shared_trial(None)
        candidate, conv_cfg = ctx.candidate(trial)
        method = ctx.method(trial)
        if not tell():  # a repeated proposal (rank 0 answers it from storage), or one it could not measure
            continue
        on_stage = None
        if ctx.config.pruning.enabled:
            def on_stage(report, hybrid):
                prune_decision(lambda: None)
        try:
            with agreed():  # a failure here alone stops the run in one line (no waiting on rank 0)
                train(candidate, conv_cfg, method, on_stage)
        except RankDiverged:
            raise
        except (optuna.TrialPruned, ConversionError, UserError):
            pass  # the same on rank 0 (agreed), which records why


def guide_from_main(guide) -> None:
    """Rank 0's guide weights on every rank: a guide trained on one rank (or cached on one node) is the one
    every rank converts (bit for bit; broadcast once, before the first trial)."""
    if not active():
        return
    state = guide.module.state_dict()
    for tensor in state.values():
        cpu = tensor.detach().cpu().contiguous()
        dist.broadcast(cpu, src=0, group=control())
        with torch.no_grad():
            tensor.copy_(cpu)
