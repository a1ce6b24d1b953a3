"""One trial: candidate from the search space -> conversion (or scratch training) -> measured objectives."""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import time
import warnings
from dataclasses import dataclass

import optuna
import torch

from ..convert import ConversionError, convert, plan_stages, train_distilled, train_from_scratch
from ..convert.baseline import scratch_model
from ..errors import UserError
from ..export import arch_document, save_network
from ..measure import (
    CONVENTION,
    CONVENTION_PER_TOKEN,
    UncountedOpsError,
    count_flops,
    count_params,
    decode_flops,
    decode_latency,
    measure_latency,
)
from ..measure.latency import example_input
from ..utils.files import atomic_write_text
from ..utils.hashing import key_content, stable_hash
from ..utils.locks import machine_lock
from .config import OBJECTIVES
from .context import StudyContext
from .owners import DIED
from .pruning import COSTS, PruningRule
from .reuse import trial_reuse
from .workdir import WorkDir, save_reference


class TrialFailed(Exception):
    """A trial that cannot be scored; the reason is stored in its ``fail_reason`` user attribute."""


@dataclass
class Measured:
    values: dict
    attrs: dict


def measure(model, ctx: StudyContext, names: set[str], *, strict_flops: bool = True) -> Measured:
    """The metrics in ``names`` (plus what every trial records) for a deploy model.

    For a language model (a causal token guide) ``flops`` and ``latency_ms`` are per generated token in
    incremental decoding (one token at a time with each block's state: RNN hidden states, attention KV caches),
    averaged over the positions of a full context; the full-sequence figures are recorded beside them
    (``flops_full_sequence``, ``latency_full_sequence``).
    """
    cfg = ctx.config
    values, attrs = {}, {}
    example = ctx.data.test.x[:max(cfg.latency.batch_sizes)]
    lm = ctx.guide.causal and ctx.guide.tokens
    context = ctx.data.sample_shape[0] if lm else None
    if "flops" in names:
        full = count_flops(model, ctx.data.sample_shape, strict=strict_flops, device=cfg.study.device,
                           example=example)
        attrs["flops_convention"] = CONVENTION_PER_TOKEN if lm else CONVENTION
        if lm:
            step = decode_flops(model, context, example[:1], strict=strict_flops)
            values["flops"] = step.per_token
            attrs["flops_full_sequence"] = full
            attrs["flops_decode"] = dataclasses.asdict(step)
        else:
            values["flops"] = full
    if "params" in names:
        values["params"] = count_params(model)
    if "latency_ms" in names:
        values["latency_ms"], lat_attrs = _latency(model, ctx, example, lm, context)
        attrs.update(lat_attrs)
    return Measured(values, attrs)


