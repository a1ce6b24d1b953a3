"""The engine on sequences: token-wise bridges and heads, token-row similarity, and causal hybrids at every stage."""

from __future__ import annotations

import pytest
import torch

from nas_theseus.align import linear_cka, make_alignment
from nas_theseus.convert import Candidate, ConvertConfig, Hybrid, convert, train_from_scratch
from nas_theseus.convert.baseline import scratch_model
from nas_theseus.data import load_data
from nas_theseus.errors import UserError
from nas_theseus.export import arch_document, build_network
from nas_theseus.guides import load_guide
from nas_theseus.measure import IncrementalDecoder
from nas_theseus.targets import BlockSpec, TokenwiseBridge, make_bridge
from nas_theseus.testing import check_causal_model
from nas_theseus.training import FitConfig

T = 16


@pytest.fixture(scope="module")
def text():
    return load_data("text", context=T, max_bytes=30_000)


@pytest.fixture(scope="module")
def guide(text):
    return load_guide("hf:gpt2", text, weights="random", n_embd=16, n_layer=3, n_head=2)


def fast(**kw):
    return ConvertConfig(**{"steps_per_stage": 6, "batch_size": 8, "probe_size": 64, "refit_every": 3,
                            "finetune": FitConfig(max_epochs=1, patience=1, batch_size=64), **kw})


@pytest.mark.parametrize("kind", ["lowrank", "stitch"])
def test_tokenwise_bridge_maps_each_position_alone(kind):
    torch.manual_seed(0)
    bridge = make_bridge(kind, (T, 6), (T, 4), tokenwise=True)
    assert isinstance(bridge, TokenwiseBridge) and bridge.tokenwise
    x, y = torch.randn(64, T, 6), torch.randn(64, T, 4)
    bridge.fit(x, y)
    bridge.train()  # the stitch BatchNorms must keep their fitted statistics even in training mode
    out = bridge(x[:3])
    assert out.shape == (3, T, 4)
    one_at_a_time = torch.stack([bridge(x[:3, t:t + 1])[:, 0] for t in range(T)], 1)
    assert torch.allclose(out, one_at_a_time, atol=1e-6)
    with pytest.raises(UserError, match="token-wise bridge"):
        make_bridge(kind, (T, 6), (T + 1, 4), tokenwise=True)


def test_feature_space_cka_equals_the_gram_form():
    x, y = torch.randn(300, 5).double(), torch.randn(300, 7).double() + 0.3 * torch.randn(300, 1).double()
    y[:, :5] += x
    xc, yc = x - x.mean(0), y - y.mean(0)
    k, l = xc @ xc.T, yc @ yc.T
    gram = (k * l).sum() / torch.sqrt((k * k).sum() * (l * l).sum())
    assert torch.allclose(linear_cka(x, y), gram, atol=1e-10)


def test_token_alignment_compares_token_rows():
    h, a = torch.randn(4, T, 6), torch.randn(4, T, 6)
    loss = make_alignment("cka", (T, 6), (T, 6), tokens=True)
    assert torch.allclose(loss(h, a), 1 - linear_cka(h.reshape(-1, 6), a.reshape(-1, 6)))
    for name in ("dmnn", "cka_unbiased", "mse"):
        value = make_alignment(name, (T, 6), (T, 6), tokens=True)(h, a)
        assert torch.isfinite(value)


@pytest.mark.parametrize("schedule,head,bridge", [("progressive", "linear", "lowrank"),
                                                  ("independent", "guide", "stitch"),
                                                  ("joint", "linear", "stitch")])
def test_every_hybrid_and_the_deploy_network_are_causal(text, guide, schedule, head, bridge):
    blocks = (BlockSpec.of("lstm", hidden=12), None, BlockSpec.of("causal_attention", heads=2, dim=8))
    candidate = Candidate(blocks, order=(2, 0, 1), head=head)
    ids = text.val.x[:3]
    seen = []

    def on_stage(report, hybrid):
        check_causal_model(hybrid, ids, 256, f"hybrid after stage {report.index + 1}")
        seen.append(report.index)

    result = convert(guide, candidate, text, fast(schedule=schedule, bridge=bridge), progress=False,
                     on_stage=on_stage)
    assert seen == list(range(1 if schedule == "joint" else 2))
    check_causal_model(result.model, ids, 256, "deploy network")
    logits = result.model(ids)
    assert logits.shape == (3, T, 256) and torch.isfinite(logits).all()
    decoder = IncrementalDecoder(result.model)  # token-wise bridges and heads decode step by step
    state = decoder.init_state(3)
    for t in range(T):
        step, state = decoder.step(ids[:, t], state)
        torch.testing.assert_close(step, logits[:, t], atol=1e-5, rtol=0)
    assert all(0 <= v <= 1 + 1e-6 for s in result.stages for v in s.alignment.values())
    arch = arch_document(result.model, guide_source=guide.source, sample_shape=text.sample_shape)
    rebuilt = build_network(arch)
    rebuilt.load_state_dict(result.model.state_dict())
    rebuilt.eval()
    assert torch.allclose(rebuilt(ids), result.model.eval()(ids), atol=1e-6)


