"""Incremental decoding of causal token models: FLOPs and latency **per generated token**.

A language model deployed for generation runs one token at a time, carrying a state: an RNN its hidden state,
attention a cache of the keys and values of earlier tokens. What it costs per generated token is one such step,
not a full-sequence forward pass divided by T.

**The decoder.** :class:`IncrementalDecoder` wraps a model that maps int64 tokens (B, T) to logits (B, T, V).
Building it walks the module tree once and picks a :class:`Stepper` for each module from :data:`STEPPERS`
(class -> factory); a module with none raises a one-line :class:`~nas_theseus.errors.UserError` naming its path
and class. Each stepper sees its module's input at one position with the time axis kept, (B, 1, ...), and its
state: ``init(batch, device, dtype) -> state``, then ``step(x, state) -> (y, new_state)``, never changing a
state in place. Built in:

* containers: ``nn.Sequential`` (the engine's ``DeployModel`` too), a guide's ``_Chain``, the hf guide's
  ``CausalLMChain`` (embed -> parts -> head); the state is the tuple of the children's states;
* per-position modules, run on the one-token slice: Linear, LayerNorm, Embedding, Identity, Dropout, element-wise
  activations, transformers' ``Conv1D`` and activation classes, and any module whose class sets
  ``tokenwise = True`` (its forward must treat every position alone);
* ``_Residual`` (x + step of the body), ``RecurrentLayer`` (the RNN's hidden state), ``CausalSelfAttention``
  and transformers' ``GPT2Block`` (key/value caches grown by concatenation, as transformers' ``DynamicCache``),
  the hf ``_Embed`` (a position counter).

A subclass uses its base class's stepper only when it keeps the base's ``forward``. Anything else, e.g. a
token-mixing MLP, is refused. To support another module, register a factory ``(module, path, build) ->
Stepper``, ``build(child, child_path)`` giving the stepper of a child::

    class MyStep(Stepper):
        def __init__(self, module, path, build):
            super().__init__(module, path, build)
            self.body = build(module.body, f"{path}.body")
        def init(self, batch, device, dtype):
            return self.body.init(batch, device, dtype)
        def step(self, x, state):
            return self.body.step(x, state)

    STEPPERS[MyModule] = MyStep

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

import statistics
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..guides.guide import _Chain
from ..guides.hf import CausalLMChain, _Block, _Embed
from ..targets.sequence_blocks import CausalSelfAttention, RecurrentLayer, _Residual
from .flops import count_flops
from .latency import p90, timed_runs

Build = Callable[[nn.Module, str], "Stepper"]


class Stepper:
    """The incremental step of one module at ``path``; subclasses override :meth:`init` and :meth:`step`."""

    def __init__(self, module: nn.Module, path: str, build: Build):
        self.module, self.path = module, path

    def init(self, batch: int, device: torch.device, dtype: torch.dtype) -> Any:
        """The state before the first token (None: no state)."""
        return None

    def step(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Output at this position (B, 1, ...) and the new state, for input ``x`` (B, 1, ...)."""
        raise NotImplementedError


class PerPosition(Stepper):
    """A module that treats every position alone: its forward on the one-token slice."""

    def step(self, x, state):
        return self.module(x), state


class Chain(Stepper):
    """Children in order (``children``: (name, module) pairs, default the named children); state: their tuple."""

    def __init__(self, module: nn.Module, path: str, build: Build,
                 children: Iterable[tuple[str, nn.Module]] | None = None):
        super().__init__(module, path, build)
        named = module.named_children() if children is None else children
        self.children = [build(m, _join(path, name)) for name, m in named]

    def init(self, batch, device, dtype):
        return tuple(c.init(batch, device, dtype) for c in self.children)

    def step(self, x, state):
        new = []
        for child, s in zip(self.children, state, strict=True):
            x, s = child.step(x, s)
            new.append(s)
        return x, tuple(new)


def _guide_chain(module: _Chain, path: str, build: Build) -> Chain:
    return Chain(module, path, build, ((f"items.{i}", m) for i, m in enumerate(module.items)))


def _lm_chain(module: CausalLMChain, path: str, build: Build) -> Chain:
    parts = ((f"parts.{i}", p) for i, p in enumerate(module.parts))
    return Chain(module, path, build, [("embed", module.embed), *parts, ("head", module.head)])


class Residual(Stepper):
    """``_Residual``: x + step of the body."""

    def __init__(self, module: _Residual, path: str, build: Build):
        super().__init__(module, path, build)
        self.body = build(module.body, _join(path, "body"))

    def init(self, batch, device, dtype):
        return self.body.init(batch, device, dtype)

    def step(self, x, state):
        y, state = self.body.step(x, state)
        return x + y, state


class Delegate(Stepper):
    """A wrapper whose forward is its ``block`` child's (hf ``_Block``)."""

    def __init__(self, module: nn.Module, path: str, build: Build):
        super().__init__(module, path, build)
        self.inner = build(module.block, _join(path, "block"))

    def init(self, batch, device, dtype):
        return self.inner.init(batch, device, dtype)

    def step(self, x, state):
        return self.inner.step(x, state)


