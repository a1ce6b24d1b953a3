"""A conversion: swap guide parts for targets stage by stage, align each to the guide (the loop of one stage:
:mod:`nas_theseus.convert.stages`), then fine-tune on the task.

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

import logging
import time
from collections.abc import Callable
from dataclasses import asdict

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..align import linear_cka, make_alignment, token_rows
from ..align.precision import tf32_allowed
from ..data import TaskData
from ..guides import Guide
from ..training import FitReport, evaluate, fit_classifier
from ..utils.artifacts import ArtifactStore
from ..utils.compiling import Compiler
from ..utils.devices import resolve_device
from ..utils.distributed import init_from_env
from ..utils.hashing import seed_from_key, stable_hash
from ..utils.progress import progress_enabled
from .activations import GuideActivations, choose_activations
from .checkpoints import CheckpointStore
from .config import Candidate, ConvertConfig
from .hybrid import Hybrid
from .reports import ConversionResult, StageReport
from .stages import Stage, heldout_rows, plan_stages, train_stage
from .stream import GuideStream


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
    Under ``torchrun`` (``WORLD_SIZE`` > 1) the call is data parallel (:mod:`nas_theseus.utils.distributed`):
    every rank calls it alike, joins the process group (gloo on CPUs; NCCL on ``cuda:LOCAL_RANK``), trains on
    its shard of every batch with the alignment loss over the global batch and the gradients summed over ranks,
    so stages and fine-tuning follow the single-process run at the same batch size; rank 0 alone writes
    checkpoints. A stage's ``batch_size`` must divide among the ranks.
    ``activations`` reuses the guide's activations over ``data.train`` (see :class:`GuideActivations`);
    without it they are computed here, into memory-mapped files under ``activation_dir`` when they exceed the
    memory budget (a large guide).
    ``on_stage(report, hybrid)`` is called after every stage (finished or resumed); it may raise to stop the
    conversion (a study ends hopeless trials this way) — finished stages stay checkpointed.

    >>> result = convert(guide, Candidate((BlockSpec.of("mlp", width=256),) * 3), data)  # doctest: +SKIP
    >>> result.test_accuracy, [s.alignment for s in result.stages]  # doctest: +SKIP
    """
    device = str(init_from_env(torch.device(resolve_device(device, announce=progress))))
    with tf32_allowed(config.tf32):
        return _convert(guide, candidate, data, config, checkpoint_dir=checkpoint_dir, activations=activations,
                        device=device, progress=progress, on_stage=on_stage, activation_dir=activation_dir,
                        artifacts=artifacts)


def _convert(guide: Guide, candidate: Candidate, data: TaskData, config: ConvertConfig, *, checkpoint_dir,
             activations: GuideActivations | None, device: str, progress: bool, on_stage, activation_dir,
             artifacts) -> ConversionResult:
    start = time.perf_counter()
    guide.to(device)  # first: a regrouped guide shares its modules, and everything below runs where they live
    guide = guide.grouped(candidate.partition)  # one part per run of the guide's parts (Candidate.partition)
    feed, mode, why = guide_feed(guide, data, config, activations, device, progress, activation_dir)
    run = _Conversion(guide, candidate, data, config, feed, device, progress,
                      _TimedStore(CheckpointStore(checkpoint_dir, remote=artifacts)))
    stages = plan_stages(candidate, config)
    reports: list[StageReport] = []
    for stage in stages:
        reports.append(run.stage(stage, [k for s in stages[: stage.index + 1] for k in s.new], len(stages)))
        if on_stage is not None:
            on_stage(reports[-1], run.hybrid)
    model = run.hybrid.deploy()  # on the hybrid's device
    pre_acc = evaluate(model, data.val)[0]
    ft_report, ft_resumed = run.finetune(model, reports)
    model.eval()
    val_acc, val_loss = evaluate(model, data.val)
    test_acc, test_loss = evaluate(model, data.test)
    return ConversionResult(model, candidate, config, reports, ft_report, pre_acc, val_acc, test_acc,
                            time.perf_counter() - start, finetune_resumed=ft_resumed, val_loss=val_loss,
                            test_loss=test_loss, timings={k: round(v, 3) for k, v in run.timings.items()},
                            activations={"mode": mode, "why": why}, checkpoints=run.store.keys,
                            compile_failed=run.compiler.failed)


