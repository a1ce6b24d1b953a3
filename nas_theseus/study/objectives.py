"""The objectives a study can search: one registered class each.

An objective is either a *score* of the trained network (accuracy, perplexity: read from the conversion's
result) or a *cost* measured on the deploy network (FLOPs, parameters, latency). Everything else that knows
about objectives reads this registry: the study file's checks (names, directions), constraints, the pruning
rule (``before_training`` costs), the hypervolume reference, the report's axis labels and log scales, and the
guide's reference figures. Adding an objective is one class here.

For a language model (a causal token guide) ``flops`` and ``latency_ms`` are per generated token in incremental
decoding (one token at a time with each block's state: RNN hidden states, attention KV caches), averaged over
the positions of a full context; the full-sequence figures are recorded beside them (``flops_full_sequence``,
``latency_full_sequence``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..measure import (
    CONVENTION,
    CONVENTION_PER_TOKEN,
    count_flops,
    count_params,
    decode_flops,
    decode_latency,
    measure_latency,
)
from ..measure.latency import example_input
from ..utils.quiet import quiet
from ..utils.registry import Registry


@dataclass
class Probe:
    """What a cost measurement of one deploy network reads, handed in by the study (``objective.probe_for``): the
    data it needs, not the study itself, so an objective knows nothing of the study's context."""

    sample_shape: tuple  # one sample's shape (for a language model: the context length first)
    example: torch.Tensor  # the test rows measurements run on (as many as the largest latency batch size)
    lm: bool  # a causal token guide: FLOPs and latency per generated token
    latency: Any  # the study's ``[latency]`` settings (runtimes, batch sizes, warmup, repeats, threads, ...)
    guide_ms: dict  # {(runtime, batch size): the guide's median ms} once the study has measured its guide
    guide_runner: Callable  # (runtime, x, threads) -> the guide prepared there, timed beside each network
    strict_flops: bool = True
    slot: Callable = quiet  # where latency is timed: a quiet slot of this machine, or a measurer's own cores

    @property
    def context(self) -> int | None:
        return self.sample_shape[0] if self.lm else None


class Objective:
    name: ClassVar[str]
    direction: ClassVar[str]  # "maximize" | "minimize"
    label: ClassVar[str]  # axis label
    cost: ClassVar[bool] = True  # measured on the deploy network (log axis); else a score of the trained network
    before_training: ClassVar[bool] = False  # a cost known from the architecture alone (the pruning rule)
    hv_reference: ClassVar[float | None] = None  # default hypervolume reference; None: 1.1 x the worst seen
    short: ClassVar[str] = ""  # a cost's name in a factor of the guide's ("0.42x FLOPs")

    def keeps(self, value: float, guide: float) -> bool:
        """A score objective: whether ``value`` keeps the guide's ``guide`` for a deployer (a deploy win must)."""
        raise NotImplementedError

    def versus(self, value: float, guide: float) -> str:
        """A score objective's ``value`` against the guide's, in words ("-0.4 points")."""
        raise NotImplementedError

    def measure(self, model, probe: Probe) -> tuple[float, dict]:
        """A cost objective's value for ``model`` and what the trial records beside it."""
        raise NotImplementedError

    def score(self, result) -> float:
        """A score objective's value from a conversion's (or baseline's) result."""
        raise NotImplementedError


OBJECTIVES: Registry = Registry("objective")


def register(cls: type[Objective]) -> type[Objective]:
    OBJECTIVES.add(cls.name, cls())
    return cls


def costs(names, *, before_training: bool = False) -> list[str]:
    """The cost objectives among ``names`` (registry order); only those known before training if asked."""
    return [n for n, o in OBJECTIVES.items() if n in names and o.cost and (o.before_training or not before_training)]


def perplexity(loss: float) -> float:
    """exp(mean cross-entropy): per token for a language model (per byte with the byte tokenizer)."""
    return math.exp(min(loss, 700.0))


@register
class Accuracy(Objective):
    """Validation accuracy (per token for language models); test accuracy is recorded beside it."""

    name, direction, label, cost, hv_reference = "accuracy", "maximize", "validation accuracy", False, 0.0
    margin = 0.01  # a deploy win keeps the guide's accuracy within 1 point

    def score(self, result) -> float:
        return result.val_accuracy

    def keeps(self, value: float, guide: float) -> bool:
        return value >= guide - self.margin - 1e-12

    def versus(self, value: float, guide: float) -> str:
        return f"{100 * (value - guide):+.1f} points"


