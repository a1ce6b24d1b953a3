"""The stage loop: swap guide parts for targets, align each to the guide, then fine-tune on the task.

Schedules (our reading of the paper; each stage spends ``steps_per_stage`` optimizer steps):

* ``progressive`` — stage s swaps the s-th part of the order; every target swapped so far trains, on the
  summed loss Σ_{j swapped} (1 − S(h_j, A_j)), where h_j is target j's output *inside the hybrid*, so errors of
  earlier stages are corrected rather than compounded.
* ``sequential`` — as progressive, but only the newest target trains (earlier ones are frozen), on its own loss.
* ``independent`` — each target trains alone on the guide's own input to its part (blockwise distillation) and
  the targets are assembled afterwards; where a target was trained behind a temporary input adapter, it first
  meets its real predecessor in fine-tuning.
* ``joint`` — every part is swapped at once and all boundaries are aligned together in one stage of
  K x ``steps_per_stage`` steps.

After the last stage the deploy network (targets, kept guide parts, needed adapters, head) is trained end to
end on the task with early stopping on the validation split (best state kept).
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..align import linear_cka, make_alignment, token_rows
from ..align.precision import tf32_allowed
from ..data import TaskData
from ..guides import Guide
from ..training import FitReport, autocast_context, evaluate, fit_classifier
from ..utils import testhooks
from ..utils.artifacts import ArtifactStore
from ..utils.devices import resolve_device
from ..utils.hashing import seed_from_key, stable_hash
from ..utils.progress import progress_bar, progress_enabled
from .activations import GuideActivations, choose_activations
from .checkpoints import CheckpointStore
from .config import Candidate, ConvertConfig
from .hybrid import Hybrid
from .reports import ConversionResult, StageReport
from .stream import GuideStream


class ConversionError(RuntimeError):
    """A conversion that cannot go on (a non-finite loss): the reason is in the message."""


@dataclass(frozen=True)
class _Stage:
    index: int
    new: tuple[int, ...]       # parts swapped in at this stage
    train: tuple[int, ...]     # targets whose weights train
    loss: tuple[int, ...]      # parts whose alignment enters the loss
    isolated: bool             # independent schedule: targets read the guide's own input
    steps: int


def plan_stages(candidate: Candidate, config: ConvertConfig) -> list[_Stage]:
    order = candidate.swap_order
    steps = config.steps_per_stage
    if not order:
        return []
    if config.schedule == "joint":
        return [_Stage(0, tuple(order), tuple(order), tuple(order), False, steps * len(order))]
    stages = []
    for i, k in enumerate(order):
        prefix = tuple(order[: i + 1])
        if config.schedule == "progressive":
            stages.append(_Stage(i, (k,), prefix, prefix, False, steps))
        else:
            stages.append(_Stage(i, (k,), (k,), (k,), config.schedule == "independent", steps))
    return stages


def convert(guide: Guide, candidate: Candidate, data: TaskData, config: ConvertConfig = ConvertConfig(), *,
            checkpoint_dir=None, activations: GuideActivations | None = None, device: str = "auto",
            progress: bool = True, on_stage: Callable[[StageReport, Hybrid], None] | None = None,
            activation_dir=None, artifacts: ArtifactStore | None = None) -> ConversionResult:
    """Convert ``guide`` into ``candidate`` part by part; returns the fine-tuned network and the reports.

    ``device``: ``auto`` (default: the GPU where there is one, else the CPU; printed once), ``cpu``, ``cuda``
    or ``cuda:i``; the guide is moved there. TF32 (``config.tf32``) is switched on for the conversion only (the
    process's settings come back after it) and never reaches the similarity losses.
    Deterministic for a given ``config.seed`` on CPU. With ``checkpoint_dir``, every finished stage (and the
    fine-tuned network) is stored by content key, and a repeated call resumes from the last finished stage;
    with ``artifacts`` (a shared :class:`~nas_theseus.utils.artifacts.ArtifactStore`) they are uploaded there
    too, and a call on another machine resumes from them.
    ``activations`` reuses the guide's activations over ``data.train`` (see :class:`GuideActivations`);
    without it they are computed here, into memory-mapped files under ``activation_dir`` when they exceed the
    memory budget (a large guide).
    ``on_stage(report, hybrid)`` is called after every stage (finished or resumed); it may raise to stop the
    conversion (a study ends hopeless trials this way) — finished stages stay checkpointed.

    >>> result = convert(guide, Candidate((BlockSpec.of("mlp", width=256),) * 3), data)  # doctest: +SKIP
    >>> result.test_accuracy, [s.alignment for s in result.stages]  # doctest: +SKIP
    """
    device = resolve_device(device, announce=progress)
    with tf32_allowed(config.tf32):
        return _convert(guide, candidate, data, config, checkpoint_dir=checkpoint_dir, activations=activations,
                        device=device, progress=progress, on_stage=on_stage, activation_dir=activation_dir,
                        artifacts=artifacts)


def _convert(guide: Guide, candidate: Candidate, data: TaskData, config: ConvertConfig, *, checkpoint_dir,
             activations: GuideActivations | None, device: str, progress: bool, on_stage, activation_dir,
             artifacts) -> ConversionResult:
    start = time.perf_counter()
    timings = {"align_s": 0.0, "finetune_s": 0.0, "checkpoint_s": 0.0}
    store = _TimedStore(CheckpointStore(checkpoint_dir, remote=artifacts), timings)
    guide = guide.grouped(candidate.partition)  # one part per run of the guide's parts (Candidate.partition)
    guide.to(device)
    mode, why = choose_activations(config.activations, data, guide)
    _announce(f"guide activations: {mode} ({why})", progress)
    if mode == "stream":
        activations = GuideStream(guide, data, autocast=config.autocast)
    else:
        if activations is not None:
            activations = activations.select(guide.levels)  # the run boundaries of the ungrouped guide's cache
        if activations is None:
            activations = GuideActivations.compute(guide, data.train, data_key=data.fingerprint, device=device,
                                                   progress=progress, mmap_dir=activation_dir)
        activations = activations.on(device)
    hybrid = Hybrid(guide, candidate, config)  # on the guide's device
    g_probe = torch.Generator().manual_seed(0)
    probe_idx = torch.randperm(len(data.train), generator=g_probe)[: config.probe_size]
    probe_x = data.train.take(probe_idx)[0].to(device)
    probe_acts = activations.batch(probe_idx, device)
    heldout = _heldout(guide, data, config, device)
    losses = nn.ModuleDict()
    base = {"guide": guide.identity, "data": data.fingerprint, "settings": config.stage_settings(device),
            "head": candidate.head, "last_kept": (len(guide.parts) - 1) in hybrid.kept,
            **({"stem": candidate.stem} if candidate.stem != "guide" else {})}
    reports: list[StageReport] = []
    stages = plan_stages(candidate, config)
    swapped_so_far: list[int] = []
    for stage in stages:
        swapped_so_far += list(stage.new)
        key = stable_hash({**base, "stage": stage.index,
                           "swapped": [(k, candidate.blocks[k].to_dict(), list(hybrid.in_shapes[k]))
                                       for k in swapped_so_far]})
        hybrid.swap_in(stage.new)
        for k in stage.loss:
            if str(k) not in losses:
                torch.manual_seed(seed_from_key(hybrid.part_key(k) + "loss"))
                losses[str(k)] = make_alignment(config.alignment, hybrid.out_shapes[k], guide.shapes[k + 1],
                                                dmnn_k=config.dmnn_k, dmnn_tau=config.dmnn_tau,
                                                bridge_rank=config.bridge_rank, tokens=guide.tokens).to(device)
        if stage.isolated:
            for k in stage.new:
                _ensure_isolated_adapter(hybrid, k)
        saved = store.load(key)
        if saved is not None:
            _load_state(hybrid, losses, saved["state"])
            hybrid.refit(probe_x, probe_acts)
            report = StageReport(**saved["report"])
            report.resumed = True
        else:
            hybrid.refit(probe_x, probe_acts)
            t0 = time.perf_counter()
            curve, steps, stopped = _train_stage(hybrid, losses, stage, data, activations, config, key, device,
                                                 probe_x, probe_acts, heldout, progress, len(stages))
            if config.bn_recalibrate:
                _recalibrate_bn(hybrid, stage, data, config.batch_size, device)
            hybrid.refit(probe_x, probe_acts)
            report = StageReport(index=stage.index, parts=[guide.parts[k].name for k in stage.new],
                                 swapped=[guide.parts[k].name for k in swapped_so_far], steps=steps,
                                 wall_s=time.perf_counter() - t0, loss_curve=curve, max_steps=stage.steps,
                                 stopped=stopped)
            report.alignment = _probe_alignment(hybrid, *heldout)
            report.alignment_train = _probe_alignment(hybrid, probe_x, probe_acts)
            report.hybrid_val_accuracy = evaluate(hybrid, data.val)[0]
            timings["align_s"] += time.perf_counter() - t0
            store.save(key, {"state": _state(hybrid, losses), "report": asdict(report)})
        reports.append(report)
        if on_stage is not None:
            on_stage(report, hybrid)

    model = hybrid.deploy()  # on the hybrid's device
    pre_acc = evaluate(model, data.val)[0]
    ft_key = stable_hash({**base, "finetune": config.finetune, "candidate": candidate.to_dict(),
                          "stages": [r.index for r in reports]})
    saved = store.load(ft_key)
    if saved is not None:
        model.load_state_dict(saved["state"])
        ft_report = FitReport(**saved["report"])
    else:
        t0 = time.perf_counter()
        teacher = guide.module if config.finetune.distill > 0 or config.finetune.mixup > 0 else None
        # compiled here, not inherited: a deep copy of a compiled module (deploy) comes out uncompiled
        ft_report = fit_classifier(model, data, config.finetune, seed=seed_from_key(ft_key), device=device,
                                   progress=progress, desc="fine-tune", teacher=teacher, compile=config.compile)
        timings["finetune_s"] = time.perf_counter() - t0
        store.save(ft_key, {"state": model.state_dict(), "report": asdict(ft_report)})
    model.eval()
    val_acc, val_loss = evaluate(model, data.val)
    test_acc, test_loss = evaluate(model, data.test)
    return ConversionResult(model, candidate, config, reports, ft_report, pre_acc, val_acc, test_acc,
                            time.perf_counter() - start, finetune_resumed=saved is not None, val_loss=val_loss,
                            test_loss=test_loss, timings={k: round(v, 3) for k, v in timings.items()},
                            activations={"mode": mode, "why": why})


_said: set[str] = set()


def _announce(line: str, progress: bool) -> None:
    """Print ``line`` on stderr once per process (with progress on)."""
    if progress_enabled(progress) and line not in _said:
        _said.add(line)
        print(line, file=sys.stderr)


class _TimedStore:
    """A :class:`CheckpointStore` whose reads and writes add their wall time to ``timings["checkpoint_s"]``."""

    def __init__(self, store: CheckpointStore, timings: dict):
        self.store, self.timings = store, timings

    def load(self, key: str):
        t0 = time.perf_counter()
        try:
            return self.store.load(key)
        finally:
            self.timings["checkpoint_s"] += time.perf_counter() - t0

    def save(self, key: str, payload: dict) -> None:
        t0 = time.perf_counter()
        try:
            self.store.save(key, payload)
        finally:
            self.timings["checkpoint_s"] += time.perf_counter() - t0


def _ensure_isolated_adapter(hybrid: Hybrid, k: int) -> None:
    if hybrid.gshapes[k] != hybrid.in_shapes[k] and str(k) not in hybrid.in_adapters:
        torch.manual_seed(seed_from_key(hybrid.part_key(k) + "in"))
        hybrid.in_adapters[str(k)] = hybrid.bridge(hybrid.gshapes[k], hybrid.in_shapes[k])


def _trainable_modules(hybrid: Hybrid, stage: _Stage) -> list[nn.Module]:
    mods = [hybrid.targets[str(k)] for k in stage.train]
    if hybrid.new_stem is not None and 0 in stage.train:
        mods.append(hybrid.new_stem)
    used = set(stage.train) if stage.isolated else set(hybrid.used_in_adapters()) & set(stage.train)
    mods += [hybrid.in_adapters[str(k)] for k in sorted(used) if str(k) in hybrid.in_adapters]
    return mods


def _levels(hybrid: Hybrid, stage: _Stage) -> set[int]:
    """The cached activation levels a stage's step reads: each loss part's target A_{k+1}, and the inputs of
    the parts it starts from (A_k of each isolated part; of the first swapped part otherwise)."""
    starts = set(stage.train) if stage.isolated else {hybrid.first_swapped()}
    return starts | {k + 1 for k in stage.loss}


def _needs_x(hybrid: Hybrid, stage: _Stage) -> bool:
    """Whether a step reads the raw input: only a relearned stem that feeds the first part does."""
    return hybrid.new_stem is not None and (0 in stage.train if stage.isolated else hybrid.first_swapped() == 0)


def _forward_outputs(hybrid: Hybrid, stage: _Stage, x, acts) -> dict[int, torch.Tensor]:
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
def _heldout(guide: Guide, data: TaskData, config: ConvertConfig, device) -> tuple[torch.Tensor, list]:
    """The held-out rows (the first ``heldout_size`` of the validation split) and the guide's activations on
    them: where stages are stopped and alignment is reported."""
    x = data.val.head(config.heldout_size)[0].to(device)
    chunks = [guide.activations(x[i:i + 512]) for i in range(0, len(x), 512)]
    return x, [torch.cat(level) for level in zip(*chunks)]


@torch.no_grad()
def _heldout_score(hybrid: Hybrid, stage: _Stage, heldout, losses: nn.ModuleDict, alignment: str) -> float:
    """The stage's alignment loss on the held-out rows, mean over its loss parts (lower is better): 1 − linear
    CKA (in float64) for ``cka``; each other loss's own 1 − similarity (a D-MNN stage stops when D-MNN stops
    improving, not when CKA does)."""
    x, acts = heldout
    was = [m.training for m in [*hybrid.modules(), *losses.modules()]]
    hybrid.eval()
    losses.eval()
    try:
        outs = _forward_outputs(hybrid, stage, x if _needs_x(hybrid, stage) else None, acts)
        if alignment == "cka":
            rows = token_rows if hybrid.tokens else (lambda h, a: (h, a))
            terms = [1.0 - float(linear_cka(*rows(outs[k].double(), acts[k + 1].double()))) for k in stage.loss]
        else:
            terms = [float(losses[str(k)](outs[k].float(), acts[k + 1])) for k in stage.loss]
    finally:
        for m, mode in zip([*hybrid.modules(), *losses.modules()], was):
            m.training = mode
    return sum(terms) / len(terms)


def _train_stage(hybrid: Hybrid, losses: nn.ModuleDict, stage: _Stage, data: TaskData,
                 acts: GuideActivations | GuideStream,
                 config: ConvertConfig, key: str, device, probe_x, probe_acts, heldout, progress: bool,
                 n_stages: int) -> tuple[list[float], int, str]:
    """Train one stage; returns (loss curve, steps taken, why it stopped: ``fixed`` | ``plateau`` |
    ``max_steps``). Under the plateau rule the best evaluated state is the one left in place."""
    torch.manual_seed(seed_from_key(key))
    gen = torch.Generator().manual_seed(seed_from_key(key))
    modules = _trainable_modules(hybrid, stage)
    params = [p for m in modules for p in m.parameters()]
    params += [p for k in stage.loss for p in losses[str(k)].parameters()]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    plateau = config.stage_stop == "plateau"
    # fixed: cosine decay over the stage; plateau: constant, cut by lr_drop_factor at each plateau (see below)
    sched = None if plateau else torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=stage.steps,
                                                                              eta_min=config.lr * 0.1)
    hybrid.eval()
    for m in modules:
        m.train()
    bs = min(config.batch_size, len(data.train))
    window = max(1, stage.steps // 50)
    curve, acc_loss, pending = [], 0.0, []
    names = ",".join(hybrid.guide.parts[k].name for k in stage.new)
    levels, needs_x, stop = _levels(hybrid, stage), _needs_x(hybrid, stage), max(stage.loss)
    feed = acts.stage_batches(data, bs, gen, device, levels, needs_x)  # the cache, or the guide on the fly
    autocast = autocast_context(device, config.autocast)  # a no-op context unless bf16 was asked for
    if config.compile:
        for m in modules:
            m.compile()  # in place: parameter names (checkpoints, deploy) are unchanged
    refit = bool(config.refit_every) and not stage.isolated and hybrid.reads_through_adapter(stop)
    best_score, best_state, bad, drops, stopped, steps = math.inf, None, 0, 0, "fixed", stage.steps
    if plateau:
        stopped = "max_steps"
        watched = [*modules, *(losses[str(k)] for k in stage.loss)]
    bar = progress_bar(total=stage.steps, desc=f"stage {stage.index + 1}/{n_stages} [{names}]", unit="step",
                       enabled=progress)
    try:
        for step in range(stage.steps):
            x, batch_acts = next(feed)
            with autocast:
                outs = _forward_outputs(hybrid, stage, x, batch_acts)
            # the similarity in float32 whatever the forward ran in (bf16 Gram matrices lose the CKA ≈ 1 regime)
            loss = sum(losses[str(k)](outs[k].float(), batch_acts[k + 1]) for k in stage.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            pending.append(loss.detach())
            if (step + 1) % window == 0:  # one host sync per window, not per step
                acc_loss = _settle(pending, step, acc_loss, len(stage.loss), stage, config, names)
                curve.append(acc_loss / window)
                acc_loss = 0.0
                bar.set_postfix(loss=f"{curve[-1]:.4f}")
            if refit and (step + 1) % config.refit_every == 0:  # only adapters the loss reads through
                hybrid.refit(probe_x, probe_acts, stop=stop)
                for m in modules:
                    m.train()
            bar.update(1)
            testhooks.hit("stage_step")
            if plateau and ((step + 1) % config.eval_every == 0 or step + 1 == stage.steps):
                score = _heldout_score(hybrid, stage, heldout, losses, config.alignment)
                if score < best_score - config.stop_tolerance:
                    best_score, bad = score, 0
                    best_state = [copy.deepcopy(m.state_dict()) for m in watched]
                else:
                    bad += 1
                bar.set_postfix(heldout=f"{1 - best_score:.4f}")
                if bad >= config.stop_patience and step + 1 >= config.min_steps:
                    if drops == config.lr_drops:
                        stopped, steps = "plateau", step + 1
                        break
                    drops, bad = drops + 1, 0  # a plateau at this rate: go on at a lower one
                    for group in opt.param_groups:
                        group["lr"] *= config.lr_drop_factor
        _settle(pending, steps - 1, acc_loss, len(stage.loss), stage, config, names)  # the last partial window
    finally:
        bar.close()
    if best_state is not None:
        for m, state in zip(watched, best_state):
            m.load_state_dict(state)
    hybrid.eval()
    return curve, steps, stopped


def _settle(pending: list, last_step: int, acc: float, n_terms: int, stage: _Stage, config: ConvertConfig,
            names: str) -> float:
    """Read the losses of the steps since the last window (one host sync), fail on the first non-finite one
    with its stage and step, and return ``acc`` plus their per-part mean, summed in step order."""
    values = torch.stack(pending).tolist() if pending else []
    first = last_step - len(values) + 1
    pending.clear()
    for i, v in enumerate(values):
        if not math.isfinite(v):
            raise ConversionError(f"non-finite alignment loss ({v}) at stage {stage.index + 1}, step {first + i} "
                                  f"({config.alignment}, parts {names})")
        acc += v / n_terms
    return acc


@torch.no_grad()
def _recalibrate_bn(hybrid: Hybrid, stage: _Stage, data: TaskData, batch_size: int, device) -> None:
    """Recompute running statistics of BatchNorms in the swapped targets with the hybrid's real inputs."""
    modules = [hybrid.targets[str(k)] for k in sorted(hybrid.current)]
    modules += [hybrid.in_adapters[str(k)] for k in hybrid.used_in_adapters()]
    if hybrid.new_stem is not None and 0 in hybrid.current:
        modules.append(hybrid.new_stem)
    bns = [m for mod in modules for m in mod.modules() if isinstance(m, _BatchNorm)]
    if not bns:
        return
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the pass
    hybrid.eval()
    for m in modules:
        m.train()
    for b in data.train.batches(batch_size, device=device):
        hybrid(b.x)
    for bn, mom in zip(bns, momenta):
        bn.momentum = mom
    hybrid.eval()