def test_a_causal_guide_refuses_blocks_that_mix_positions(text, guide):
    for spec in (BlockSpec.of("mlp", width=32), BlockSpec.of("tokenwise_mlp", token_mixing=True)):
        with pytest.raises(UserError, match="mixes positions"):
            convert(guide, Candidate((spec, None, None)), text, fast(), progress=False)
    ok = Candidate((BlockSpec.of("tokenwise_mlp", hidden=8), None, None))
    assert convert(guide, ok, text, fast(), progress=False).model is not None


def test_scratch_language_model_is_causal_and_inherits_no_guide_weight(text, guide):
    candidate = Candidate((BlockSpec.of("gru", hidden=8), None, BlockSpec.of("lstm", hidden=8)))
    result = train_from_scratch(guide, candidate, text, fast(), progress=False)
    check_causal_model(result.model, text.val.x[:3], 256, "scratch network")
    model = scratch_model(guide, candidate, fast())  # the kept GPT-2 block's Conv1D weights are re-drawn too
    inherited = [n for n, p in model.named_parameters()
                 if any(q.shape == p.shape and torch.equal(q, p) for q in guide.module.parameters()) and p.dim() > 1]
    assert inherited == []


def test_stitching_penalty_on_a_language_model_uses_tokenwise_stitches(text, guide):
    from nas_theseus.convert import stitching_penalty

    candidate = Candidate((BlockSpec.of("gru", hidden=8), BlockSpec.of("lstm"), None))
    result = convert(guide, candidate, text, fast(), progress=False)
    reports = stitching_penalty(result.model, guide, text, fit=FitConfig(max_epochs=1, batch_size=64),
                                progress=False, probe_size=64)
    assert [r.part for r in reports] == guide.part_names
    assert all(0 <= r.stitched_accuracy <= 1 for r in reports)


@pytest.mark.parametrize("schedule", ["progressive", "independent"])
def test_a_relearned_embedding_trains_from_fresh_weights_and_exports(text, guide, schedule, tmp_path):
    blocks = (BlockSpec.of("lstm", hidden=12), BlockSpec.of("gru", hidden=8), None)
    candidate = Candidate(blocks, order=(1, 0), head="guide", stem="relearn")
    guide_wte = guide.stem.wte.weight.detach().clone()
    first = convert(guide, candidate, text, fast(schedule=schedule), progress=False, checkpoint_dir=tmp_path)
    wte = first.model.stem.wte.weight.detach()
    assert not torch.allclose(wte, guide_wte)  # fresh weights, not the guide's ...
    torch.testing.assert_close(guide.stem.wte.weight, guide_wte, atol=0, rtol=0)  # ... which stay untouched
    untrained = Hybrid(guide, candidate, fast(schedule=schedule)).new_stem.wte.weight.detach()
    assert not torch.allclose(wte, untrained)  # ... and trained
    check_causal_model(first.model, text.val.x[:3], 256, "deploy network with a relearned embedding")
    arch = arch_document(first.model, guide_source=guide.source, sample_shape=text.sample_shape)
    assert arch["children"][0]["relearned"] is True
    rebuilt = build_network(arch)
    rebuilt.load_state_dict(first.model.state_dict())
    ids = text.val.x[:3]
    assert torch.allclose(rebuilt.eval()(ids), first.model.eval()(ids), atol=1e-6)
    again = convert(guide, candidate, text, fast(schedule=schedule), progress=False, checkpoint_dir=tmp_path)
    assert all(s.resumed for s in again.stages)  # the relearned stem is in every stage checkpoint
    torch.testing.assert_close(again.model.stem.wte.weight, wte, atol=0, rtol=0)
    kept_stem = convert(guide, Candidate(blocks, order=(1, 0), head="guide"), text, fast(schedule=schedule),
                        progress=False, checkpoint_dir=tmp_path)
    assert not any(s.resumed for s in kept_stem.stages)  # a different candidate: no checkpoint shared


def test_relearn_needs_the_first_part_swapped_and_names_are_checked():
    with pytest.raises(UserError, match="first part swapped"):
        Candidate((None, BlockSpec.of("lstm")), stem="relearn")
    with pytest.raises(UserError, match="did you mean 'relearn'"):
        Candidate((BlockSpec.of("lstm"),), stem="relern")
    c = Candidate((BlockSpec.of("lstm"),), stem="relearn")
    assert Candidate.from_dict(c.to_dict()) == c
    assert "stem" not in Candidate((BlockSpec.of("lstm"),)).to_dict()  # the default keeps earlier content keys
