"""One trial: candidate from the search space -> conversion (or scratch training) -> measured objectives."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from ..convert import ConversionError, convert, plan_stages, train_distilled, train_from_scratch
from ..convert.baseline import scratch_model
from ..errors import UserError
from ..export import arch_document, save_network
from ..measure import UncountedOpsError
from ..utils import quiet
from ..utils.devices import GpuMemory, describe_device, versions
from ..utils.distributed import is_main
from ..utils.files import atomic_write_text
from ..utils.hashing import key_content, stable_hash
from . import ranks
from .context import StudyContext
from .latency_aside import AsideFailed, AsideLost, Pending
from .objectives import OBJECTIVES, Probe, costs, guide_latency, perplexity
from .owners import DIED
from .pruning import PruningRule
from .reuse import trial_reuse
from .workdir import WorkDir, save_reference


class TrialFailed(Exception):
    """A trial that cannot be scored; the reason is stored in its ``fail_reason`` user attribute."""


@dataclass
class Measured:
    values: dict
    attrs: dict


def probe_for(ctx: StudyContext, *, strict_flops: bool = True) -> Probe:
    """What the study's cost objectives read to measure a network: the data's shape and test rows, the
    ``[latency]`` settings and the guide's own figures and runner (its latency is timed beside each network's)."""
    lm = bool(ctx.guide.causal and ctx.guide.tokens)
    example = ctx.data.test.head(max(ctx.config.latency.batch_sizes))[0]
    guide_ms = {} if lm else guide_latency(ctx.guide_figures)  # a language model's is per token: not beside
    return Probe(ctx.data.sample_shape, example, lm, ctx.config.latency, guide_ms, ctx.guide_runner, strict_flops)


def measure(model, ctx: StudyContext, names: set[str], *, strict_flops: bool = True,
            pending: Pending | None = None) -> Measured:
    """The cost objectives among ``names`` for a deploy model, and what the trial records beside them (see
    :mod:`nas_theseus.study.objectives`); those ``pending`` (sent aside) holds are its answer's, unless its
    measurer was lost (then measured here)."""
    probe = probe_for(ctx, strict_flops=strict_flops)
    values, attrs = {}, {}
    if pending is not None:
        with contextlib.suppress(AsideLost):  # said once, in a warning; measured here below
            values, attrs = pending.result()
    for name in costs(names):
        if name not in values:
            values[name], extra = OBJECTIVES[name].measure(model, probe)
            attrs.update(extra)
    return Measured(values, attrs)


def send_aside(ctx: StudyContext, build, names: set[str]) -> Pending | None:
    """The costs among ``names`` that training does not change, sent to this process's measurer on reserved
    cores (``build()``: the network to measure), or None where latency is timed in a quiet slot."""
    aside, before = ctx.aside(), costs(names, before_training=True)
    if aside is None or not before:
        return None
    try:
        return aside.submit(build(), probe_for(ctx), before, guide=ctx.guide_network)
    except AsideLost:  # said once, in a warning: measured in the worker
        return None


def untrained(ctx: StudyContext, candidate, conv_cfg):
    """The candidate's deploy network, untrained (what the costs known before training are measured on); the
    random state the trial trains from is left as it was."""
    cuda = torch.device(ctx.device)
    with torch.random.fork_rng(devices=[cuda.index or 0] if cuda.type == "cuda" else []):
        return scratch_model(ctx.guide, candidate, conv_cfg)


def pre_training_costs(ctx: StudyContext, candidate, conv_cfg, pending: Pending | None = None) -> dict:
    """The trial's cost objectives that training does not change (FLOPs, parameters, latency), measured on its
    deploy network before training (``pending``'s answer, where they were sent aside)."""
    names = costs(ctx.config.objectives, before_training=True)
    if not names:
        return {}
    if pending is not None:
        with contextlib.suppress(AsideLost):
            return {n: v for n, v in pending.result()[0].items() if n in names}
    return measure(scratch_model(ctx.guide, candidate, conv_cfg), ctx, set(names), strict_flops=False).values


def train_baseline(cfg, ctx: StudyContext, candidate, conv_cfg, method: str, *, progress: bool):
    """``method`` ``scratch`` or ``kd``: the candidate's network from random weights, by that method's rule and
    the conversion's budget (the most its stages may take)."""
    if method == "kd":
        return train_distilled(ctx.guide, candidate, ctx.data, conv_cfg, variant=cfg.baseline.kd,
                               fit=cfg.baseline_fit(method), device=ctx.device, progress=progress)
    return train_from_scratch(ctx.guide, candidate, ctx.data, conv_cfg, fit=cfg.baseline_fit(method),
                              device=ctx.device, progress=progress)


def train(ctx: StudyContext, wd: WorkDir, activations, candidate, conv_cfg, method: str, *, on_stage,
          progress: bool):
    """A trial's network: the candidate converted from the guide (``not``) or trained by a baseline; under
    torchrun, every rank runs this with the same arguments (data parallel)."""
    if method == "not":
        return convert(ctx.guide, candidate, ctx.data, conv_cfg, checkpoint_dir=wd.checkpoints,
                       activations=activations, device=ctx.device, progress=progress, on_stage=on_stage,
                       artifacts=ctx.artifacts)
    return train_baseline(ctx.config, ctx, candidate, conv_cfg, method, progress=progress)


def run_trial(trial: optuna.Trial, ctx: StudyContext, wd: WorkDir, activations, *, progress: bool,
              worker: str = "0") -> tuple:
    cfg = ctx.config
    start = time.perf_counter()
    ranks.tell(True)  # under torchrun: the other ranks, a trial comes
    shared = ranks.shared_trial(trial)  # under torchrun: every rank builds this candidate
    candidate, conv_cfg = ctx.candidate(shared)
    method = ctx.method(shared)
    trial.set_user_attr("candidate", candidate.describe(ctx.guide.part_names))
    key = candidate_key(candidate, conv_cfg, method)
    trial.set_user_attr(CANDIDATE_KEY, key)
    earlier = _finished_with(trial, key)
    if earlier is not None:  # a repeated proposal: the earlier trial's answer, no work (and no budget) spent
        ranks.tell(False)  # under torchrun: the other ranks skip it
        return _answer_from(trial, earlier, cfg)
    stages = _record_setting(trial, ctx, method, worker)
    trained = _train_and_measure(trial, ctx, wd, activations, candidate, conv_cfg, method, stages,
                                 progress=progress)
    values = trained.objective_values()
    folder, timings = _save(trial, ctx, wd, candidate, conv_cfg, trained, values, start)
    _record_results(trial, wd, trained, folder, timings)
    for name, bound in cfg.constraints.items():
        # feasible when <= 0: a ceiling for minimised metrics, a floor for accuracy
        value = values[name]
        trial.set_constraint(name, (bound - value) if OBJECTIVES[name].direction == "maximize" else (value - bound))
    return tuple(values[name] for name in cfg.objectives)


@dataclass
class _Trained:
    """A trial's trained network and its measured costs: what the trial saves and records."""

    result: Any  # the conversion's (or baseline's) result: the model, accuracies, losses, timings
    measured: Measured
    measure_s: float

    def objective_values(self) -> dict:
        """Every objective's value: the scores from the result, the costs as measured."""
        return {**{n: o.score(self.result) for n, o in OBJECTIVES.items() if not o.cost}, **self.measured.values}


def _record_setting(trial: optuna.Trial, ctx: StudyContext, method: str, worker: str) -> list:
    """Record where and how the trial runs (method, device, versions, threads, worker, host); returns its list of
    stage reports, recorded empty (a retried trial inherits its predecessor's attributes)."""
    trial.set_user_attr("method", method)
    trial.set_user_attr("device", describe_device(ctx.device))
    trial.set_user_attr("versions", versions(ctx.device))
    trial.set_user_attr("threads", torch.get_num_threads())
    trial.set_user_attr("worker", worker)
    trial.set_user_attr("host", socket.gethostname())
    stages = []
    trial.set_user_attr("stages", stages)  # a retried trial inherits its predecessor's attributes
    if DIED in trial.user_attrs:  # the predecessor's reason, not this trial's (its retry_history links them)
        trial.set_user_attr(DIED, None)
    return stages


def _stage_recorder(trial: optuna.Trial, stages: list, rule: PruningRule | None, n_stages: int, pre_costs: dict):
    """What the conversion calls after each stage: the stage's report recorded on the trial, then the pruning
    rule's decision (if the study prunes), taken alike by every rank under torchrun."""
    def on_stage(report, hybrid):
        stages.append({"parts": report.parts, "alignment": report.alignment,  # held-out (validation rows)
                       "alignment_train": report.alignment_train, "steps": report.steps,
                       "stopped": report.stopped, "wall_s": round(report.wall_s, 3),
                       "hybrid_val_accuracy": report.hybrid_val_accuracy, "resumed": report.resumed,
                       "loss_curve": [round(v, 5) for v in report.loss_curve]})
        trial.set_user_attr("stages", stages)
        if rule is not None:
            ranks.prune_decision(lambda: rule.check(trial, report.index, n_stages, report.hybrid_val_accuracy,
                                                    pre_costs))

    return on_stage


def _train_and_measure(trial: optuna.Trial, ctx: StudyContext, wd: WorkDir, activations, candidate, conv_cfg,
                       method: str, stages: list, *, progress: bool) -> _Trained:
    """The trial's network trained and its costs measured; a network that cannot be converted, counted or
    measured fails the trial with its reason recorded (:class:`TrialFailed`), not the study."""
    cfg = ctx.config
    pre_costs: dict = {}
    rule = PruningRule(cfg.pruning.margin, cfg.pruning.stages) if cfg.pruning.enabled else None
    wanted = set(cfg.objectives) | set(cfg.constraints)
    on_stage = _stage_recorder(trial, stages, rule, len(plan_stages(candidate, conv_cfg)), pre_costs)
    memory = GpuMemory(ctx.device)
    try:
        try:
            # timed aside from now on, while the trial trains, where the study reserves cores for timing
            pending = send_aside(ctx, lambda: untrained(ctx, candidate, conv_cfg), wanted)
            if cfg.pruning.enabled:  # in the trial: a network that cannot be measured fails it, not the study
                pre_costs.update(pre_training_costs(ctx, candidate, conv_cfg, pending))
                if pre_costs:
                    trial.set_user_attr("pre_training_costs", pre_costs)
        except BaseException:
            ranks.tell(False)  # under torchrun: the other ranks skip it
            raise
        ranks.tell(True)  # under torchrun: the other ranks train it with this rank
        # pauses while a worker of this machine times latency; under torchrun, every rank ends it alike
        with quiet.training(enabled=is_main()), ranks.agreed():
            result = train(ctx, wd, activations, candidate, conv_cfg, method, on_stage=on_stage,
                           progress=progress)
        if getattr(result, "activations", None):
            trial.set_user_attr("activations", result.activations)  # cache or stream, and why
        if getattr(result, "compile_failed", ""):
            trial.set_user_attr("compile_failed", result.compile_failed)  # it trained eagerly from there on
        if getattr(result, "checkpoints", None):
            trial.set_user_attr(CHECKPOINT_PATH, result.checkpoints)
        for key, value in trial_reuse(stages).items():
            trial.set_user_attr(key, value)
        measuring = time.perf_counter()
        measured = measure(result.model, ctx, wanted, pending=pending)
        measure_s = time.perf_counter() - measuring
    except (ConversionError, UncountedOpsError, UserError, AsideFailed) as e:
        memory.record(trial)
        trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}")
        raise TrialFailed(f"trial {trial.number}: {e}") from e
    memory.record(trial)
    return _Trained(result, measured, measure_s)