class Recurrent(Stepper):
    """``RecurrentLayer``: the RNN carries its hidden state (h, or (h, c) for an LSTM) from step to step."""

    def __init__(self, module: RecurrentLayer, path: str, build: Build):
        super().__init__(module, path, build)
        rnn = module.rnn
        if rnn.bidirectional or not rnn.batch_first:
            raise UserError(f"no incremental step for {_name(path)} ({type(module).__name__}): its RNN must be "
                            f"unidirectional and batch_first")

    def init(self, batch, device, dtype):
        rnn = self.module.rnn
        h = torch.zeros(rnn.num_layers, batch, rnn.proj_size or rnn.hidden_size, device=device, dtype=dtype)
        if isinstance(rnn, nn.LSTM):
            return h, torch.zeros(rnn.num_layers, batch, rnn.hidden_size, device=device, dtype=dtype)
        return h

    def step(self, x, state):
        m = self.module
        y, state = m.rnn(x, state)
        y = m.proj(m.drop(y))
        return (x + y if m.residual else y), state


def _empty_cache(batch: int, heads: int, head_dim: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of no tokens yet: two (B, heads, 0, head_dim) tensors."""
    empty = torch.zeros(batch, heads, 0, head_dim, device=device, dtype=dtype)
    return empty, empty


def _attend_cached(q, k, v, cache, scale: float | None = None):
    """Append this token's k, v (B, H, 1, E) to the cache; the query attends to every cached position (all <= t).

    Returns the attention output (B, 1, H·E) and the grown cache."""
    keys, values = torch.cat((cache[0], k), dim=2), torch.cat((cache[1], v), dim=2)
    y = F.scaled_dot_product_attention(q, keys, values, scale=scale)
    return y.transpose(1, 2).reshape(q.shape[0], 1, -1), (keys, values)


class SelfAttention(Stepper):
    """``CausalSelfAttention`` with a key/value cache (its ``attend`` and ``forward``, one query at a time)."""

    def init(self, batch, device, dtype):
        m = self.module
        return _empty_cache(batch, m.heads, m.qkv.in_features // m.heads, device, dtype)

    def step(self, x, state):
        m = self.module
        b, _, d = x.shape
        q, k, v = m.qkv(m.norm1(x)).view(b, 1, 3, m.heads, d // m.heads).permute(2, 0, 3, 1, 4)
        y, state = _attend_cached(q, k, v, state)
        x = x + m.out(y)
        return x + m.mlp(m.norm2(x)), state


class Embed(Stepper):
    """hf ``_Embed``: token + position embedding; the state is the position of the next token."""

    def init(self, batch, device, dtype):
        return 0

    def step(self, x, state):
        m = self.module
        if state >= m.wpe.num_embeddings:
            raise UserError(f"{_name(self.path)} embeds {m.wpe.num_embeddings} positions; cannot decode token "
                            f"{state + 1}")
        position = torch.full((1,), state, dtype=torch.long, device=x.device)
        return m.drop(m.wte(x) + m.wpe(position)[None]), state + 1


def _gpt2_scale(block: nn.Module, path: str) -> float:
    """The attention scale of a transformers GPT2Block run per block (no mask), or a UserError where the
    decoder would not reproduce its forward.

    Under ``sdpa`` (the implementation hf guides use) transformers 5.x passes ``attn.scaling`` to
    ``F.scaled_dot_product_attention``: 1/sqrt(head_dim) if ``scale_attn_weights`` (else 1), divided by
    layer_idx + 1 if ``scale_attn_by_inverse_layer_idx``; ``reorder_and_upcast_attn`` applies only to ``eager``.
    Called without a mask, ``eager`` attention is not causal, so only ``sdpa`` is accepted; versions without
    ``attn.scaling`` only with the default scale (their sdpa path ignored the scale options).
    """
    attn = block.attn
    where = f"no incremental step for {_name(path)} ({type(block).__name__})"
    impl = getattr(getattr(attn, "config", None), "_attn_implementation", None)
    if impl != "sdpa":
        raise UserError(f"{where}: attention implementation {impl!r} is not reproduced; load it with "
                        f"attn_implementation='sdpa'")
    scale = attn.head_dim ** -0.5 if attn.scale_attn_weights else 1.0
    if attn.scale_attn_by_inverse_layer_idx:
        scale /= float(attn.layer_idx + 1)
    own = getattr(attn, "scaling", None)
    default = attn.scale_attn_weights and not attn.scale_attn_by_inverse_layer_idx
    if (own is None and not default) or (own is not None and abs(own - scale) > 1e-12 * scale):
        raise UserError(f"{where}: attention scale {own} of this transformers version is not the expected "
                        f"{scale:g} (scale_attn_weights={attn.scale_attn_weights}, scale_attn_by_inverse_layer_idx="
                        f"{attn.scale_attn_by_inverse_layer_idx})")
    return scale


class GPT2Step(Stepper):
    """transformers ``GPT2Block``: x + c_proj(attn(c_attn(ln_1 x))), then x + mlp(ln_2 x), with a key/value cache.

    Built from the block's submodules, not transformers' cache API; dropout is off (eval). See :func:`_gpt2_scale`
    for the configurations accepted."""

    def __init__(self, module: nn.Module, path: str, build: Build):
        super().__init__(module, path, build)
        self.scale = _gpt2_scale(module, path)

    def init(self, batch, device, dtype):
        attn = self.module.attn
        return _empty_cache(batch, attn.num_heads, attn.head_dim, device, dtype)

    def step(self, x, state):
        block, attn = self.module, self.module.attn
        b = x.shape[0]
        q, k, v = (t.view(b, 1, attn.num_heads, attn.head_dim).transpose(1, 2)
                   for t in attn.c_attn(block.ln_1(x)).split(attn.split_size, dim=2))
        y, state = _attend_cached(q, k, v, state, self.scale)
        x = x + attn.resid_dropout(attn.c_proj(y))
        return x + block.mlp(block.ln_2(x)), state


ELEMENTWISE = (nn.Identity, nn.Dropout, nn.GELU, nn.ReLU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU,
               nn.Mish, nn.Hardtanh, nn.Softplus)

STEPPERS: dict[type, Callable[[nn.Module, str, Build], Stepper]] = {
    nn.Sequential: Chain,
    _Chain: _guide_chain,
    CausalLMChain: _lm_chain,
    **{cls: PerPosition for cls in (nn.Linear, nn.LayerNorm, nn.Embedding, *ELEMENTWISE)},
    _Residual: Residual,
    _Block: Delegate,
    RecurrentLayer: Recurrent,
    CausalSelfAttention: SelfAttention,
    _Embed: Embed,
}
"""Module class -> stepper factory ``(module, path, build) -> Stepper`` (see the module docstring). transformers'
``Conv1D``, activation classes and ``GPT2Block`` are added when a decoder is built while transformers is loaded
(this module never imports it); an entry set by hand is kept."""


def _register_transformers() -> None:
    if "transformers" not in sys.modules:
        return
    from transformers import activations, pytorch_utils

    per_position = [c for c in vars(activations).values()
                    if isinstance(c, type) and issubclass(c, nn.Module) and c.__module__ == activations.__name__]
    for cls in (pytorch_utils.Conv1D, *per_position):
        STEPPERS.setdefault(cls, PerPosition)
    gpt2 = sys.modules.get("transformers.models.gpt2.modeling_gpt2")
    if gpt2 is not None:
        STEPPERS.setdefault(gpt2.GPT2Block, GPT2Step)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _name(path: str) -> str:
    return path or "the model"


def _factory(cls: type) -> Callable[[nn.Module, str, Build], Stepper] | None:
    """The registered factory for ``cls``, a ``tokenwise`` class's, or a base class's when ``forward`` is the same."""
    if cls in STEPPERS:
        return STEPPERS[cls]
    if getattr(cls, "tokenwise", False) is True:
        return PerPosition
    for base in cls.__mro__[1:]:
        if base in STEPPERS and getattr(cls, "forward", None) is getattr(base, "forward", None):
            return STEPPERS[base]
    return None


def build_stepper(module: nn.Module, path: str = "") -> Stepper:
    """The stepper of ``module`` (named ``path`` in the model) and, through it, of all its descendants."""
    factory = _factory(type(module))
    if factory is None:
        raise UserError(f"no incremental step for {_name(path)} ({type(module).__name__}): it is not a "
                        f"per-position or causal module the decoder knows (a module mixing positions cannot run "
                        f"token by token); register one in nas_theseus.measure.decode.STEPPERS")
    return factory(module, path, build_stepper)


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
        _register_transformers()
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
    device, _ = _device_dtype(decoder.model)
    state = decoder.prefill(tokens[:, :t].to(device))
    with torch.no_grad():
        return count_flops(_OneStep(decoder, state), (1,), dtype=torch.long, strict=strict, device=device)


def decode_step_flops(model: nn.Module, example: torch.Tensor, t: int, *, strict: bool = True) -> int:
    """Multiply-adds of one decoding step whose state holds the first ``t`` tokens of ``example`` (1, > t)."""
    tokens = _tokens(example, t + 1)
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
                   warmup: int = 2, repeats: int = 10, threads: int | None = None) -> DecodeLatency:
    """Milliseconds per generated token at batch 1 (see the module docstring); moves the model to ``device``."""
    device = torch.device(device)
    with _restore_mode(model):
        decoder = IncrementalDecoder(model.to(device))  # moved outside inference mode: stays trainable
        tokens = _tokens(example, context).to(device)
        runs, used = timed_runs(lambda: decoder.prefill(tokens), device=device, warmup=warmup, repeats=repeats,
                                threads=threads)
    times = [t / tokens.shape[1] for t in runs]  # ms per token
    return DecodeLatency(statistics.median(times), p90(times), context, str(device), used, repeats)