@torch.no_grad()
def _probe_alignment(hybrid: Hybrid, probe_x, probe_acts) -> dict[str, float]:
    hybrid.eval()
    _, outs = hybrid(probe_x, collect=True)
    rows = token_rows if hybrid.tokens else (lambda h, a: (h, a))
    return {hybrid.guide.parts[k].name: float(linear_cka(*rows(h.double(), probe_acts[k + 1].double())))
            for k, h in sorted(outs.items())}


def _state(hybrid: Hybrid, losses: nn.ModuleDict) -> dict:
    return {"targets": {k: hybrid.targets[str(k)].state_dict() for k in map(str, sorted(hybrid.current))},
            "in_adapters": {k: m.state_dict() for k, m in hybrid.in_adapters.items()},
            "losses": {k: m.state_dict() for k, m in losses.items()},
            **({"stem": hybrid.new_stem.state_dict()} if hybrid.new_stem is not None else {})}


def _load_state(hybrid: Hybrid, losses: nn.ModuleDict, state: dict) -> None:
    for k, sd in state["targets"].items():
        hybrid.targets[k].load_state_dict(sd)
    for k, sd in state["in_adapters"].items():
        if k not in hybrid.in_adapters:
            _ensure_isolated_adapter(hybrid, int(k))
        hybrid.in_adapters[k].load_state_dict(sd)
    for k, sd in state["losses"].items():
        losses[k].load_state_dict(sd)
    if "stem" in state:
        hybrid.new_stem.load_state_dict(state["stem"])


def budget_steps(candidate: Candidate, config: ConvertConfig) -> int:
    """Alignment optimizer steps a conversion spends (the from-scratch baseline gets them too)."""
    return sum(s.steps for s in plan_stages(candidate, config))


def steps_per_epoch(data: TaskData, batch_size: int) -> int:
    return math.ceil(len(data.train) / batch_size)
