"""``nas-theseus library``: budgets answered from a study's block library, and the answers converted as trials."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..library.answer import Proposal, absolute_budgets, parse_budget, propose
from ..library.library import BlockLibrary
from ..library.predict import Predictor
from .api import open_study
from .budget import finished_trials
from .context import StudyContext, build_context
from .library import enqueue, predictor_for, study_library
from .runner import run_study
from .workdir import WorkDir


def answer(workdir: Path, budgets: list[str], *, top: int = 3, progress: bool = True
           ) -> tuple[BlockLibrary, Predictor, list[Proposal], optuna.Study, StudyContext, WorkDir]:
    """``nas-theseus library``: the ``top`` best predicted candidates within ``budgets`` (``NAME=RATIO`` or
    ``NAME=abs:VALUE``) from the study's library (built first where missing), no training."""
    parsed = [parse_budget(b) for b in budgets]
    wd, config, study = open_study(workdir)
    ctx = build_context(config, progress=progress)
    library = study_library(ctx, wd, progress=progress)
    predictor = predictor_for(study, ctx, library)
    proposals = propose(library, predictor, absolute_budgets(library, parsed), space=ctx.space, guide=ctx.guide,
                        n=top)
    return library, predictor, proposals, study, ctx, wd


def convert_proposals(study: optuna.Study, ctx: StudyContext, wd: WorkDir, proposals: list[Proposal], *,
                      progress: bool = True) -> list[int]:
    """``library --convert``: the proposals not converted yet enqueued and converted now, as trials of the study
    (the usual progressive conversion); returns their trial numbers."""
    before = {t.number for t in study.get_trials(deepcopy=False)}
    done = {json.dumps(t.params, sort_keys=True) for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)}
    fresh = [p for p in proposals if json.dumps(p.params, sort_keys=True) not in done]
    for p in fresh:
        enqueue(study, p)
    if fresh:
        run_study(ctx.config, wd.root, progress=progress, n_trials=finished_trials(study) + len(fresh), ctx=ctx)
    return sorted({t.number for t in study.get_trials(deepcopy=False)} - before)
