"""The from-scratch baseline: the same deploy network, freshly initialised, trained on the task alone.

Same budget and rule as a conversion: the fine-tuning rule (early stopping on validation, best state kept)
with extra epochs worth the alignment steps the conversion spent, so every comparison is one call away.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch

from ..data import TaskData
from ..guides import Guide
from ..training import FitReport, evaluate, fit_classifier
from ..utils.reinit import reinitialize
from .config import Candidate, ConvertConfig
from .engine import budget_steps
from .hybrid import DeployModel, Hybrid


@dataclass
class ScratchResult:
    model: DeployModel
    fit: FitReport
    val_accuracy: float
    test_accuracy: float
    wall_s: float
    max_epochs: int
    val_loss: float = float("nan")  # mean cross-entropy (per token for language models)
    test_loss: float = float("nan")


def scratch_model(guide: Guide, candidate: Candidate, config: ConvertConfig) -> DeployModel:
    """The candidate's deploy network with every weight (kept guide parts included) re-initialised."""
    hybrid = Hybrid(guide, candidate, config)
    hybrid.swap_in(candidate.swap_order)
    model = hybrid.deploy()
    torch.manual_seed(config.seed)
    reinitialize(model)
    return model


def train_from_scratch(guide: Guide, candidate: Candidate, data: TaskData, config: ConvertConfig = ConvertConfig(),
                       *, device: str = "cpu", progress: bool = True) -> ScratchResult:
    """Train the candidate's network from random weights with the conversion's total budget."""
    start = time.perf_counter()
    model = scratch_model(guide, candidate, config).to(device)
    ft = config.finetune
    extra_epochs = math.ceil(budget_steps(candidate, config) / math.ceil(len(data.train) / ft.batch_size))
    fit = replace(ft, max_epochs=ft.max_epochs + extra_epochs)
    report = fit_classifier(model, data, fit, seed=config.seed, device=device, progress=progress, desc="scratch")
    val_acc, val_loss = evaluate(model, data.val, device=device)
    test_acc, test_loss = evaluate(model, data.test, device=device)
    return ScratchResult(model, report, val_acc, test_acc, time.perf_counter() - start, fit.max_epochs,
                         val_loss, test_loss)
