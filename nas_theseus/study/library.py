"""The block library in a study: built (or read back) before the first trial, its predicted front enqueued as
trials that the usual progressive conversion converts for real, and any budget answered from it later
(``nas-theseus library``).

The library lives in ``WORKDIR/library/`` (its blocks by content key, so ``clean`` never touches them, and in the
artifact store where the study has one). A study enqueues the library's front once (the ``library`` study
attribute records it); resumed and parallel runs find it done. ``nas-theseus library`` answers budgets from it
(:mod:`nas_theseus.study.library_answers`).
"""

from __future__ import annotations

import dataclasses
import logging

import optuna
from optuna.trial import TrialState

from ..library.answer import Proposal, front
from ..library.build import build_library
from ..library.library import BlockLibrary
from ..library.predict import Predictor, calibrate
from ..utils.locks import file_lock
from .context import StudyContext
from .objective import REPEAT_OF
from .workdir import WorkDir

logger = logging.getLogger(__name__)
LIBRARY_ATTR = "library"  # study attribute: the library's key and what was enqueued from it
PREDICTED_ATTR = "library_predicted"  # trial attribute: what the library predicted for an enqueued trial


def study_library(ctx: StudyContext, wd: WorkDir, *, progress: bool) -> BlockLibrary:
    """The study's block library, built where it is missing (one builder at a time per work directory)."""
    cfg = ctx.config
    folder = wd.root / "library"
    folder.mkdir(parents=True, exist_ok=True)
    timed = "latency_ms" in {*cfg.objectives, *cfg.constraints, cfg.library.cost}
    lat = cfg.latency
    latency = dict(batch_size=lat.batch_sizes[0], threads=lat.threads, block_ms=lat.block_ms,
                   device=lat.device) if timed else None
    activations = wd.activations(ctx.guide, ctx.data, device=ctx.device, progress=progress) \
        if ctx.caches_activations() else None
    convert = dataclasses.replace(cfg.convert, seed=cfg.study.seed)
    with file_lock(folder / "build.lock"):
        return build_library(ctx.guide, ctx.space, ctx.data, convert, cfg.library, folder=folder, device=ctx.device,
                             latency=latency, activations=activations, artifacts=ctx.artifacts, progress=progress)


def observed(study: optuna.Study, ctx: StudyContext, library: BlockLibrary) -> list[tuple[tuple[int, ...], float]]:
    """(chain, validation accuracy) of every converted trial whose candidate the library holds block by block."""
    found = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if REPEAT_OF in t.user_attrs or t.user_attrs.get("method", "not") != "not" \
                or t.user_attrs.get("val_accuracy") is None:
            continue
        try:
            candidate, _ = ctx.space(optuna.trial.FixedTrial(t.params), ctx.guide)
        except ValueError:  # a trial of an earlier version of the space (--force): not this space's candidate
            continue
        chain = library.chain_of(candidate)
        if chain is not None:
            found.append((chain, float(t.user_attrs["val_accuracy"])))
    return found


def seed_study(study: optuna.Study, ctx: StudyContext, wd: WorkDir, *, progress: bool) -> None:
    """With ``[library] enabled``: build the library and enqueue its predicted front (one candidate per level of
    ``library.cost``), once per study."""
    cfg = ctx.config.library
    if not cfg.enabled or study.user_attrs.get(LIBRARY_ATTR):
        return
    library = study_library(ctx, wd, progress=progress)
    predictor = predictor_for(study, ctx, library)
    proposals = front(library, predictor, cfg.cost, list(cfg.levels), space=ctx.space, guide=ctx.guide)
    for level, p in proposals:
        enqueue(study, p, level=level)
    study.set_user_attr(LIBRARY_ATTR, {"key": library.key, "cost": cfg.cost, "levels": list(cfg.levels),
                                       "enqueued": len(proposals), "build": library.build})
    logger.info("block library: %d candidates enqueued (%s at %s of the guide's); %s", len(proposals), cfg.cost,
                ", ".join(f"{lv:g}" for lv, _ in proposals), predictor.describe())


def enqueue(study: optuna.Study, proposal: Proposal, *, level: float | None = None) -> None:
    """Enqueue a proposal as a trial, what the library predicted for it kept on the trial."""
    study.enqueue_trial(proposal.params, skip_if_exists=True, user_attrs={
        PREDICTED_ATTR: {"val_accuracy": proposal.predicted, "ratios": proposal.ratios,
                         **({"level": level} if level is not None else {})}})


def predictor_for(study: optuna.Study, ctx: StudyContext, library: BlockLibrary) -> Predictor:
    """The library's predictor, calibrated on the study's converted trials."""
    return calibrate(library, observed(study, ctx, library))
