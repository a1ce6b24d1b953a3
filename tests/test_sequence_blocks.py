"""Token, sequence and bottleneck blocks: shapes, a reference computation, parameter counts, causality."""

import math
import re

import pytest
import torch
from torch import nn

from nas_theseus.errors import UserError
from nas_theseus.targets import BlockSpec, create_target, probe_output_shape
from nas_theseus.targets.vision_blocks import matching_stride
from nas_theseus.testing import check_causal


def build(kind, in_shape, out_shape, **options):
    return create_target(BlockSpec.of(kind, **options), in_shape, out_shape)


@pytest.mark.parametrize("kind, options, in_shape, out_shape, expected", [
    ("tokenwise_mlp", {}, (9, 12), (9, 12), (9, 12)),
    ("tokenwise_mlp", {"width": 7}, (9, 12), (9, 12), (9, 7)),
    ("tokenwise_mlp", {"token_mixing": True, "token_hidden": 4}, (9, 12), (9, 24), (9, 24)),
    ("lstm", {}, (16, 12), (16, 24), (16, 24)),
    ("gru", {"hidden": 5}, (16, 12), (16, 12), (16, 12)),
    ("elman", {"layers": 2, "residual": False}, (16, 12), (16, 3), (16, 3)),
    ("causal_attention", {"dim": 8, "heads": 2}, (16, 12), (16, 24), (16, 24)),
    ("bottleneck2d", {}, (4, 8, 8), (8, 4, 4), (8, 4, 4)),
    ("bottleneck2d", {"channels": 16}, (8, 7, 7), (8, 4, 4), (16, 4, 4)),
    ("bottleneck2d", {}, (4, 8, 8), (32,), (4, 8, 8)),
])
def test_output_shapes(kind, options, in_shape, out_shape, expected):
    assert probe_output_shape(build(kind, in_shape, out_shape, **options), in_shape) == expected


def test_lstm_state_defaults_to_the_guide_dim():
    block = build("lstm", (16, 12), (16, 24))
    assert block.rnn.hidden_size == 24 and isinstance(block.proj, nn.Identity)
    projected = build("lstm", (16, 12), (16, 24), hidden=5)
    assert projected.rnn.hidden_size == 5 and projected.proj.out_features == 24


def test_recurrent_residual_adds_the_input():
    x = torch.randn(2, 6, 4)
    torch.manual_seed(0)
    with_residual = build("gru", (6, 4), (6, 4)).eval()
    torch.manual_seed(0)
    without = build("gru", (6, 4), (6, 4), residual=False).eval()
    assert torch.allclose(with_residual(x) - without(x), x, atol=1e-6)


def reference_attention(block, x):
    """The pre-norm causal transformer block written out with a hand-made masked softmax, in float64."""
    d = x.shape[-1]
    heads, dh = block.heads, d // block.heads
    h = nn.functional.layer_norm(x, (d,), block.norm1.weight, block.norm1.bias, block.norm1.eps)
    q, k, v = (h @ block.qkv.weight.T + block.qkv.bias).split(d, dim=-1)
    steps = x.shape[1]
    heads_out = []
    for i in range(heads):
        part = slice(i * dh, (i + 1) * dh)
        scores = q[..., part] @ k[..., part].transpose(1, 2) / math.sqrt(dh)
        future = torch.ones(steps, steps, dtype=torch.bool).triu(1)
        weights = scores.masked_fill(future, -math.inf).exp()
        heads_out.append((weights / weights.sum(-1, keepdim=True)) @ v[..., part])
    x = x + torch.cat(heads_out, -1) @ block.out.weight.T + block.out.bias
    h = nn.functional.layer_norm(x, (d,), block.norm2.weight, block.norm2.bias, block.norm2.eps)
    first, last = block.mlp[0], block.mlp[2]
    return x + nn.functional.gelu(h @ first.weight.T + first.bias) @ last.weight.T + last.bias


@pytest.mark.parametrize("heads", [1, 2])
def test_causal_attention_matches_a_reference(heads):
    torch.manual_seed(0)
    module = build("causal_attention", (5, 4), (5, 4), heads=heads, mlp_ratio=2.0).double().eval()
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(module(x), reference_attention(module[1], x), atol=1e-10)


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts():
    # one tanh RNN layer 3 -> 5: W_ih 5x3, W_hh 5x5, two biases of 5; state = guide dim, so no projection
    assert count(build("elman", (7, 3), (7, 5))) == 15 + 25 + 5 + 5
    # two layers of state 4, then Linear(4, 6)
    assert count(build("elman", (7, 3), (7, 6), hidden=4, layers=2)) == (12 + 16 + 8) + (16 + 16 + 8) + (24 + 6)
    # same shape: no shortcut; 1x1 8->2, 3x3 2->2, 1x1 2->8, no conv biases, BatchNorm weight + bias per channel
    assert count(build("bottleneck2d", (8, 4, 4), (8, 4, 4))) == 16 + 36 + 16 + 2 * (2 + 2 + 8)


def test_token_mixing_is_caught_leaking_and_per_token_mlp_is_causal():
    with pytest.raises(AssertionError, match="not causal"):
        check_causal("tokenwise_mlp", ({"token_mixing": True},))
    assert check_causal("tokenwise_mlp", ({}, {"width": 8, "residual": False}))


@pytest.mark.parametrize("kind, in_shape, layout", [
    ("lstm", (4, 8, 8), "(T, D)"), ("gru", (40,), "(T, D)"), ("elman", (4, 8, 8), "(T, D)"),
    ("causal_attention", (4, 8, 8), "(T, D)"), ("tokenwise_mlp", (40,), "(N, D)"),
    ("bottleneck2d", (16, 12), "(C, H, W)"),
])
def test_unreadable_shapes_are_one_line_user_errors(kind, in_shape, layout):
    with pytest.raises(UserError, match=rf"{kind} reads {re.escape(layout)} .* {re.escape(str(in_shape))}") as e:
        build(kind, in_shape, in_shape)
    assert "\n" not in str(e.value)


def test_bad_options_and_head_counts():
    with pytest.raises(UserError, match="layers >= 1"):
        BlockSpec.of("lstm", layers=0)
    with pytest.raises(UserError, match="mlp_ratio > 0"):
        BlockSpec.of("causal_attention", mlp_ratio=0)
    with pytest.raises(UserError, match="divisible"):
        build("causal_attention", (25, 10), (25, 5), heads=4)


@pytest.mark.parametrize("in_shape, out_shape, stride", [
    ((4, 8, 8), (8, 4, 4), 2), ((4, 7, 7), (4, 4, 4), 2), ((4, 8, 8), (4, 3, 3), 3),
    ((4, 8, 8), (4, 8, 8), 1), ((4, 8, 8), (4, 8, 4), 1), ((4, 8, 8), (32,), 1),
])
def test_bottleneck_stride_matches_the_part(in_shape, out_shape, stride):
    assert matching_stride(in_shape, out_shape) == stride


def test_bottleneck_shortcut_projects_only_when_the_shape_changes():
    assert isinstance(build("bottleneck2d", (8, 4, 4), (8, 4, 4)).shortcut, nn.Identity)
    assert isinstance(build("bottleneck2d", (8, 4, 4), (8, 2, 2)).shortcut[0], nn.Conv2d)
