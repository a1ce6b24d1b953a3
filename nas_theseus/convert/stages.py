"""One alignment stage: which parts it swaps, trains and aligns (:func:`plan_stages`), and its training loop
(:func:`train_stage`) on top of a batch source (the cached guide activations or the guide streamed) and a
:class:`PlateauStopper`. :func:`~nas_theseus.convert.engine.convert` runs the stages one after another;
benchmarks time a single stage through the same functions.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
from torch import nn

from ..align import linear_cka, token_rows
from ..align.cka import FixedSide
from ..data import TaskData
from ..guides import Guide
from ..training import autocast_context, optimizer_step
from ..utils import quiet, testhooks
from ..utils.compiling import Compiler
from ..utils.distributed import check_divisible, gather_rows, sync_buffers, world
from ..utils.hashing import seed_from_key
from ..utils.loss_window import LossWindow
from ..utils.progress import progress_bar
from .activations import GuideActivations
from .config import Candidate, ConvertConfig
from .hybrid import Hybrid
from .stream import GuideStream


class ConversionError(RuntimeError):
    """A conversion that cannot go on (a non-finite loss): the reason is in the message."""


@dataclass(frozen=True)
class Stage:
    index: int
    new: tuple[int, ...]       # parts swapped in at this stage
    train: tuple[int, ...]     # targets whose weights train
    loss: tuple[int, ...]      # parts whose alignment enters the loss
    isolated: bool             # independent schedule: targets read the guide's own input
    steps: int


def plan_stages(candidate: Candidate, config: ConvertConfig) -> list[Stage]:
    order = candidate.swap_order
    steps = config.steps_per_stage
    if not order:
        return []
    if config.schedule == "joint":
        return [Stage(0, tuple(order), tuple(order), tuple(order), False, steps * len(order))]
    stages = []
    for i, k in enumerate(order):
        prefix = tuple(order[: i + 1])
        if config.schedule == "progressive":
            stages.append(Stage(i, (k,), prefix, prefix, False, steps))
        else:
            stages.append(Stage(i, (k,), (k,), (k,), config.schedule == "independent", steps))
    return stages


def budget_steps(candidate: Candidate, config: ConvertConfig) -> int:
    """Alignment optimizer steps a conversion spends (the from-scratch baseline gets them too)."""
    return sum(s.steps for s in plan_stages(candidate, config))


@torch.no_grad()
def heldout_rows(guide: Guide, data: TaskData, config: ConvertConfig, device) -> tuple[torch.Tensor, list]:
    """The held-out rows (the first ``heldout_size`` of the validation split) and the guide's activations on
    them: where stages are stopped and alignment is reported."""
    x = data.val.head(config.heldout_size)[0].to(device)
    chunks = [guide.activations(x[i:i + 512]) for i in range(0, len(x), 512)]
    return x, [torch.cat(level) for level in zip(*chunks)]


class PlateauStopper:
    """The plateau rule of a stage, fed the held-out score (lower is better) at each evaluation.

    ``update`` says ``best`` (an improvement of more than ``tolerance``: keep this state), ``continue``,
    ``drop`` (``patience`` evaluations without one: cut the learning rate) or ``stop`` (such a plateau after
    ``lr_drops`` cuts); never ``drop`` or ``stop`` before ``min_steps``.
    """

    def __init__(self, *, patience: int, tolerance: float, min_steps: int, lr_drops: int):
        self.patience, self.tolerance, self.min_steps, self.lr_drops = patience, tolerance, min_steps, lr_drops
        self.best, self.bad, self.drops = math.inf, 0, 0

    @classmethod
    def of(cls, config: ConvertConfig) -> PlateauStopper:
        return cls(patience=config.stop_patience, tolerance=config.stop_tolerance, min_steps=config.min_steps,
                   lr_drops=config.lr_drops)

    def update(self, score: float, steps_done: int) -> Literal["best", "continue", "drop", "stop"]:
        if score < self.best - self.tolerance:
            self.best, self.bad = score, 0
            return "best"
        self.bad += 1
        if self.bad < self.patience or steps_done < self.min_steps:
            return "continue"
        if self.drops == self.lr_drops:
            return "stop"
        self.drops, self.bad = self.drops + 1, 0
        return "drop"


def train_stage(hybrid: Hybrid, losses: nn.ModuleDict, stage: Stage, feed: GuideActivations | GuideStream,
                data: TaskData, config: ConvertConfig, *, key: str, device, probe: tuple, heldout: tuple,
                progress: bool = False, n_stages: int = 1,
                compiler: Compiler | None = None) -> tuple[list[float], int, str]:
    """Train one stage of ``hybrid`` (its parts ``stage.new`` swapped in, ``losses`` holding an alignment loss
    per part in ``stage.loss``) on batches from ``feed``; ``probe`` and ``heldout`` are (rows, guide
    activations) pairs: the rows adapters are refit on, and the rows the plateau rule scores. Returns (loss
    curve, steps taken, why it stopped: ``fixed`` | ``plateau`` | ``max_steps``). Under the plateau rule the
    best evaluated state is the one left in place. Seeded by ``key``: a rerun draws the same batches. In a
    data-parallel run every rank calls this alike: each trains on its shard of every batch, the loss is over the
    global batch (:mod:`nas_theseus.utils.distributed`), and the curve and the weights are every rank's.
    ``compiler``: a conversion's, so one that fell back stays off (default: one for ``config.compile``)."""
    torch.manual_seed(seed_from_key(key))
    generator = torch.Generator().manual_seed(seed_from_key(key))
    modules = _trainable_modules(hybrid, stage)
    watched = [*modules, *(losses[str(k)] for k in stage.loss)]  # what trains, and what a best state holds
    opt, sched = _optimizer(watched, stage, config)
    # what sees only this rank's rows in a data-parallel run: its gradients are summed over the ranks (a loss's
    # own parameters, a bridge of MSE, see the gathered batch and have the whole gradient on every rank)
    local = [p for m in modules for p in m.parameters()]
    compiler = _set_modes(hybrid, modules, compiler or Compiler(config.compile))
    names = ",".join(hybrid.guide.parts[k].name for k in stage.new)
    stop = max(stage.loss)
    batches = _batches(hybrid, stage, feed, data, config, generator, device)
    window = _loss_window(stage, f"{config.alignment}, parts {names}")
    curve: list[float] = []  # one point per window: the mean over its steps of the per-part mean loss
    plateau = (_Plateau(hybrid, stage, losses, heldout, config, watched, opt) if config.stage_stop == "plateau"
               else None)
    hook = testhooks.armed("stage_step")  # None unless a test armed it (read once, not at every step)
    ranks = world()[1]
    refit = bool(config.refit_every) and not stage.isolated and hybrid.reads_through_adapter(stop)
    stopped, steps = "max_steps" if plateau else "fixed", stage.steps
    bar = progress_bar(total=stage.steps, desc=f"stage {stage.index + 1}/{n_stages} [{names}]", unit="step",
                       enabled=progress)
    try:
        for step in range(stage.steps):
            loss = compiler.run(partial(_step, hybrid, losses, stage, next(batches), opt, sched, config, device,
                                        local, modules, ranks), f"stage {stage.index + 1}, step {step + 1}")
            if window.add(loss, step):  # once per window of steps, the host reads the losses
                curve.append(_window_sum(window, len(stage.loss)) / window.size)
                bar.set_postfix(loss=f"{curve[-1]:.4f}")
                quiet.pause_point()  # a latency measurement of this machine waits for no step of ours
            if refit and (step + 1) % config.refit_every == 0:  # only adapters the loss reads through
                hybrid.refit(*probe, stop=stop)
                for m in modules:
                    m.train()
            bar.update(1)
            if hook is not None:
                hook()
            if plateau and ((step + 1) % config.eval_every == 0 or step + 1 == stage.steps) \
                    and plateau.evaluate(step + 1, bar):
                stopped, steps = "plateau", step + 1
                break
        _window_sum(window, len(stage.loss))  # the last partial window: checked, not plotted
    finally:
        bar.close()
    if plateau:
        plateau.restore_best()
    hybrid.eval()
    return curve, steps, stopped


