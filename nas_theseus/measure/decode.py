"""Incremental decoding of causal token models: FLOPs and latency **per generated token**.

A language model deployed for generation runs one token at a time, carrying a state: an RNN its hidden state,
attention a cache of the keys and values of earlier tokens. What it costs per generated token is one such step,
not a full-sequence forward pass divided by T.

**The decoder.** :class:`IncrementalDecoder` wraps a model that maps int64 tokens (B, T) to logits (B, T, V)
and runs it one token at a time. Building it walks the module tree once and takes each module's stepper from
:mod:`nas_theseus.stepping` (``init(batch, device, dtype) -> state``, ``step(x, state) -> (y, new_state)`` on
one position, (B, 1, ...)), where the contract and the registry are documented; each kind of module owns its
step beside its forward (the sequence blocks, the hf guide's chain and GPT-2 blocks, containers and
per-position torch modules). A module with none is refused in one line naming its path and class. This module
is only the driver: the decoder, FLOPs and latency per token.

**FLOPs per token** (:func:`decode_flops`): the cost f(t) of one step whose state holds t earlier tokens, in
multiply-adds with the fvcore machinery of :mod:`nas_theseus.measure.flops` (same handles, zero-cost operators
and uncounted-operator error). The state for t tokens is built first, then a wrapper whose forward does one step
from that state (held as constants) is traced, so the prefill is not counted. With the built-in steppers f is
affine in t: an attention layer of width W reads t + 1 keys and values (2·W multiply-adds per cached token), every
other module costs the same at every position. So the mean over the positions of a ``context``-token sequence,
t = 0 .. context − 1, is exactly (f(0) + f(context − 1)) / 2 (for a registered stepper whose cost is not affine
in t, it is the mean of the two end points only).

**Latency per token** (:func:`decode_latency`): batch 1, the ``context`` tokens of the example fed one by one
(teacher forcing: no sampling), timed as :mod:`nas_theseus.measure.latency` does (warm-up, then ``repeats``
runs under ``torch.inference_mode``, CUDA synchronised before the clock stops, threads set and recorded); the
figure is the median over runs of total time / ``context``.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..stepping import build_stepper
from ..utils.devices import canonical_device, cpu_copy, devices_of
from .flops import count_flops
from .latency import BLOCK_MS, p90, timed_runs


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device of the first parameter or buffer, dtype of the first floating one (CPU / float32 without)."""
    tensors = [*model.parameters(), *model.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
    return device, dtype


class IncrementalDecoder:
    """Runs a causal token model (B, T) -> (B, T, V) one token at a time; see the module docstring.

    >>> dec = IncrementalDecoder(model)                      # doctest: +SKIP
    >>> state = dec.init_state(batch_size)                   # doctest: +SKIP
    >>> logits_t, state = dec.step(ids[:, t], state)         # doctest: +SKIP

    Building it puts the model in eval mode; :meth:`step` runs without autograd.
    """

    def __init__(self, model: nn.Module):
        self.model = model.eval()
        self.root = build_stepper(model)

    def init_state(self, batch_size: int = 1) -> Any:
        """The state before the first token, on the model's current device."""
        return self.root.init(batch_size, *_device_dtype(self.model))

    def _step(self, ids: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        out, state = self.root.step(ids.reshape(-1, 1), state)
        return out[:, -1], state

    @torch.no_grad()
    def step(self, ids: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Logits (B, V) for tokens ``ids`` (B,) or (B, 1) at the next position, and the new state."""
        return self._step(ids, state)

    def prefill(self, ids: torch.Tensor, state: Any = None) -> Any:
        """The state after feeding ``ids`` (B, T) one token at a time (from ``state``, default the initial one)."""
        state = self.init_state(ids.shape[0]) if state is None else state
        for column in ids.unbind(1):
            _, state = self.step(column, state)
        return state


@contextmanager
def _restore_mode(model: nn.Module) -> Iterator[None]:
    was = model.training
    try:
        yield
    finally:
        model.train(was)


def _tokens(example: torch.Tensor, context: int) -> torch.Tensor:
    """The first ``context`` tokens of a (1, T) or (T,) integer example, as (1, context)."""
    if context < 1:
        raise UserError(f"decoding needs a context of at least 1 token, got {context}")
    ids = example.reshape(1, -1) if example.dim() == 1 else example
    if ids.dim() != 2 or ids.shape[0] != 1 or ids.shape[1] < context or ids.is_floating_point():
        raise UserError(f"the decoding example must be integer tokens (1, T) with T >= context = {context}, got "
                        f"{ids.dtype} {tuple(example.shape)}")
    return ids[:, :context]


class _OneStep(nn.Module):
    """What fvcore traces: one step from a fixed state, held as constants so that building it is not counted."""

    def __init__(self, decoder: IncrementalDecoder, state: Any):
        super().__init__()
        self.model = decoder.model  # registered, so the trace reads its parameters as parameters
        self.train(decoder.model.training)
        self._decoder, self._state = decoder, state

    def forward(self, ids):
        return self._decoder._step(ids, self._state)[0]


def _step_flops(decoder: IncrementalDecoder, tokens: torch.Tensor, t: int, strict: bool) -> int:
    state = decoder.prefill(tokens[:, :t].cpu())  # the decoder's model is on the CPU (decode_flops)
    with torch.no_grad():
        return count_flops(_OneStep(decoder, state), (1,), dtype=torch.long, strict=strict)


def decode_step_flops(model: nn.Module, example: torch.Tensor, t: int, *, strict: bool = True) -> int:
    """Multiply-adds of one decoding step whose state holds the first ``t`` tokens of ``example`` (1, > t)."""
    tokens = _tokens(example, t + 1)
    model = cpu_copy(model)  # counted on the CPU: the count does not depend on the device
    with _restore_mode(model):
        return _step_flops(IncrementalDecoder(model), tokens, t, strict)


@dataclass(frozen=True)
class DecodeFlops:
    per_token: float  # mean over positions 0 .. context-1 = (first + last) / 2 (the step cost is affine in t)
    first: int  # the step at position 0 (empty state)
    last: int  # the step at position context-1 (state of context-1 tokens)
    context: int


def decode_flops(model: nn.Module, context: int, example: torch.Tensor, *, strict: bool = True) -> DecodeFlops:
    """Multiply-adds per generated token, averaged over the positions of a ``context``-token sequence.

    ``example``: (1, >= context) tokens the state is built from. ``strict``: as in
    :func:`~nas_theseus.measure.flops.count_flops` (uncounted operators raise).
    """
    tokens = _tokens(example, context)
    model = cpu_copy(model)  # counted on the CPU: the count does not depend on the device
    with _restore_mode(model):
        decoder = IncrementalDecoder(model)
        first = _step_flops(decoder, tokens, 0, strict)
        last = first if context == 1 else _step_flops(decoder, tokens, context - 1, strict)
    return DecodeFlops((first + last) / 2, first, last, context)


@dataclass(frozen=True)
class DecodeLatency:
    per_token_ms: float  # median over runs of (time to decode `context` tokens) / context
    p90_ms: float
    context: int
    device: str
    threads: int
    repeats: int


def decode_latency(model: nn.Module, context: int, example: torch.Tensor, *, device: str | torch.device = "cpu",
                   warmup: int = 2, repeats: int = 10, threads: int | None = None,
                   block_ms: float = BLOCK_MS) -> DecodeLatency:
    """Milliseconds per generated token at batch 1 (see the module docstring), on ``device`` (a model that lives
    elsewhere is timed as a copy there and stays where it is)."""
    device = canonical_device(device)
    if devices_of(model) - {device}:
        model = copy.deepcopy(model).to(device)  # copied outside inference mode: stays trainable
    with _restore_mode(model):
        decoder = IncrementalDecoder(model)
        tokens = _tokens(example, context).to(device)
        runs, used = timed_runs(lambda: decoder.prefill(tokens), device=device, warmup=warmup, repeats=repeats,
                                threads=threads, block_ms=block_ms)
    times = [t / tokens.shape[1] for t in runs]  # ms per token
    return DecodeLatency(statistics.median(times), p90(times), context, str(device), used, repeats)