def guide_feed(guide: Guide, data: TaskData, config: ConvertConfig, activations: GuideActivations | None, device,
               progress: bool, activation_dir=None) -> tuple[GuideActivations | GuideStream, str, str]:
    """Where the stages of a conversion of (grouped) ``guide`` read the guide's activations: the cache or the
    stream (``config.activations``), with the choice and why (announced once)."""
    mode, why = choose_activations(config.activations, data, guide)
    _announce(f"guide activations: {mode} ({why})", progress)
    if mode == "stream":
        feed = GuideStream(guide, data, autocast=config.autocast,
                           channels_last=config.channels_last and torch.device(device).type == "cuda")
    else:
        feed = _cache(guide, data, activations, device, progress, activation_dir)
    return feed, mode, why


def _cache(guide: Guide, data: TaskData, activations: GuideActivations | None, device, progress: bool,
           activation_dir) -> GuideActivations:
    """The guide's activations over the training split on ``device``: the given ones (at the grouped guide's
    levels), else computed here (memory-mapped under ``activation_dir`` beyond the memory budget)."""
    if activations is not None:
        activations = activations.select(guide.levels)  # the run boundaries of the ungrouped guide's cache
    if activations is None:
        activations = GuideActivations.compute(guide, data.train, data_key=data.fingerprint_on(device), device=device,
                                               progress=progress, mmap_dir=activation_dir)
    return activations.on(device)


class _Conversion:
    """What the stages of one conversion share: the hybrid and its losses, the batch source, the probe and
    held-out rows, the checkpoint store and the content-key base of its stages."""

    def __init__(self, guide: Guide, candidate: Candidate, data: TaskData, config: ConvertConfig,
                 feed: GuideActivations | GuideStream, device, progress: bool, store: _TimedStore):
        self.guide, self.candidate, self.data, self.config = guide, candidate, data, config
        self.feed, self.device, self.progress, self.store = feed, device, progress, store
        self.timings = store.timings
        self.hybrid = Hybrid(guide, candidate, config)  # on the guide's device
        self.compiler = Compiler(config.compile)  # one for every stage and fine-tuning: off for good once it fails
        probe_idx = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[: config.probe_size]
        self.probe = data.train.take(probe_idx)[0].to(device), feed.batch(probe_idx, device)
        self.heldout = heldout_rows(guide, data, config, device)
        self.losses = nn.ModuleDict()
        self.base = {"guide": guide.identity, "data": data.fingerprint_on(device),
                     "settings": config.stage_settings(device), "head": candidate.head,
                     "last_kept": (len(guide.parts) - 1) in self.hybrid.kept,
                     **({"stem": candidate.stem} if candidate.stem != "guide" else {})}

    def stage(self, stage: Stage, swapped: list[int], n_stages: int) -> StageReport:
        """Swap in ``stage``'s parts and train them, or load them where their checkpoint is stored."""
        hybrid, config = self.hybrid, self.config
        key = stable_hash({**self.base, "stage": stage.index,
                           "swapped": [(k, self.candidate.blocks[k].to_dict(), list(hybrid.in_shapes[k]))
                                       for k in swapped]})
        hybrid.swap_in(stage.new)
        self._add_losses(stage)
        if stage.isolated:
            for k in stage.new:
                _ensure_isolated_adapter(hybrid, k)
        saved = self.store.load(key)
        if saved is not None:
            _load_state(hybrid, self.losses, saved["state"])
            hybrid.refit(*self.probe)
            return StageReport(**{**saved["report"], "resumed": True})
        hybrid.refit(*self.probe)
        t0 = time.perf_counter()
        curve, steps, stopped = train_stage(hybrid, self.losses, stage, self.feed, self.data, config, key=key,
                                            device=self.device, probe=self.probe, heldout=self.heldout,
                                            progress=self.progress, n_stages=n_stages, compiler=self.compiler)
        if config.bn_recalibrate:
            _recalibrate_bn(hybrid, self.data, config.batch_size, self.device)
        hybrid.refit(*self.probe)
        names = self.guide.parts
        report = StageReport(index=stage.index, parts=[names[k].name for k in stage.new],
                             swapped=[names[k].name for k in swapped], steps=steps,
                             wall_s=time.perf_counter() - t0, loss_curve=curve, max_steps=stage.steps,
                             stopped=stopped)
        report.alignment = _probe_alignment(hybrid, *self.heldout)
        report.alignment_train = _probe_alignment(hybrid, *self.probe)
        report.hybrid_val_accuracy = evaluate(hybrid, self.data.val)[0]
        self.timings["align_s"] += time.perf_counter() - t0
        self.store.save(key, {"state": _state(hybrid, self.losses), "report": asdict(report)})
        return report

    def _add_losses(self, stage: Stage) -> None:
        config = self.config
        for k in stage.loss:
            if str(k) not in self.losses:
                torch.manual_seed(seed_from_key(self.hybrid.part_key(k) + "loss"))
                self.losses[str(k)] = make_alignment(
                    config.alignment, self.hybrid.out_shapes[k], self.guide.shapes[k + 1], dmnn_k=config.dmnn_k,
                    dmnn_tau=config.dmnn_tau, bridge_rank=config.bridge_rank, tokens=self.guide.tokens,
                ).to(self.device)

    def finetune(self, model: nn.Module, reports: list[StageReport]) -> tuple[FitReport, bool]:
        """Train the deploy network end to end on the task, or load it where its checkpoint is stored; returns
        its report and whether it was loaded."""
        config = self.config
        key = stable_hash({**self.base, "finetune": config.finetune, "candidate": self.candidate.to_dict(),
                           "stages": [r.index for r in reports]})
        saved = self.store.load(key)
        if saved is not None:
            model.load_state_dict(saved["state"])
            return FitReport(**saved["report"]), True
        t0 = time.perf_counter()
        teacher = self.guide.module if config.finetune.distill > 0 or config.finetune.mixup > 0 else None
        # compiled here, not inherited: a deep copy of a compiled module (deploy) comes out uncompiled
        report = fit_classifier(model, self.data, config.finetune, seed=seed_from_key(key), device=self.device,
                                progress=self.progress, desc="fine-tune", teacher=teacher, compile=self.compiler)
        self.timings["finetune_s"] = time.perf_counter() - t0
        self.store.save(key, {"state": model.state_dict(), "report": asdict(report)})
        return report, False


