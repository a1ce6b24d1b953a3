"""Task training with early stopping: trains guides, fine-tunes converted networks and from-scratch targets.

One rule for all three so comparisons are fair: AdamW with cosine decay over ``max_epochs``, evaluated on the
validation split after every epoch; training stops after ``patience`` epochs without improvement and the
**best** state (by validation accuracy, validation loss breaking ties) is restored, not the last one.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import Split, TaskData
from .errors import UserError
from .utils import quiet
from .utils.compiling import Compiler
from .utils.devices import canonical_device, module_device
from .utils.distributed import all_sum, shard, sync_buffers, sync_grads, world
from .utils.hashing import keyed_fields
from .utils.loss_window import LossWindow
from .utils.progress import progress_bar
from .utils.transfer import upload


@keyed_fields("max_epochs", "patience", "lr", "weight_decay", "batch_size", "cosine", "monitor")
@dataclass(frozen=True)
class FitConfig:
    """Options of :func:`fit_classifier` (keyword-only, primitives, hashable for cache keys).

    With a ``teacher`` (see :func:`fit_classifier`): ``distill`` is the weight of the distillation term in
    the loss, (1 − distill) · CE(labels) + distill · T² · KL(teacher_T ‖ student_T) at temperature
    ``temperature`` (Hinton et al. 2015; ``distill = 1`` matches the teacher alone); ``mixup`` > 0 trains on
    mixup-interpolated inputs λ·x_i + (1 − λ)·x_j, λ ~ Beta(mixup, mixup), which the teacher labels on the
    fly and whose labels mix likewise (with ``distill = 1``: *function matching*, Beyer et al. 2022).
    """

    max_epochs: int = 60
    patience: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    cosine: bool = True
    monitor: str = "accuracy"  # the best state: highest validation accuracy ("accuracy") or lowest loss ("loss")
    distill: float = 0.0
    temperature: float = 4.0
    mixup: float = 0.0
    autocast: str | None = None  # "bf16": forward under torch.autocast in bfloat16 (losses in float32)

    def __post_init__(self) -> None:
        if self.monitor not in ("accuracy", "loss"):
            raise UserError(f"fit monitor must be 'accuracy' or 'loss', got {self.monitor!r}")
        if self.autocast not in (None, "bf16"):
            raise UserError(f"fit autocast must be None or 'bf16', got {self.autocast!r}")
        if not 0.0 <= self.distill <= 1.0 or self.temperature <= 0 or self.mixup < 0:
            raise UserError(f"fit: distill must lie in [0, 1], temperature be > 0 and mixup >= 0 (got "
                            f"{self.distill}, {self.temperature}, {self.mixup})")


@dataclass
class FitReport:
    """What a training run did: per-epoch curves, the best epoch, and the wall time."""

    epochs: int = 0
    steps: int = 0
    best_epoch: int = -1
    best_val_accuracy: float = float("nan")
    best_val_loss: float = float("inf")
    train_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    wall_s: float = 0.0


def task_loss(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy for class labels ``y`` (N,) with logits (N, C), or next-token targets ``y`` (N, T) with
    logits (N, T, V) (every position counts once)."""
    if y.dim() > 1:
        return F.cross_entropy(logits.flatten(0, -2), y.flatten(), reduction=reduction)
    return F.cross_entropy(logits, y, reduction=reduction)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, *, batch_size: int = 1024) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``split``, in eval mode, on the model's own device;
    restores the model's mode. For next-token targets both are per token (perplexity = exp of the loss)."""
    device = module_device(model)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    n = 0
    for b in split.batches(batch_size, device=device):
        logits = model(b.x)
        loss_sum += task_loss(logits.float(), b.y, reduction="sum").double()
        correct += (logits.argmax(-1) == b.y).sum()
        n += b.y.numel()
    model.train(was_training)
    n = max(n, 1)
    return correct.item() / n, loss_sum.item() / n  # one host sync per evaluation, not per batch