def _latency(model, ctx: StudyContext, example, lm: bool, context) -> tuple[float, dict]:
    """The ``latency_ms`` objective (the first runtime at the first batch size; per generated token for a
    language model) and the trial's latency records: ``latency`` (that figure's details) and, with several
    runtimes or batch sizes, ``latency_table`` (one row each).

    Once the study has measured its guide (guide_reference.py), a network's figure is its median ratio to the
    guide, the two timed side by side, times the guide's own figure: ratios taken side by side rank networks
    where the machine's speed drifts (see :mod:`nas_theseus.measure.latency`)."""
    cfg, lat_cfg = ctx.config, ctx.config.latency
    guide_ms = {} if lm else _guide_latency(ctx.guide_figures)
    rows = []
    # one measurement per machine at a time, with fixed threads: a neighbour worker's training must not
    # pollute the figure
    with machine_lock("latency"):
        for runtime in lat_cfg.runtimes:
            for batch_size in lat_cfg.batch_sizes:
                reference = None
                if (runtime, batch_size) in guide_ms:
                    x = example_input(ctx.data.sample_shape, batch_size, device=cfg.study.device, example=example)
                    reference = ctx.guide_runner(runtime, x, lat_cfg.threads)
                rows.append(measure_latency(model, ctx.data.sample_shape, batch_size=batch_size,
                                            device=cfg.study.device, warmup=lat_cfg.warmup,
                                            repeats=lat_cfg.repeats, threads=lat_cfg.threads, example=example,
                                            runtime=runtime, reference=reference))
        if lm:
            step = decode_latency(model, context, example[:1], device=cfg.study.device,
                                  warmup=min(lat_cfg.warmup, 2), repeats=lat_cfg.repeats, threads=lat_cfg.threads)
    table = []
    for r in rows:
        row = dataclasses.asdict(r)
        row["figure_ms"] = (r.relative * guide_ms[(r.runtime, r.batch_size)] if r.relative is not None
                            else r.median_ms)
        table.append(row)
    attrs = {"latency_table": table} if len(rows) > 1 else {}
    if lm:
        attrs["latency"] = dataclasses.asdict(step)
        attrs["latency_full_sequence"] = table[0]
        return step.per_token_ms, attrs
    attrs["latency"] = table[0]
    attrs["latency_basis"] = ("relative to the guide, timed side by side, x the guide's figure"
                              if rows[0].relative is not None else "absolute")
    return table[0]["figure_ms"], attrs


def _guide_latency(figures: dict | None) -> dict:
    """{(runtime, batch size): the guide's median ms} from the study's guide reference (empty without one)."""
    if not figures or "error" in figures:
        return {}
    rows = figures.get("latency_table") or ([figures["latency"]] if "latency" in figures else [])
    return {(r["runtime"], r["batch_size"]): r["median_ms"] for r in rows}


def pre_training_costs(ctx: StudyContext, candidate, conv_cfg) -> dict:
    """The trial's cost objectives that training does not change (FLOPs, parameters), from its architecture."""
    names = [c for c in COSTS if c in ctx.config.objectives]
    if not names:
        return {}
    model = scratch_model(ctx.guide, candidate, conv_cfg)
    return measure(model, ctx, set(names), strict_flops=False).values


def train_baseline(cfg, ctx: StudyContext, candidate, conv_cfg, *, progress: bool):
    """``method = "scratch"`` or ``"kd"``: the candidate's network from random weights, by that method's rule."""
    if cfg.study.method == "kd":
        return train_distilled(ctx.guide, candidate, ctx.data, conv_cfg, variant=cfg.baseline.kd,
                               fit=cfg.baseline_fit(), device=cfg.study.device, progress=progress)
    return train_from_scratch(ctx.guide, candidate, ctx.data, conv_cfg, fit=cfg.baseline_fit(),
                              device=cfg.study.device, progress=progress)