def _set_modes(hybrid: Hybrid, modules: list[nn.Module], compiler: Compiler) -> Compiler:
    """The hybrid in eval mode but for the modules that train (compiled in place where ``compiler`` is on:
    parameter names, which checkpoints and deploy read, are unchanged); returns ``compiler``."""
    hybrid.eval()
    for m in modules:
        m.train()
    compiler.in_place(modules)
    return compiler


def _loss_window(stage: Stage, where: str) -> LossWindow:
    """The stage's losses, read by the host once per ~1/50 of its steps; a non-finite one fails it."""
    return LossWindow(max(1, stage.steps // 50), lambda v, step: ConversionError(
        f"non-finite alignment loss ({v}) at stage {stage.index + 1}, step {step} ({where})"))


def _batches(hybrid: Hybrid, stage: Stage, feed: GuideActivations | GuideStream, data: TaskData,
             config: ConvertConfig, generator: torch.Generator, device):
    """The stage's batches from ``feed``: the guide activation levels (and the raw input, if) its steps read."""
    batch_size = min(config.batch_size, len(data.train))
    check_divisible(batch_size, f"stage {stage.index + 1}")  # a gathered loss needs equal shards
    return feed.stage_batches(data, batch_size, generator, device, _levels(hybrid, stage), _needs_x(hybrid, stage))


