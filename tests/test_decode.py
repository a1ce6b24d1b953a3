"""Incremental decoding (nas_theseus.measure.decode): step-by-step logits equal the full forward's at every position,
unsupported modules are refused by path, FLOPs per token (affine in the position) and latency per token."""

from __future__ import annotations

import copy
import math
import warnings
from collections import OrderedDict

import pytest
import torch
from torch import nn

from nas_theseus.convert.hybrid import DeployModel
from nas_theseus.data.text import load_text
from nas_theseus.errors import UserError
from nas_theseus.guides.hf import CausalLMChain, hf_guide
from nas_theseus.measure import STEPPERS, IncrementalDecoder, count_flops, decode_flops, decode_latency
from nas_theseus.measure.decode import decode_step_flops
from nas_theseus.stepping import PerPosition, Stepper, register_stepper
from nas_theseus.targets import BlockSpec, create_target

T, D, V, LAYERS = 16, 16, 256, 2


@pytest.fixture(scope="module")
def text():
    return load_text(context=T, max_bytes=20_000)


@pytest.fixture(scope="module")
def guide(text):
    return hf_guide("gpt2", text, weights="random", n_embd=D, n_layer=LAYERS, n_head=2)


def assert_decodes(model: nn.Module, ids: torch.Tensor) -> None:
    """Logits of the decoder, token by token, equal the full forward's at every position (atol 1e-5)."""
    model.eval()
    with torch.no_grad():
        full = model(ids)
    decoder = IncrementalDecoder(model)
    state = decoder.init_state(ids.shape[0])
    for t in range(ids.shape[1]):
        logits, state = decoder.step(ids[:, t], state)
        assert logits.shape == (ids.shape[0], full.shape[-1])
        torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=0, msg=f"position {t}")


def target(kind: str, **options) -> nn.Module:
    torch.manual_seed(len(kind))
    return create_target(BlockSpec.of(kind, **options), (T, D), (T, D))


class TokenwiseLinear(nn.Module):
    """Stands in for a token-wise bridge: any class with ``tokenwise = True`` runs per position."""

    tokenwise = True

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(D, D)

    def forward(self, x):
        return self.inner(x.reshape(-1, D)).reshape(x.shape)


def deploy_model(guide, *parts: nn.Module) -> DeployModel:
    """stem -> parts -> head, as the engine's deploy network."""
    children = OrderedDict([("stem", guide.stem)])
    children.update((f"part{k}", p) for k, p in enumerate(parts))
    children["head"] = guide.head
    return DeployModel(children, arch=[], boundaries=[])


def test_gpt2_chain_decodes_like_its_forward(guide, text):
    assert isinstance(guide.module, CausalLMChain)
    assert_decodes(guide.module, text.val.x[:3])


def test_hybrid_deploy_model_decodes_like_its_forward(guide, text):
    model = deploy_model(guide,
                         target("lstm", hidden=12),  # hidden != D: per-step projection
                         target("gru"),
                         target("elman", hidden=8, layers=2),
                         TokenwiseLinear(),
                         target("causal_attention", heads=2, dim=24, mlp_ratio=2.0),
                         target("tokenwise_mlp", hidden=32),
                         copy.deepcopy(guide.parts[1].module))  # a kept GPT-2 part
    model.train()
    assert_decodes(model, text.val.x[:2])
    assert not model.training  # the decoder runs in eval mode


@pytest.mark.parametrize("options", [{}, {"scale_attn_weights": False}, {"scale_attn_by_inverse_layer_idx": True}])
def test_gpt2_attention_scales(options):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=64, n_positions=12, n_embd=16, n_layer=2, n_head=2, tie_word_embeddings=False,
                        initializer_range=0.5, bos_token_id=None, eos_token_id=None, **options)  # large weights:
    with warnings.catch_warnings():  # a wrong scale moves the logits by ~3
        warnings.simplefilter("ignore")
        model = GPT2LMHeadModel(config)
        chain = CausalLMChain(model)
    tokens = torch.randint(64, (2, 12), generator=torch.Generator().manual_seed(0))
    if options and not hasattr(model.transformer.h[0].attn, "scaling"):
        # transformers releases before the attention's own `scaling` (4.x) ignore these options under sdpa:
        # the decoder refuses rather than guess which scale the forward used
        with pytest.raises(UserError, match="attention scale None of this transformers version"):
            assert_decodes(chain, tokens)
        return
    assert_decodes(chain, tokens)


def test_unsupported_modules_are_refused_by_path(guide):
    mixing = target("tokenwise_mlp", token_mixing=True, token_hidden=8)
    with pytest.raises(UserError, match=r"^no incremental step for part1\.0\.body \(_TokenMixing\): "):
        IncrementalDecoder(deploy_model(guide, target("lstm"), mixing))
    with pytest.raises(UserError, match=r"no incremental step for part0\.0 \(_TokenMixing\)"):
        IncrementalDecoder(deploy_model(guide, target("tokenwise_mlp", token_mixing=True, residual=False)))
    with pytest.raises(UserError, match=r"no incremental step for head\.0 \(Flatten\)"):
        IncrementalDecoder(nn.Sequential(OrderedDict(stem=guide.stem, head=nn.Sequential(nn.Flatten(),
                                                                                         nn.Linear(T * D, V)))))

    class Reversed(nn.Sequential):  # a Sequential with its own forward is not run as a Sequential
        def forward(self, x):
            return x.flip(1)

    with pytest.raises(UserError, match=r"no incremental step for part0 \(Reversed\)"):
        IncrementalDecoder(deploy_model(guide, Reversed()))