def run_trial(trial: optuna.Trial, ctx: StudyContext, wd: WorkDir, activations, *, progress: bool,
              worker: str = "0") -> tuple:
    cfg = ctx.config
    start = time.perf_counter()
    candidate, conv_cfg = ctx.candidate(trial)
    names = ctx.guide.part_names
    trial.set_user_attr("candidate", candidate.describe(names))
    key = candidate_key(candidate, conv_cfg, cfg.study.method)
    trial.set_user_attr(CANDIDATE_KEY, key)
    earlier = _finished_with(trial, key)
    if earlier is not None:  # a repeated proposal: the earlier trial's answer, no work (and no budget) spent
        return _answer_from(trial, earlier, cfg)
    trial.set_user_attr("method", cfg.study.method)
    trial.set_user_attr("device", str(cfg.study.device))
    trial.set_user_attr("threads", torch.get_num_threads())
    trial.set_user_attr("worker", worker)
    trial.set_user_attr("host", socket.gethostname())
    stages = []
    trial.set_user_attr("stages", stages)  # a retried trial inherits its predecessor's attributes
    if DIED in trial.user_attrs:  # the predecessor's reason, not this trial's (its retry_history links them)
        trial.set_user_attr(DIED, None)

    costs = pre_training_costs(ctx, candidate, conv_cfg) if cfg.pruning.enabled else {}
    if costs:
        trial.set_user_attr("pre_training_costs", costs)
    rule = PruningRule(cfg.pruning.margin, cfg.pruning.stages) if cfg.pruning.enabled else None

    def on_stage(report, hybrid):
        stages.append({"parts": report.parts, "alignment": report.alignment,  # held-out (validation rows)
                       "alignment_train": report.alignment_train, "steps": report.steps,
                       "stopped": report.stopped, "wall_s": round(report.wall_s, 3),
                       "hybrid_val_accuracy": report.hybrid_val_accuracy, "resumed": report.resumed,
                       "loss_curve": [round(v, 5) for v in report.loss_curve]})
        trial.set_user_attr("stages", stages)
        if rule is not None:
            rule.check(trial, report.index, n_stages, report.hybrid_val_accuracy, costs)

    wanted = set(cfg.objectives) | set(cfg.constraints)
    n_stages = len(plan_stages(candidate, conv_cfg))
    try:
        if cfg.study.method == "not":
            result = convert(ctx.guide, candidate, ctx.data, conv_cfg, checkpoint_dir=wd.checkpoints,
                             activations=activations, device=cfg.study.device, progress=progress,
                             on_stage=on_stage, artifacts=ctx.artifacts)
        else:
            result = train_baseline(cfg, ctx, candidate, conv_cfg, progress=progress)
        model, val_acc, test_acc = result.model, result.val_accuracy, result.test_accuracy
        for key, value in trial_reuse(stages).items():
            trial.set_user_attr(key, value)
        measured = measure(model, ctx, wanted)
    except (ConversionError, UncountedOpsError, UserError) as e:
        trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}")
        raise TrialFailed(f"trial {trial.number}: {e}") from e
    values = {"accuracy": val_acc, "perplexity": _perplexity(result.val_loss), **measured.values}
    folder = wd.trial(trial.number)
    arch = arch_document(model.cpu(), guide_source=ctx.guide.source, sample_shape=ctx.data.sample_shape,
                         extra={"trial": trial.number, "params": trial.params, "candidate": candidate.to_dict(),
                                "convert": dataclasses.asdict(conv_cfg)})
    save_network(folder, model, arch)
    save_reference(folder, model, ctx.data.test.x[:32])
    metrics = {**values, "val_accuracy": val_acc, "test_accuracy": test_acc, "val_loss": result.val_loss,
               "test_loss": result.test_loss, "test_perplexity": _perplexity(result.test_loss), **measured.attrs,
               "trial_wall_s": time.perf_counter() - start}
    atomic_write_text(folder / "metrics.json", json.dumps(metrics, indent=2))
    if ctx.artifacts is not None:
        upload_network(trial, folder, ctx.artifacts)
    trial.set_user_attr("test_accuracy", test_acc)
    trial.set_user_attr("val_accuracy", val_acc)
    trial.set_user_attr("test_perplexity", _perplexity(result.test_loss))
    trial.set_user_attr("trial_dir", str(folder))
    trial.set_user_attr("export", f"nas-theseus export {wd.root} --trial {trial.number}  "
                                  f"(writes {wd.root / 'exports' / f'trial-{trial.number}'})")
    for key, value in measured.attrs.items():
        trial.set_user_attr(key, value)
    for name, bound in cfg.constraints.items():
        # feasible when <= 0: a ceiling for minimised metrics, a floor for accuracy
        value = values[name]
        trial.set_constraint(name, (bound - value) if OBJECTIVES[name] == "maximize" else (value - bound))
    return tuple(values[name] for name in cfg.objectives)


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


def _perplexity(loss: float) -> float:
    """exp(mean cross-entropy): per token for a language model (per byte with the byte tokenizer)."""
    return math.exp(min(loss, 700.0))
