"""Target blocks for token and sequence parts (ViT, language models): token-wise MLP, recurrent, causal attention.

Inputs are per-sample (N, D) tokens or (T, D) sequences (the batch is (B, T, D)). A block whose output at
position t depends only on inputs at positions <= t sets the class attribute ``causal = True``; the causality
contract (:func:`nas_theseus.testing.check_causal`) checks every such block. ``causal = False`` marks a block
that mixes positions. Each causal module also runs one token at a time for incremental decoding, its ``step``
(and ``init_state``) beside its ``forward`` (the contract: :mod:`nas_theseus.stepping`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..stepping import Wrapper, attend_cached, empty_cache, register_stepper
from .layers import activation
from .registry import register_block


def sequence_dims(kind: str, in_shape, layout: str = "(T, D)") -> tuple[int, int]:
    """(positions, channels) of a 2-D per-sample input, or a one-line :class:`UserError` naming the block."""
    if len(in_shape) != 2:
        raise UserError(f"{kind} reads {layout} inputs, but this part's input has shape {tuple(in_shape)}")
    return in_shape[0], in_shape[1]


def _linear_or_identity(d_in: int, d_out: int) -> nn.Module:
    """A per-position Linear(d_in, d_out), or Identity when the widths already agree."""
    return nn.Identity() if d_in == d_out else nn.Linear(d_in, d_out)


class _Residual(nn.Module):
    """x + body(x)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


@register_stepper(_Residual)
class _ResidualStep(Wrapper):
    """x + step of the body."""

    def step(self, x, state):
        y, state = self.inner.step(x, state)
        return x + y, state


class _TokenMixing(nn.Module):
    """LayerNorm, then an MLP across the token axis (N -> hidden -> N) applied to every channel."""

    def __init__(self, tokens: int, dim: int, hidden: int, act: str):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(tokens, hidden), activation(act), nn.Linear(hidden, tokens))

    def forward(self, x):
        return self.mlp(self.norm(x).transpose(1, 2)).transpose(1, 2)


@register_block("tokenwise_mlp")
class TokenwiseMLPBlock:
    """Per-token channel MLP on (N, D) tokens, optionally after an MLP-Mixer token-mixing MLP.

    Token mixing (``token_mixing``): x + MLP_N(LayerNorm(x)) across the N axis, hidden ``token_hidden``.
    Channel MLP: [LayerNorm ->] Linear(D, hidden) -> activation -> Linear(hidden, D_out), applied to each token;
    ``hidden=None`` is 4 D. D_out is ``width``, or the replaced part's last dim when ``width`` is None. With
    ``residual`` the input is added to the channel MLP's output when D_out == D (and to the token-mixing MLP's
    output always). Output: (N, D_out). Token mixing mixes positions: the block is causal only without it.
    """

    causal = False

    @staticmethod
    def causal_when(o) -> bool:
        return not o.token_mixing

    @dataclass(frozen=True)
    class Options:
        width: int | None = None
        hidden: int | None = None
        activation: str = "gelu"
        norm: bool = True
        residual: bool = True
        token_mixing: bool = False
        token_hidden: int = 64

    examples = ({}, {"width": 8, "hidden": 16, "norm": False, "activation": "relu"},
                {"token_mixing": True, "token_hidden": 8, "residual": False})

    @staticmethod
    def check(o: Options) -> None:
        if any(v is not None and v < 1 for v in (o.width, o.hidden)) or o.token_hidden < 1:
            raise UserError(f"tokenwise_mlp needs width, hidden, token_hidden >= 1, got {o}")
        activation(o.activation)

    @staticmethod
    def build(o: Options, in_shape, guide_out_shape) -> nn.Module:
        tokens, dim = sequence_dims("tokenwise_mlp", in_shape, "(N, D)")
        width = o.width or guide_out_shape[-1]
        layers: list[nn.Module] = []
        if o.token_mixing:
            mixing = _TokenMixing(tokens, dim, o.token_hidden, o.activation)
            layers.append(_Residual(mixing) if o.residual else mixing)
        hidden = o.hidden or 4 * dim
        channel = nn.Sequential(*([nn.LayerNorm(dim)] if o.norm else []), nn.Linear(dim, hidden),
                                activation(o.activation), nn.Linear(hidden, width))
        layers.append(_Residual(channel) if o.residual and width == dim else channel)
        return nn.Sequential(*layers)


class RecurrentLayer(nn.Module):
    """A batch-first unidirectional RNN's per-step outputs -> dropout -> optional Linear, plus x if ``residual``."""

    def __init__(self, rnn: nn.RNNBase, out_dim: int, dropout: float, residual: bool):
        super().__init__()
        self.rnn = rnn
        self.drop = nn.Dropout(dropout)
        self.proj = _linear_or_identity(rnn.hidden_size, out_dim)
        self.residual = residual

    def forward(self, x):
        y, _ = self.rnn(x)
        y = self.proj(self.drop(y))
        return x + y if self.residual else y

    def init_state(self, batch: int, device, dtype):
        """The RNN's zero hidden state: h, or (h, c) for an LSTM."""
        rnn = self.rnn
        h = torch.zeros(rnn.num_layers, batch, rnn.proj_size or rnn.hidden_size, device=device, dtype=dtype)
        if isinstance(rnn, nn.LSTM):
            return h, torch.zeros(rnn.num_layers, batch, rnn.hidden_size, device=device, dtype=dtype)
        return h

    def step(self, x, state):
        """One position (B, 1, D): the RNN carries its hidden state from step to step."""
        if self.rnn.bidirectional or not self.rnn.batch_first:
            raise UserError(f"{type(self).__name__} cannot run token by token: its RNN must be unidirectional "
                            f"and batch_first")
        y, state = self.rnn(x, state)
        y = self.proj(self.drop(y))
        return (x + y if self.residual else y), state


