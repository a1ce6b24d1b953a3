"""What each link of the library's chain graph costs: the block a link enters, built for what it reads (its
predecessor's output), plus the adapter a kept guide part needs behind a target, plus the head on the link into
the output, each measured once.

FLOPs add up over a sequential network, so a chain's summed FLOPs are the deploy network's own (the stem is the
graph's base cost; tests/test_library.py checks the sum against the built network). Latency is measured per
module (batch and threads as the study's ``[latency]``, fewer repeats) and summed: a prediction, not the
network's measured figure (per-module overheads add up differently); a candidate converted for real is timed
whole, as every trial is.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import UserError
from ..measure import count_flops, measure_latency
from ..targets import BlockSpec, create_target, make_bridge, probe_output_shape
from ..targets.layers import numel

Shape = tuple[int, ...]


class LinkCosts:
    """Builds and measures the modules of links, each (module kind, shapes) once. ``latency``: None (FLOPs only)
    or ``dict(batch_size=..., threads=..., repeats=..., block_ms=..., device=...)``."""

    def __init__(self, guide, *, bridge: str, bridge_rank: int | None, latency: dict | None):
        self.guide, self.bridge, self.rank, self.latency = guide, bridge, bridge_rank, latency
        self._measured: dict[tuple, dict] = {}
        self._targets: dict[tuple, tuple[nn.Module, Shape] | None] = {}

    @property
    def names(self) -> tuple[str, ...]:
        return ("flops", "latency_ms") if self.latency is not None else ("flops",)

    def target(self, spec: BlockSpec, in_shape: Shape, stop: int) -> tuple[nn.Module, Shape] | None:
        """The block ``spec`` reading ``in_shape`` in place of parts up to ``stop - 1``, and its output shape;
        None where it cannot read ``in_shape`` (a convolution after a flat MLP output)."""
        key = (spec.to_json(), tuple(in_shape), stop)
        if key not in self._targets:
            try:
                module = create_target(spec, in_shape, self.guide.shapes[stop])
                self._targets[key] = module, probe_output_shape(module, in_shape)
            except (UserError, RuntimeError, ValueError):
                self._targets[key] = None
        return self._targets[key]

    def base(self) -> dict:
        """The stem's costs: every chain pays them."""
        return self._cost(("stem",), lambda: self.guide.stem, self.guide.sample_shape)

    def kept(self, start: int, stop: int) -> dict:
        """The guide's own parts ``start..stop-1``."""
        return self._cost(("kept", start, stop), lambda: nn.Sequential(*(p.module for p in
                                                                         self.guide.parts[start:stop])),
                          self.guide.shapes[start])

    def entered(self, spec: BlockSpec, in_shape: Shape, stop: int) -> dict:
        return self._cost(("target", spec.to_json(), tuple(in_shape), stop),
                          lambda: self.target(spec, in_shape, stop)[0], in_shape)

    def adapter(self, in_shape: Shape, out_shape: Shape) -> dict:
        """The bridge a kept guide part reads a target's output through (part of the deploy network)."""
        return self._cost(("adapter", tuple(in_shape), tuple(out_shape)),
                          lambda: make_bridge(self.bridge, in_shape, out_shape, rank=self.rank), in_shape)

    def head(self, in_shape: Shape, *, guide_head: bool) -> dict:
        """The guide's head (on the guide's last activation) or a new linear head on ``in_shape``."""
        if guide_head:
            return self._cost(("guide_head",), lambda: self.guide.head, self.guide.shapes[-1])
        out = numel(self.guide.output_shape)
        return self._cost(("linear_head", tuple(in_shape)),
                          lambda: nn.Sequential(nn.Flatten(), nn.Linear(numel(in_shape), out)), in_shape)

    def _cost(self, key: tuple, build: Callable[[], nn.Module], in_shape: Shape) -> dict:
        if key not in self._measured:
            module = build()
            costs = {"flops": float(count_flops(module, tuple(in_shape)))}
            if self.latency is not None:
                with torch.no_grad():
                    costs["latency_ms"] = measure_latency(module, tuple(in_shape), warmup=3,
                                                          **self.latency).median_ms
            self._measured[key] = costs
        return self._measured[key]


def add(*costs: dict) -> dict:
    """The sum of cost dicts with the same names."""
    return {name: sum(c[name] for c in costs) for name in costs[0]}