def _window_sum(window: LossWindow, n_terms: int) -> float:
    """The window's losses read, each its mean over the ``n_terms`` loss parts, summed in step order."""
    acc = 0.0
    for v, _ in window.read():
        acc += v / n_terms
    return acc


class _Plateau:
    """The plateau rule (:class:`PlateauStopper`) run on a stage: scores the held-out rows, keeps the best
    state of what trains (``watched``), and cuts ``opt``'s learning rate on a plateau."""

    def __init__(self, hybrid: Hybrid, stage: Stage, losses: nn.ModuleDict, heldout: tuple,
                 config: ConvertConfig, watched: list[nn.Module], opt):
        self.hybrid, self.stage, self.losses, self.heldout, self.config = hybrid, stage, losses, heldout, config
        self.watched, self.opt = watched, opt
        self.stopper = PlateauStopper.of(config)
        cka_sides = config.alignment == "cka" and not hybrid.tokens  # the guide's side, computed once a stage
        self.guide_sides = {k: FixedSide(heldout[1][k + 1].double()) for k in stage.loss} if cka_sides else {}
        self.best: list[dict] | None = None

    def evaluate(self, steps_done: int, bar) -> bool:
        """Score the held-out rows after ``steps_done`` steps and act on the verdict; whether to stop."""
        verdict = self.stopper.update(_heldout_score(self.hybrid, self.stage, self.heldout, self.losses,
                                                     self.config.alignment, self.guide_sides), steps_done)
        bar.set_postfix(heldout=f"{1 - self.stopper.best:.4f}")
        if verdict == "best":
            self.best = [copy.deepcopy(m.state_dict()) for m in self.watched]
        elif verdict == "drop":  # a plateau at this rate: go on at a lower one
            for group in self.opt.param_groups:
                group["lr"] *= self.config.lr_drop_factor
        return verdict == "stop"

    def restore_best(self) -> None:
        """The best evaluated state back in place, if one was kept."""
        if self.best is not None:
            for m, state in zip(self.watched, self.best):
                m.load_state_dict(state)


def _optimizer(watched: list[nn.Module], stage: Stage, config: ConvertConfig):
    """AdamW over what trains; fixed stages decay it by a cosine, plateau ones keep it constant between the
    stopper's cuts."""
    opt = torch.optim.AdamW([p for m in watched for p in m.parameters()], lr=config.lr,
                            weight_decay=config.weight_decay)
    if config.stage_stop == "plateau":
        return opt, None
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=stage.steps, eta_min=config.lr * 0.1)