class _RecurrentBlock:
    """A unidirectional recurrent layer on (T, D) sequences; causal. Output: (T, D_out), D_out the part's last dim.

    ``layers`` stacked layers of state size ``hidden`` (None: D_out); the top layer's per-step outputs go through
    dropout, then a per-step Linear(hidden, D_out) when hidden != D_out. ``dropout`` also applies between
    stacked layers. With ``residual`` the input is added when D == D_out. Subclasses set ``make_rnn``.
    """

    causal = True

    @dataclass(frozen=True)
    class Options:
        hidden: int | None = None
        layers: int = 1
        residual: bool = True
        dropout: float = 0.0

    examples = ({}, {"hidden": 8, "layers": 2, "dropout": 0.1}, {"hidden": 6, "residual": False})

    @classmethod
    def check(cls, o: Options) -> None:
        if o.hidden is not None and o.hidden < 1 or o.layers < 1 or not 0.0 <= o.dropout < 1.0:
            raise UserError(f"{cls.kind} needs hidden >= 1, layers >= 1 and 0 <= dropout < 1, got {o}")

    @classmethod
    def build(cls, o: Options, in_shape, guide_out_shape) -> nn.Module:
        _, dim = sequence_dims(cls.kind, in_shape)
        out_dim = guide_out_shape[-1]
        rnn = cls.make_rnn(dim, o.hidden or out_dim, num_layers=o.layers, batch_first=True,
                           dropout=o.dropout if o.layers > 1 else 0.0)
        return RecurrentLayer(rnn, out_dim, o.dropout, o.residual and dim == out_dim)


@register_block("lstm")
class LSTMBlock(_RecurrentBlock):
    """A unidirectional LSTM on (T, D) sequences (options and shapes: see ``_RecurrentBlock``)."""

    make_rnn = nn.LSTM


@register_block("gru")
class GRUBlock(_RecurrentBlock):
    """A unidirectional GRU on (T, D) sequences (options and shapes: see ``_RecurrentBlock``)."""

    make_rnn = nn.GRU


@register_block("elman")
class ElmanBlock(_RecurrentBlock):
    """A unidirectional Elman RNN (tanh) on (T, D) sequences (options and shapes: see ``_RecurrentBlock``)."""

    make_rnn = nn.RNN


class CausalSelfAttention(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)); attention masked to positions <= t.

    Attn: q, k, v = split(Linear(D, 3D)), ``heads`` heads of D / heads, softmax(q kᵀ / sqrt(D / heads)) v with
    the causal mask, heads concatenated -> Linear(D, D). MLP: Linear(D, mlp_ratio D) -> GELU -> Linear.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        hidden = max(1, round(mlp_ratio * dim))
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, t, d))

    def forward(self, x):
        x = x + self.attend(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def init_state(self, batch: int, device, dtype):
        """An empty key/value cache."""
        return empty_cache(batch, self.heads, self.qkv.in_features // self.heads, device, dtype)

    def step(self, x, state):
        """One query (B, 1, D) against the cached keys and values of every position so far (and its own)."""
        b, _, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, 1, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y, state = attend_cached(q, k, v, state)
        x = x + self.out(y)
        return x + self.mlp(self.norm2(x)), state


@register_block("causal_attention")
class CausalAttentionBlock:
    """A pre-norm causal self-attention transformer block on (T, D) sequences; output (T, D_out).

    The block runs at width ``dim`` (None: D), with a per-position Linear(D, dim) in front when dim != D and a
    Linear(dim, D_out) after when dim != D_out, D_out the replaced part's last dim. ``dim`` must be a
    multiple of ``heads``. See :class:`CausalSelfAttention` for the computation.
    """

    causal = True

    @dataclass(frozen=True)
    class Options:
        heads: int = 4
        mlp_ratio: float = 4.0
        dim: int | None = None

    examples = ({}, {"heads": 1, "mlp_ratio": 2.0}, {"heads": 3, "dim": 12, "mlp_ratio": 1.0})

    @staticmethod
    def check(o: Options) -> None:
        if o.heads < 1 or not (o.mlp_ratio > 0 and math.isfinite(o.mlp_ratio)) or o.dim is not None and o.dim < 1:
            raise UserError(f"causal_attention needs heads >= 1, mlp_ratio > 0 and dim >= 1, got {o}")

    @staticmethod
    def build(o: Options, in_shape, guide_out_shape) -> nn.Module:
        _, d_in = sequence_dims("causal_attention", in_shape)
        dim = o.dim or d_in
        if dim % o.heads:
            raise UserError(f"causal_attention with heads={o.heads} needs a width divisible by it, got {dim} "
                            f"(input shape {tuple(in_shape)}); set dim or heads")
        return nn.Sequential(_linear_or_identity(d_in, dim), CausalSelfAttention(dim, o.heads, o.mlp_ratio),
                             _linear_or_identity(dim, guide_out_shape[-1]))