@register
class Perplexity(Objective):
    """exp of the validation cross-entropy (per byte with the byte tokenizer); test perplexity beside it."""

    name, direction, label, cost = "perplexity", "minimize", "validation perplexity", False
    margin = 0.01  # a deploy win keeps the guide's perplexity within 1 %

    def score(self, result) -> float:
        return perplexity(result.val_loss)

    def keeps(self, value: float, guide: float) -> bool:
        return value <= guide * (1 + self.margin) + 1e-12

    def versus(self, value: float, guide: float) -> str:
        return f"{value / guide:.3f}x perplexity"


@register
class Flops(Objective):
    """Multiply-adds per sample (fvcore convention), per generated token for language models."""

    name, direction, before_training, short = "flops", "minimize", True, "FLOPs"
    label = "FLOPs per sample, per token for LMs (multiply-adds)"

    def measure(self, model, probe: Probe) -> tuple[float, dict]:
        full = count_flops(model, probe.sample_shape, strict=probe.strict_flops, example=probe.example)
        if not probe.lm:
            return full, {"flops_convention": CONVENTION}
        step = decode_flops(model, probe.context, probe.example[:1], strict=probe.strict_flops)
        return step.per_token, {"flops_convention": CONVENTION_PER_TOKEN, "flops_full_sequence": full,
                                "flops_decode": dataclasses.asdict(step)}


@register
class Params(Objective):
    """Parameters of the deploy network."""

    name, direction, label, before_training, short = "params", "minimize", "parameters", True, "params"

    def measure(self, model, probe: Probe) -> tuple[float, dict]:
        return count_params(model), {}


@register
class Latency(Objective):
    """Median latency in ms of the first ``[latency]`` runtime at the first batch size (per generated token in
    eager incremental decoding for a language model), on ``latency.device`` (the CPU by default: a copy of a
    network trained elsewhere); every (runtime, batch size) pair in ``latency_table``.

    Once the study has measured its guide (guide_reference.py), a network's figure is its median ratio to the
    guide, the two timed side by side, times the guide's own figure: ratios taken side by side rank networks
    where the machine's speed drifts (see :mod:`nas_theseus.measure.latency`)."""

    name, direction, label, short = "latency_ms", "minimize", "latency (ms, median; per token for LMs)", "latency"
    before_training = True  # a network's time does not depend on its weights: the pruning rule times it untrained

    def measure(self, model, probe: Probe) -> tuple[float, dict]:
        lat_cfg, example, device = probe.latency, probe.example, probe.latency.device
        guide_ms = {} if probe.lm else probe.guide_ms
        rows = []
        # with fixed threads, in a quiet slot (no worker of this machine trains or times beside it: quiet.py) or
        # on cores reserved for timing (latency_aside.py)
        with probe.slot():
            for runtime in lat_cfg.runtimes:
                for batch_size in lat_cfg.batch_sizes:
                    reference = None
                    if (runtime, batch_size) in guide_ms:
                        x = example_input(probe.sample_shape, batch_size, device=device, example=example)
                        reference = probe.guide_runner(runtime, x, lat_cfg.threads)
                    rows.append(measure_latency(model, probe.sample_shape, batch_size=batch_size,
                                                device=device, warmup=lat_cfg.warmup,
                                                repeats=lat_cfg.repeats, threads=lat_cfg.threads, example=example,
                                                runtime=runtime, reference=reference,
                                                block_ms=lat_cfg.block_ms))
            if probe.lm:
                step = decode_latency(model, probe.context, example[:1], device=device,
                                      warmup=min(lat_cfg.warmup, 2), repeats=lat_cfg.repeats,
                                      threads=lat_cfg.threads, block_ms=lat_cfg.block_ms)
        table = []
        for r in rows:
            row = dataclasses.asdict(r)
            row["figure_ms"] = (r.relative * guide_ms[(r.runtime, r.batch_size)] if r.relative is not None
                                else r.median_ms)
            table.append(row)
        attrs = {"latency_table": table} if len(rows) > 1 else {}
        if probe.lm:
            attrs["latency"] = dataclasses.asdict(step)
            attrs["latency_full_sequence"] = table[0]
            return step.per_token_ms, attrs
        attrs["latency"] = table[0]
        attrs["latency_basis"] = ("relative to the guide, timed side by side, x the guide's figure"
                                  if rows[0].relative is not None else "absolute")
        return table[0]["figure_ms"], attrs


def guide_latency(figures: dict | None) -> dict:
    """{(runtime, batch size): the guide's median ms} from the study's guide reference (empty without one)."""
    if not figures or "error" in figures:
        return {}
    rows = figures.get("latency_table") or ([figures["latency"]] if "latency" in figures else [])
    return {(r["runtime"], r["batch_size"]): r["median_ms"] for r in rows}
