"""The baselines a user would pick instead of NoT: the same deploy network, freshly initialised, trained on the
task alone (``train_from_scratch``) or distilled from the guide (``train_distilled``).

Each method has its own training rule, chosen on validation (``benchmarks/conversion_mnist1d.py`` writes the
grid down): a rule tuned for one method is not fair to another (NoT's fine-tuning rate would stop scratch
early; scratch's erases what alignment taught). Budgets are equal in optimizer steps: a baseline may train
for the conversion's fine-tuning epochs plus as many epochs as the alignment steps are worth (``budget``:
the steps a conversion spent, or by default the most its stages may take); early stopping on validation
(best state kept) usually ends it sooner.

Distillation variants (``KD_VARIANTS``):

* ``hinton`` — Hinton et al. 2015: soft logits at a temperature plus the labels, on the training inputs.
* ``function_matching`` — Beyer et al. 2022: the student matches the guide's outputs alone on mixup-
  interpolated inputs, which the guide labels on the fly, over a long schedule (a long patience).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch

from ..data import TaskData
from ..errors import UserError, did_you_mean
from ..guides import Guide
from ..training import FitConfig, FitReport, evaluate, fit_classifier
from ..utils.devices import resolve_device
from ..utils.reinit import reinitialize
from .config import Candidate, ConvertConfig
from .hybrid import DeployModel, Hybrid
from .stages import budget_steps

# chosen on MNIST-1D validation accuracy (benchmarks/conversion_mnist1d.py, the grid in its docstring)
SCRATCH_FIT = FitConfig(max_epochs=100, patience=20, lr=3e-3)
KD_VARIANTS = {
    "hinton": FitConfig(max_epochs=100, patience=20, lr=3e-3, distill=0.5, temperature=4.0),
    "function_matching": FitConfig(max_epochs=100, patience=100, lr=3e-3, distill=1.0, temperature=1.0,
                                   mixup=1.0),
}


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
    method: str = "scratch"


def scratch_model(guide: Guide, candidate: Candidate, config: ConvertConfig) -> DeployModel:
    """The candidate's deploy network with every weight (kept guide parts included) re-initialised."""
    hybrid = Hybrid(guide, candidate, config)
    hybrid.swap_in(candidate.swap_order)
    model = hybrid.deploy()
    torch.manual_seed(config.seed)
    reinitialize(model)
    return model


def _budgeted(fit: FitConfig, candidate: Candidate, data: TaskData, config: ConvertConfig,
              budget: int | None) -> FitConfig:
    """``fit`` with the alignment steps' worth of epochs added to its own ``max_epochs`` (which equals the
    conversion's fine-tuning epochs in the default rules, so the budgets are equal)."""
    steps = budget_steps(candidate, config) if budget is None else budget
    extra = math.ceil(steps / math.ceil(len(data.train) / fit.batch_size))
    return replace(fit, max_epochs=fit.max_epochs + extra)


def train_from_scratch(guide: Guide, candidate: Candidate, data: TaskData, config: ConvertConfig = ConvertConfig(),
                       *, fit: FitConfig = SCRATCH_FIT, budget: int | None = None, device: str = "auto",
                       progress: bool = True) -> ScratchResult:
    """Train the candidate's network from random weights with ``fit`` (scratch's own rule) and the
    conversion's whole budget (``budget`` alignment steps, default the most ``config``'s stages may take)."""
    return _train(guide, candidate, data, config, _budgeted(fit, candidate, data, config, budget), None, device,
                  progress, "scratch")


def train_distilled(guide: Guide, candidate: Candidate, data: TaskData, config: ConvertConfig = ConvertConfig(),
                    *, variant: str = "function_matching", fit: FitConfig | None = None, budget: int | None = None,
                    device: str = "auto", progress: bool = True) -> ScratchResult:
    """Distil the guide into the candidate's network from random weights: ``variant`` ``hinton`` or
    ``function_matching`` (see the module), with that variant's rule (or ``fit``) and the conversion's budget.

    >>> r = train_distilled(guide, Candidate((BlockSpec.of("mlp", width=256),) * 3), data)  # doctest: +SKIP
    """
    if variant not in KD_VARIANTS:
        raise UserError(f"unknown distillation variant {variant!r}{did_you_mean(variant, KD_VARIANTS)}; valid: "
                        f"{', '.join(KD_VARIANTS)}")
    rule = _budgeted(fit or KD_VARIANTS[variant], candidate, data, config, budget)
    guide.to(resolve_device(device))  # the teacher runs where the student trains
    return _train(guide, candidate, data, config, rule, guide.module, device, progress, f"kd ({variant})")


def _train(guide, candidate, data, config, fit: FitConfig, teacher, device, progress, desc) -> ScratchResult:
    start = time.perf_counter()
    device = resolve_device(device, announce=progress)
    model = scratch_model(guide, candidate, config).to(device)
    report = fit_classifier(model, data, fit, seed=config.seed, device=device, progress=progress, desc=desc,
                            teacher=teacher)
    val_acc, val_loss = evaluate(model, data.val)
    test_acc, test_loss = evaluate(model, data.test)
    return ScratchResult(model, report, val_acc, test_acc, time.perf_counter() - start, fit.max_epochs, val_loss,
                         test_loss, method=desc)