def _save(trial: optuna.Trial, ctx: StudyContext, wd: WorkDir, candidate, conv_cfg, trained: _Trained,
          values: dict, start: float) -> tuple[Path, dict]:
    """The trial's folder: its network with ``arch.json``, reference outputs and ``metrics.json`` (uploaded to the
    study's artifact store, if any); returns the folder and the trial's timings."""
    result, measured, measure_s = trained.result, trained.measured, trained.measure_s
    model = result.model
    saving = time.perf_counter()
    folder = wd.trial(trial.number)
    arch = arch_document(model.cpu(), guide_source=ctx.guide.source, sample_shape=ctx.data.sample_shape,
                         extra={"trial": trial.number, "params": trial.params, "candidate": candidate.to_dict(),
                                "convert": dataclasses.asdict(conv_cfg)})
    save_network(folder, model, arch)
    save_reference(folder, model, ctx.data.test.head(32)[0])
    timings = {**getattr(result, "timings", {}), "measure_s": round(measure_s, 3)}
    timings["save_s"] = round(time.perf_counter() - saving, 3)
    metrics = {**values, "val_accuracy": result.val_accuracy, "test_accuracy": result.test_accuracy,
               "val_loss": result.val_loss, "test_loss": result.test_loss,
               "test_perplexity": perplexity(result.test_loss), **measured.attrs,
               "measure_s": measure_s, "timings": timings, "trial_wall_s": time.perf_counter() - start}
    atomic_write_text(folder / "metrics.json", json.dumps(metrics, indent=2))
    if ctx.artifacts is not None:
        upload_network(trial, folder, ctx.artifacts)
    return folder, timings