def accuracy(model: nn.Module, split: Split) -> float:
    return evaluate(model, split)[0]


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(teacher / T) ‖ softmax(student / T)), averaged over samples (and positions)."""
    s = F.log_softmax(student.flatten(0, -2) / temperature, dim=-1)
    t = F.log_softmax(teacher.flatten(0, -2) / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature ** 2


def fit_classifier(model: nn.Module, data: TaskData, config: FitConfig = FitConfig(), *, seed: int = 0,
                   device: torch.device | str = "cpu", progress: bool = True, desc: str = "train",
                   params: list[nn.Parameter] | None = None, teacher: nn.Module | None = None,
                   compile: bool | str | Compiler = False) -> FitReport:
    """Train ``model`` on ``data.train`` with cross-entropy; returns the report, leaves the best state loaded.

    ``params`` restricts which parameters train (default: all that require grad). ``teacher`` (a frozen
    network of the same task on ``device``, run in eval mode) enables ``config.distill`` and ``config.mixup``.
    ``compile``: the training forward runs through ``torch.compile(model)``, in the mode it names, or through
    a given :class:`~nas_theseus.utils.compiling.Compiler` (a conversion's: one fallback for all its parts);
    where the compiler fails, training goes on eagerly with one warning. The module itself, evaluated and
    returned, stays as it is.
    Deterministic for a seed on CPU: the batch order (and mixup) comes from generators seeded with ``seed``.
    The host reads the losses once per ``SYNC_EVERY`` steps (a non-finite loss fails the run then, with its
    step), so a GPU is never waited for at every step.
    """
    device = canonical_device(device)
    params = _trainable(model, config, device, params, teacher)
    g = torch.Generator().manual_seed(seed)
    mix = np.random.default_rng(seed + 1)  # mixup's λ and partners
    torch.manual_seed(seed)
    if teacher is not None:
        teacher.eval()
    compiler = compile if isinstance(compile, Compiler) else Compiler(compile, what=desc)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    total = math.ceil(len(data.train) / config.batch_size) * config.max_epochs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total) if config.cosine else None
    report = FitReport()
    best_state = copy.deepcopy(model.state_dict())
    start = time.perf_counter()
    bar = progress_bar(total=config.max_epochs, desc=desc, unit="epoch", enabled=progress)
    bad_epochs = 0
    try:
        for epoch in range(config.max_epochs):
            model.train()
            epoch_loss = _train_epoch(model, compiler, teacher, data, config, opt, sched, g, mix, device, report,
                                      desc, epoch)
            val_acc, val_loss = evaluate(model, data.val)
            report.train_loss.append(epoch_loss / len(data.train))
            report.val_accuracy.append(val_acc)
            report.epochs = epoch + 1
            if _improves(report, config.monitor, val_acc, val_loss):
                report.best_epoch, report.best_val_accuracy, report.best_val_loss = epoch, val_acc, val_loss
                best_state = copy.deepcopy(model.state_dict())
                bad_epochs = 0
            else:
                bad_epochs += 1
            bar.update(1)
            if config.monitor == "accuracy":
                bar.set_postfix(val_acc=f"{val_acc:.3f}", best=f"{report.best_val_accuracy:.3f}")
            else:
                bar.set_postfix(val_loss=f"{val_loss:.4f}", best=f"{report.best_val_loss:.4f}")
            if bad_epochs >= config.patience:
                break
    finally:
        bar.close()
    model.load_state_dict(best_state)
    model.eval()
    report.wall_s = time.perf_counter() - start
    return report


def _trainable(model: nn.Module, config: FitConfig, device, params, teacher) -> list[nn.Parameter]:
    """The parameters that train, the model moved to ``device``; one line for what cannot train."""
    if (config.distill > 0 or config.mixup > 0) and teacher is None:
        raise UserError("fit: distill and mixup need a teacher (the guide) to label the inputs")
    model.to(device)
    if teacher is not None and module_device(teacher) != device:
        raise UserError(f"fit: the teacher is on {module_device(teacher)} but the model on {device}; move it "
                        f"first (guide.to(device))")
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not params:
        raise UserError("nothing to train: the model has no trainable parameters")
    return params


def _train_epoch(model: nn.Module, compiler: Compiler, teacher, data: TaskData, config: FitConfig, opt, sched,
                 g: torch.Generator, mix, device, report: FitReport, desc: str, epoch: int) -> float:
    """One pass over the training split in an order drawn from ``g`` (augmented, seeded from ``g`` too);
    returns the summed training loss (``report.steps`` counts the steps). The host reads the losses once per
    ``SYNC_EVERY`` steps and at the end (:class:`~nas_theseus.utils.loss_window.LossWindow`), where a non-finite
    one raises :class:`FloatingPointError` with its step."""
    losses = LossWindow(SYNC_EVERY, lambda _, step: FloatingPointError(
        f"{desc}: non-finite training loss at step {step} (epoch {epoch})"))
    total = 0.0
    ranks = world()[1]
    order = torch.randperm(len(data.train), generator=g)
    augment = data.augmentation
    seed = int(torch.randint(2**62, (1,), generator=g)) if augment.name != "none" else 0
    for _, xb, yb in data.train.batches(config.batch_size, order=order, device=device, augment=augment, seed=seed):
        loss = compiler.run(partial(_train_step, model, compiler, teacher, xb, yb, config, opt, sched, mix, device,
                                    ranks), f"{desc} step {report.steps + 1}")
        if losses.add(loss, report.steps, len(yb)):
            total = _summed(losses, total)
        report.steps += 1
    total = _summed(losses, total)
    return float(all_sum(torch.tensor(total, dtype=torch.float64, device=device)))  # over every rank's share


def _train_step(model: nn.Module, compiler: Compiler, teacher, xb, yb, config: FitConfig, opt, sched, mix, device,
                ranks: int) -> torch.Tensor:
    """One optimizer step on a batch, ``model``'s forward through ``compiler``; returns the loss."""
    forward = compiler.forward(model)  # compiled once; eager once the compiler has fallen back
    with autocast_context(device, config.autocast):
        if teacher is None:
            loss = _task_share(forward, xb, yb, device)
        else:
            loss = _taught_loss(forward, teacher, xb, yb, config, mix)
    optimizer_step(loss, opt, sched, uniform=len(yb) >= ranks, ranks=ranks)  # a short last batch may leave a
    if ranks > 1:                                                                # rank no rows
        sync_buffers([model])  # batch norm's running statistics: rank 0's on every rank
    return loss


def _summed(losses: LossWindow, total: float) -> float:
    """``total`` plus the window's losses, each times its rows, in step order (float64 on the host)."""
    quiet.pause_point()  # a latency measurement of this machine waits for no step of ours (utils/quiet.py)
    for v, n in losses.read():
        total += v * n
    return total


def _task_share(forward, xb, yb, device) -> torch.Tensor:
    """The task loss of a batch: on this rank's own rows in a data-parallel run (all of them in one process)."""
    xs, ys = shard(xb), shard(yb)
    return _mean_share(lambda: task_loss(forward(xs).float(), ys), len(ys), len(yb), device)


def _mean_share(mean_loss, local: int, total: int, device) -> torch.Tensor:
    """This rank's share of a batch's mean loss: its rows' mean × local / total rows (the shares of all ranks
    add up to the batch's mean, and so do their gradients); the loss itself in one process."""
    if local == total:
        return mean_loss()
    return mean_loss() * (local / total) if local else torch.zeros((), device=device)


def optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, sched=None, *, summed=None,
                   uniform: bool = True, ranks: int | None = None) -> None:
    """One step of ``opt`` (and of its schedule, if any) on ``loss``'s gradients. In a data-parallel run
    (:mod:`nas_theseus.utils.distributed`; nothing changes in one process) the gradients of ``summed`` (default:
    every parameter of ``opt``) are summed over the ranks: those of the parameters that see only this rank's
    rows; ``uniform``: every rank backpropagated through the same modules (see ``sync_grads``). ``ranks``: the
    number of ranks, where the caller knows it (else read here)."""
    for group in opt.param_groups:  # zero_grad(set_to_none=True), without its per-call profiler wrappers
        for p in group["params"]:
            p.grad = None
    if loss.requires_grad:  # a data-parallel rank with no rows of a last, short batch has nothing to backprop
        loss.backward()
    if (ranks if ranks is not None else world()[1]) > 1:
        sync_grads(summed if summed is not None else (p for group in opt.param_groups for p in group["params"]),
                   uniform=uniform)
    opt.step()
    if sched is not None:
        sched.step()