def _step(hybrid: Hybrid, losses: nn.ModuleDict, stage: Stage, batch: tuple, opt, sched, config: ConvertConfig,
          device, local: list, hybrid_modules: list, ranks: int = 1) -> torch.Tensor:
    """One optimizer step on one batch ``(x, guide activations)``; returns the loss (on the device). ``local``:
    the parameters whose gradients are summed over the ``ranks`` of a data-parallel run; ``hybrid_modules``: the
    modules that train (their buffers are rank 0's after the step). Nothing but the step's own work in one
    process (the step is launch-bound on a GPU for small networks)."""
    x, acts = batch
    with autocast_context(device, config.autocast):  # a no-op unless bf16 was asked for
        outs = _forward_outputs(hybrid, stage, x, acts)
    loss = None
    for k in stage.loss:
        # the similarity in float32 whatever the forward ran in (bf16 Gram matrices lose the CKA ≈ 1 regime);
        # over the global batch in a data-parallel run: every rank's rows, its own keeping their gradient
        h, a = outs[k].float(), acts[k + 1]
        term = losses[str(k)](gather_rows(h), gather_rows(a)) if ranks > 1 else losses[str(k)](h, a)
        loss = term if loss is None else loss + term
    optimizer_step(loss, opt, sched, summed=local if ranks > 1 else None, ranks=ranks)
    if ranks > 1:
        sync_buffers(hybrid_modules)  # batch norm's running statistics: rank 0's on every rank
    return loss


def _trainable_modules(hybrid: Hybrid, stage: Stage) -> list[nn.Module]:
    mods = [hybrid.targets[str(k)] for k in stage.train]
    if hybrid.new_stem is not None and 0 in stage.train:
        mods.append(hybrid.new_stem)
    used = set(stage.train) if stage.isolated else set(hybrid.used_in_adapters()) & set(stage.train)
    mods += [hybrid.in_adapters[str(k)] for k in sorted(used) if str(k) in hybrid.in_adapters]
    return mods


def _levels(hybrid: Hybrid, stage: Stage) -> set[int]:
    """The guide activation levels a stage's step reads: each loss part's target A_{k+1}, and the inputs of
    the parts it starts from (A_k of each isolated part; of the first swapped part otherwise)."""
    starts = set(stage.train) if stage.isolated else {hybrid.first_swapped()}
    return starts | {k + 1 for k in stage.loss}


def _needs_x(hybrid: Hybrid, stage: Stage) -> bool:
    """Whether a step reads the raw input: only a relearned stem that feeds the first part does."""
    return hybrid.new_stem is not None and (0 in stage.train if stage.isolated else hybrid.first_swapped() == 0)


def _forward_outputs(hybrid: Hybrid, stage: Stage, x, acts) -> dict[int, torch.Tensor]:
    """The outputs the stage's loss reads, and nothing more (see :meth:`Hybrid.forward_span`)."""
    if not stage.isolated:
        start = hybrid.first_swapped()
        return hybrid.forward_span(x, acts[start], max(stage.loss))
    outs = {}
    for k in stage.train:
        h = hybrid.new_stem(x) if k == 0 and hybrid.new_stem is not None else acts[k]
        if str(k) in hybrid.in_adapters:
            h = hybrid.in_adapters[str(k)](h)
        outs[k] = hybrid.targets[str(k)](h)
    return outs


@torch.no_grad()
def _heldout_score(hybrid: Hybrid, stage: Stage, heldout, losses: nn.ModuleDict, alignment: str,
                   guide_sides: dict[int, FixedSide]) -> float:
    """The stage's alignment loss on the held-out rows, mean over its loss parts (lower is better): 1 − linear
    CKA (in float64) for ``cka``, the guide's side of each part taken from ``guide_sides`` (computed once a
    stage, by :class:`_Plateau`); each other loss's own 1 − similarity (a D-MNN stage stops when D-MNN stops
    improving, not when CKA does)."""
    x, acts = heldout
    was = [m.training for m in [*hybrid.modules(), *losses.modules()]]
    hybrid.eval()
    losses.eval()
    try:
        outs = _forward_outputs(hybrid, stage, x if _needs_x(hybrid, stage) else None, acts)
        if alignment == "cka" and hybrid.tokens:
            terms = [1.0 - float(linear_cka(*token_rows(outs[k].double(), acts[k + 1].double())))
                     for k in stage.loss]
        elif alignment == "cka":
            terms = [1.0 - float(guide_sides[k].cka(outs[k].double())) for k in stage.loss]
        else:
            terms = [float(losses[str(k)](outs[k].float(), acts[k + 1])) for k in stage.loss]
    finally:
        for m, mode in zip([*hybrid.modules(), *losses.modules()], was):
            m.training = mode
    return sum(terms) / len(terms)