def _record_results(trial: optuna.Trial, wd: WorkDir, trained: _Trained, folder: Path, timings: dict) -> None:
    """The trial's figures and where its network is, as user attributes (``pareto``, ``trials``, the dashboard)."""
    result = trained.result
    trial.set_user_attr("test_accuracy", result.test_accuracy)
    trial.set_user_attr("val_accuracy", result.val_accuracy)
    trial.set_user_attr("test_perplexity", perplexity(result.test_loss))
    trial.set_user_attr("trial_dir", str(folder))
    trial.set_user_attr("export", f"nas-theseus export {wd.root} --trial {trial.number}  "
                                  f"(writes {wd.root / 'exports' / f'trial-{trial.number}'})")
    trial.set_user_attr("timings", timings)
    for key, value in trained.measured.attrs.items():
        trial.set_user_attr(key, value)


NETWORK_ARTIFACT = "network_artifact"


def upload_network(trial: optuna.Trial, folder, store) -> None:
    """Put the trial's network folder in the study's artifact store, linked to the trial (the dashboard lists
    it); its id and sha256 go in the ``network_artifact`` attribute, which ``export`` on any machine reads. A
    store that cannot be reached costs nothing but that: the trial completes, the reason in
    ``network_artifact_error``, and its network stays in this work directory."""
    try:
        info = store.upload_folder(folder, name=f"trial-{trial.number}", trial=trial)
    except Exception as e:  # noqa: BLE001 - the trial's work is done and kept here
        reason = f"{type(e).__name__}: {e}"
        warnings.warn(f"trial {trial.number}: its network was not uploaded to artifact store {store.url} "
                      f"({reason}); it stays in {folder}", stacklevel=2)
        trial.set_user_attr("network_artifact_error", reason)
        return
    trial.set_user_attr(NETWORK_ARTIFACT, info)