logger = logging.getLogger(__name__)
_said: set[str] = set()


def _announce(line: str, progress: bool) -> None:
    """Log ``line`` (INFO) once per process (with progress on)."""
    if progress_enabled(progress) and line not in _said:
        _said.add(line)
        logger.info(line)


class _TimedStore:
    """A :class:`CheckpointStore` whose reads and writes add their wall time to ``timings["checkpoint_s"]``
    (the conversion's other timings are kept beside it), and that lists the keys of the checkpoints the
    conversion loaded or saved (``keys``, in order: its path of stages, then fine-tuning)."""

    def __init__(self, store: CheckpointStore):
        self.store, self.timings = store, {"align_s": 0.0, "finetune_s": 0.0, "checkpoint_s": 0.0}
        self.keys: list[str] = []

    def load(self, key: str):
        t0 = time.perf_counter()
        try:
            saved = self.store.load(key)
            if saved is not None:
                self.keys.append(key)
            return saved
        finally:
            self.timings["checkpoint_s"] += time.perf_counter() - t0

    def save(self, key: str, payload: dict) -> None:
        t0 = time.perf_counter()
        try:
            self.store.save(key, payload)
            self.keys.append(key)
        finally:
            self.timings["checkpoint_s"] += time.perf_counter() - t0


def _ensure_isolated_adapter(hybrid: Hybrid, k: int) -> None:
    if hybrid.gshapes[k] != hybrid.in_shapes[k] and str(k) not in hybrid.in_adapters:
        torch.manual_seed(seed_from_key(hybrid.part_key(k) + "in"))
        hybrid.in_adapters[str(k)] = hybrid.bridge(hybrid.gshapes[k], hybrid.in_shapes[k])


@torch.no_grad()
def _recalibrate_bn(hybrid: Hybrid, data: TaskData, batch_size: int, device) -> None:
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
        if len(b.x) > 1:  # a last batch of one row: batch norm cannot train on it (and it moves nothing)
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
