"""One alignment stage: which parts it swaps, trains and aligns (:func:`plan_stages`), and its training loop
(:func:`train_stage`) on top of a batch source (the cached guide activations or the guide streamed) and a
:class:`PlateauStopper`. :func:`~nas_theseus.convert.engine.convert` runs the stages one after another;
benchmarks time a single stage through the same functions.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..align import linear_cka, token_rows
from ..align.cka import FixedSide
from ..data import TaskData
from ..guides import Guide
from ..training import autocast_context, optimizer_step
from ..utils import quiet, testhooks
from ..utils.distributed import check_divisible, gather_rows, sync_buffers, world
from ..utils.hashing import seed_from_key
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


class _LossCurve:
    """A stage's loss, one point per window of steps (their mean of the per-part mean), read from the device
    once per window; a non-finite loss fails with its stage and step."""

    def __init__(self, window: int, n_terms: int, stage: int, what: str):
        self.window, self.n_terms, self.stage, self.what = window, n_terms, stage, what
        self.points: list[float] = []
        self._pending: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor, step: int) -> float | None:
        """Record step ``step``'s loss; at the end of a window, return the window's point."""
        self._pending.append(loss.detach())
        if (step + 1) % self.window:
            return None
        self.points.append(self.settle(step) / self.window)
        return self.points[-1]

    def settle(self, last_step: int) -> float:
        """Read the pending losses (one host sync), fail on a non-finite one, and return their sum, in order."""
        values = torch.stack(self._pending).tolist() if self._pending else []
        first = last_step - len(values) + 1
        self._pending.clear()
        acc = 0.0
        for i, v in enumerate(values):
            if not math.isfinite(v):
                raise ConversionError(f"non-finite alignment loss ({v}) at stage {self.stage}, step {first + i} "
                                      f"({self.what})")
            acc += v / self.n_terms
        return acc


def train_stage(hybrid: Hybrid, losses: nn.ModuleDict, stage: Stage, feed: GuideActivations | GuideStream,
                data: TaskData, config: ConvertConfig, *, key: str, device, probe: tuple, heldout: tuple,
                progress: bool = False, n_stages: int = 1) -> tuple[list[float], int, str]:
    """Train one stage of ``hybrid`` (its parts ``stage.new`` swapped in, ``losses`` holding an alignment loss
    per part in ``stage.loss``) on batches from ``feed``; ``probe`` and ``heldout`` are (rows, guide
    activations) pairs: the rows adapters are refit on, and the rows the plateau rule scores. Returns (loss
    curve, steps taken, why it stopped: ``fixed`` | ``plateau`` | ``max_steps``). Under the plateau rule the
    best evaluated state is the one left in place. Seeded by ``key``: a rerun draws the same batches. In a
    data-parallel run every rank calls this alike: each trains on its shard of every batch, the loss is over the
    global batch (:mod:`nas_theseus.utils.distributed`), and the curve and the weights are every rank's."""
    torch.manual_seed(seed_from_key(key))
    generator = torch.Generator().manual_seed(seed_from_key(key))
    modules = _trainable_modules(hybrid, stage)
    watched = [*modules, *(losses[str(k)] for k in stage.loss)]  # what trains, and what a best state holds
    opt, sched = _optimizer(watched, stage, config)
    # what sees only this rank's rows in a data-parallel run: its gradients are summed over the ranks (a loss's
    # own parameters, a bridge of MSE, see the gathered batch and have the whole gradient on every rank)
    local = [p for m in modules for p in m.parameters()]
    hybrid.eval()
    for m in modules:
        m.train()
    if config.compile:
        for m in modules:
            m.compile()  # in place: parameter names (checkpoints, deploy) are unchanged
    names = ",".join(hybrid.guide.parts[k].name for k in stage.new)
    levels, needs_x, stop = _levels(hybrid, stage), _needs_x(hybrid, stage), max(stage.loss)
    batch_size = min(config.batch_size, len(data.train))
    check_divisible(batch_size, f"stage {stage.index + 1}")  # a gathered loss needs equal shards
    batches = feed.stage_batches(data, batch_size, generator, device, levels, needs_x)
    curve = _LossCurve(max(1, stage.steps // 50), len(stage.loss), stage.index + 1,
                       f"{config.alignment}, parts {names}")
    stopper = PlateauStopper.of(config) if config.stage_stop == "plateau" else None
    cka_sides = stopper is not None and config.alignment == "cka" and not hybrid.tokens
    guide_sides = {k: FixedSide(heldout[1][k + 1].double()) for k in stage.loss} if cka_sides else {}
    hook = testhooks.armed("stage_step")  # None unless a test armed it (read once, not at every step)
    ranks = world()[1]
    refit = bool(config.refit_every) and not stage.isolated and hybrid.reads_through_adapter(stop)
    best, stopped, steps = None, "max_steps" if stopper else "fixed", stage.steps
    bar = progress_bar(total=stage.steps, desc=f"stage {stage.index + 1}/{n_stages} [{names}]", unit="step",
                       enabled=progress)
    try:
        for step in range(stage.steps):
            point = curve.add(_step(hybrid, losses, stage, next(batches), opt, sched, config, device, local,
                                    modules, ranks), step)
            if point is not None:  # once per window of steps, where the host reads the losses
                bar.set_postfix(loss=f"{point:.4f}")
                quiet.pause_point()  # a latency measurement of this machine waits for no step of ours
            if refit and (step + 1) % config.refit_every == 0:  # only adapters the loss reads through
                hybrid.refit(*probe, stop=stop)
                for m in modules:
                    m.train()
            bar.update(1)
            if hook is not None:
                hook()
            if stopper and ((step + 1) % config.eval_every == 0 or step + 1 == stage.steps):
                verdict = stopper.update(_heldout_score(hybrid, stage, heldout, losses, config.alignment,
                                                        guide_sides), step + 1)
                bar.set_postfix(heldout=f"{1 - stopper.best:.4f}")
                if verdict == "best":
                    best = [copy.deepcopy(m.state_dict()) for m in watched]
                elif verdict == "drop":  # a plateau at this rate: go on at a lower one
                    for group in opt.param_groups:
                        group["lr"] *= config.lr_drop_factor
                elif verdict == "stop":
                    stopped, steps = "plateau", step + 1
                    break
        curve.settle(steps - 1)  # the last partial window: checked, not plotted
    finally:
        bar.close()
    if best is not None:
        for m, state in zip(watched, best):
            m.load_state_dict(state)
    hybrid.eval()
    return curve.points, steps, stopped


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
    stage, by :func:`train_stage`); each other loss's own 1 − similarity (a D-MNN stage stops when D-MNN stops
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