CANDIDATE_KEY = "candidate_key"
REPEAT_OF = "repeat_of"
CHECKPOINT_PATH = "checkpoints"  # a trial's stage checkpoints (their keys, in order): what `clean` keeps
# what a repeat copies from the trial it repeats: results, not the bookkeeping of the run that made them
_RESULT_ATTRS = ("method", "stages", "test_accuracy", "val_accuracy", "test_perplexity", "trial_dir", "export",
                 NETWORK_ARTIFACT, "network_artifact_error",
                 "flops_convention", "flops_full_sequence", "flops_decode", "latency", "latency_full_sequence",
                 "latency_table", "latency_basis")


def candidate_key(candidate, conv_cfg, method: str) -> str:
    """What makes two trials the same work: the candidate, the conversion settings and the method. A baseline
    (scratch, kd) trains the deploy network alone, so for it the swap order is not part of the work."""
    cand = candidate.to_dict()
    if method != "not":
        cand.pop("order")
    return stable_hash({"candidate": cand, "convert": key_content(conv_cfg), "method": method})


def _finished_with(trial: optuna.Trial, key: str):
    for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if t.user_attrs.get(CANDIDATE_KEY) == key and REPEAT_OF not in t.user_attrs and t.number != trial.number:
            return t
    return None


def _answer_from(trial: optuna.Trial, earlier, cfg) -> tuple:
    """Answer a repeated proposal with ``earlier``'s values (the sampler learns from it as from any trial);
    marked ``repeat_of``, it counts toward no budget and is left out of the front (its original is there)."""
    trial.set_user_attr(REPEAT_OF, earlier.number)
    for name in _RESULT_ATTRS:
        if name in earlier.user_attrs:
            trial.set_user_attr(name, earlier.user_attrs[name])
    for name, value in earlier.constraints.items():
        trial.set_constraint(name, value)
    return tuple(earlier.values)