def test_gpt2_without_sdpa_is_refused():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=64, n_positions=8, n_embd=8, n_layer=1, n_head=2, bos_token_id=None,
                        eos_token_id=None)
    chain = CausalLMChain(GPT2LMHeadModel._from_config(config, attn_implementation="eager"))
    with pytest.raises(UserError, match=r"parts\.0\.0\.block \(GPT2Block\): attention implementation 'eager'"):
        IncrementalDecoder(chain)


def test_a_registered_stepper_is_used(guide, text, monkeypatch):
    class Scale(nn.Module):
        def forward(self, x):
            return 2 * x

    class Doubled(Stepper):
        def step(self, x, state):
            return self.module(x), state

    model = deploy_model(guide, Scale())
    with pytest.raises(UserError, match=r"part0 \(Scale\)"):
        IncrementalDecoder(model)
    monkeypatch.setitem(STEPPERS, Scale, Doubled)
    assert_decodes(model, text.val.x[:1])
    assert STEPPERS[nn.Linear] is PerPosition


class RunningSum(nn.Module):
    """A causal module that owns its step beside its forward: the cumulative sum over positions."""

    def forward(self, x):
        return x.cumsum(1)

    def init_state(self, batch, device, dtype):
        return torch.zeros(batch, 1, D, device=device, dtype=dtype)

    def step(self, x, state):
        return state + x, state + x


def test_a_module_owns_its_step_and_a_subclass_with_another_forward_does_not_inherit_it(guide, text):
    assert_decodes(deploy_model(guide, RunningSum()), text.val.x[:2])

    class Reversed(RunningSum):  # overrides forward, keeps the base's step: refused, not silently wrong
        def forward(self, x):
            return x.flip(1).cumsum(1).flip(1)

    with pytest.raises(UserError, match=r"no incremental step for part0 \(Reversed\)"):
        IncrementalDecoder(deploy_model(guide, Reversed()))

    class Renamed(RunningSum):  # keeps forward and step
        pass

    assert_decodes(deploy_model(guide, Renamed()), text.val.x[:1])


def test_a_stepper_registered_by_dotted_name_or_module_wildcard(guide, text, monkeypatch):
    class Scale(nn.Module):
        def forward(self, x):
            return 2 * x

    model = deploy_model(guide, Scale())
    monkeypatch.setitem(STEPPERS, f"{Scale.__module__}.{Scale.__qualname__}", PerPosition)
    assert_decodes(model, text.val.x[:1])
    monkeypatch.delitem(STEPPERS, f"{Scale.__module__}.{Scale.__qualname__}")
    monkeypatch.setitem(STEPPERS, f"{Scale.__module__}.*", PerPosition)
    assert_decodes(model, text.val.x[:1])
    monkeypatch.delitem(STEPPERS, f"{Scale.__module__}.*")
    with pytest.raises(UserError, match=r"part0 \(Scale\)"):
        IncrementalDecoder(model)
    register_stepper(Scale)(PerPosition)  # the decorator form
    try:
        assert_decodes(model, text.val.x[:1])
    finally:
        del STEPPERS[Scale]


def lstm_model(hidden: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(V, D), target("lstm", hidden=hidden), nn.Linear(D, V))


def test_lstm_decode_flops_by_hand(text):
    hidden = 12
    model = lstm_model(hidden)
    ids = text.val.x[:1]
    assert_decodes(model, ids)
    by_hand = 4 * (D * hidden + hidden * hidden) + hidden * D + D * V  # 4 gates, projection, head; embedding free
    flops = decode_flops(model, T, ids)
    assert flops.first == flops.last == flops.per_token == by_hand and flops.context == T
    # every layer here works position by position: the full-sequence count is T steps
    assert count_flops(model, (T,), dtype=torch.long) == T * by_hand


def test_gpt2_decode_flops_grow_with_the_cache_and_average_exactly(guide, text):
    model, ids, context = guide.module, text.val.x[:1], 6
    steps = [decode_step_flops(model, ids, t) for t in range(context)]
    # one more cached token: Q·Kᵀ and attn·V read D more values each, in every layer
    assert [b - a for a, b in zip(steps, steps[1:])] == [2 * D * LAYERS] * (context - 1)
    flops = decode_flops(model, context, ids)
    assert (flops.first, flops.last, flops.context) == (steps[0], steps[-1], context)
    assert flops.last > flops.first
    assert 2 * sum(steps) == context * (flops.first + flops.last)  # the affine mean, exactly
    assert flops.per_token == sum(steps) / context


def test_decode_latency(guide, text):
    model = guide.module
    threads = torch.get_num_threads()
    result = decode_latency(model, 8, text.val.x[:1], warmup=1, repeats=3, threads=1)
    assert result.threads == 1 and result.repeats == 3 and result.context == 8 and result.device == "cpu"
    assert 0 < result.per_token_ms <= result.p90_ms and math.isfinite(result.p90_ms)
    assert torch.get_num_threads() == threads
    lstm = lstm_model(8).train()
    assert decode_latency(lstm, 4, text.val.x[:1], warmup=0, repeats=2).per_token_ms > 0
    assert lstm.training  # the mode is restored


def test_bad_decoding_inputs(guide, text):
    ids = text.val.x[:1]
    with pytest.raises(UserError, match="at least 1 token"):
        decode_flops(guide.module, 0, ids)
    with pytest.raises(UserError, match=r"T >= context = 17"):
        decode_flops(guide.module, T + 1, ids)
    decoder = IncrementalDecoder(guide.module)
    state = decoder.prefill(ids)
    with pytest.raises(UserError, match="embedding has 16 positions; cannot decode token 17"):
        decoder.step(ids[:, 0], state)