def _improves(report: FitReport, monitor: str, val_acc: float, val_loss: float) -> bool:
    """Whether this epoch beats the best so far: by accuracy (ties broken by loss), or by loss."""
    if report.best_epoch < 0:
        return True
    if monitor == "accuracy":
        return (val_acc, -val_loss) > (report.best_val_accuracy, -report.best_val_loss)
    return (-val_loss, val_acc) > (-report.best_val_loss, report.best_val_accuracy)


SYNC_EVERY = 50  # training steps between two reads of the losses by the host


def _taught_loss(model: nn.Module, teacher: nn.Module, xb, yb, config: FitConfig, mix: np.random.Generator):
    """The loss with a teacher: distillation weighted by ``config.distill``, on mixup inputs if ``mixup``."""
    lam, y_other = 1.0, None
    if config.mixup > 0 and xb.is_floating_point():  # token ids do not interpolate: mixup is off for them
        lam = float(mix.beta(config.mixup, config.mixup))
        other = upload(torch.from_numpy(mix.permutation(len(xb))), xb.device)
        xb, y_other = lam * xb + (1 - lam) * xb[other], shard(yb[other])  # partners from the whole batch
    total, xb, yb = len(yb), shard(xb), shard(yb)  # then a data-parallel rank's own rows

    def mean_loss():
        logits = model(xb).float()
        loss = logits.new_zeros(())
        if config.distill < 1.0:
            ce = task_loss(logits, yb)
            if y_other is not None:
                ce = lam * ce + (1 - lam) * task_loss(logits, y_other)
            loss = loss + (1 - config.distill) * ce
        if config.distill > 0:
            with torch.no_grad():
                target = teacher(xb).float()
            loss = loss + config.distill * distill_loss(logits, target, config.temperature)
        return loss

    return _mean_share(mean_loss, len(yb), total, yb.device)


def autocast_context(device, dtype: str | None):
    """``torch.autocast`` in bfloat16 on ``device`` when ``dtype`` is ``"bf16"``, else a no-op context."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
