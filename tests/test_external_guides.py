"""timm and torch: guide sources, weights from files, and exports that rebuild their kept guide pieces."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from nas_theseus.convert import Candidate, ConvertConfig, convert
from nas_theseus.convert.baseline import scratch_model
from nas_theseus.errors import UserError
from nas_theseus.export import arch_document, load_exported, save_network
from nas_theseus.guides import load_guide
from nas_theseus.targets import BlockSpec
from nas_theseus.training import FitConfig

FAST = ConvertConfig(steps_per_stage=3, batch_size=32, probe_size=64, refit_every=0,
                     finetune=FitConfig(max_epochs=1, patience=1))
VIT = dict(img_size=8, patch_size=2, depth=2, embed_dim=32, num_heads=2)


def _round_trip(result, guide, data, tmp_path):
    arch = arch_document(result.model, guide_source=guide.source, sample_shape=data.sample_shape)
    save_network(tmp_path / "net", result.model, arch)
    rebuilt = load_exported(tmp_path / "net")
    x = data.test.x[:16]
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), result.model.eval()(x), atol=1e-5)


def test_timm_resnet_parts_from_feature_info_and_export(digits, tmp_path):
    guide = load_guide("timm:resnet18", digits, weights="random")
    assert guide.part_names == ["layer1", "layer2", "layer3", "layer4"]  # act1 holds no parameters
    assert guide.stem_paths == ["conv1", "bn1", "act1", "maxpool"] and guide.head_paths == ["@timm_head"]
    cand = Candidate((BlockSpec.of("conv2d", channels=8),) * 2 + (BlockSpec.of("identity"),) * 2, order=(3, 2, 1, 0))
    result = convert(guide, cand, digits, FAST, progress=False)
    _round_trip(result, guide, digits, tmp_path)


def test_timm_vit_stem_and_head_adapters_hold_only_their_weights(digits, tmp_path):
    guide = load_guide("timm:vit_tiny_patch16_224", digits, weights="random", **VIT)
    assert guide.part_names == ["blocks.0", "blocks.1"]
    assert guide.stem_paths == ["@timm_vit_stem"] and guide.head_paths == ["norm", "@timm_head"]
    assert guide.shapes[0] == (17, 32)  # 16 patches + the class token
    stem_params = {n for n, _ in guide.stem.named_parameters()}
    assert stem_params == {f"items.0.{n}" for n in ("pos_embed", "cls_token", "patch_embed.proj.weight",
                                                  "patch_embed.proj.bias")}
    result = convert(guide, Candidate((BlockSpec.of("mlp"),) * 2), digits, FAST, progress=False)
    _round_trip(result, guide, digits, tmp_path)


def test_scratch_redraws_every_guide_weight(digits):
    """Weights with no reset_parameters (a ViT's pos_embed and cls_token) are re-drawn too, and so are the
    weights of a kept part, so the from-scratch baseline inherits nothing from the guide."""
    # guide seed 1: with seed 0 the guide's first module (patch_embed.proj, left at torch's default init by
    # timm) would be drawn exactly as the scratch network's first reset under config.seed 0
    guide = load_guide("timm:vit_tiny_patch16_224", digits, weights="random", seed=1, **VIT)
    model = scratch_model(guide, Candidate((BlockSpec.of("mlp"), None)), FAST)
    guide_tensors = {n: p for n, p in guide.module.named_parameters()}
    inherited = [n for n, p in model.named_parameters() if any(
        q.shape == p.shape and torch.equal(q, p) for q in guide_tensors.values()) and p.dim() > 1]
    assert inherited == []
    assert any("pos_embed" in n for n, _ in model.named_parameters())


def test_weights_from_files(digits, tmp_path):
    trained = load_guide("timm:vit_tiny_patch16_224", digits, weights="random", seed=1, **VIT)
    state = trained.module.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": state}, tmp_path / "w.pt")
    for path in (tmp_path / "w.safetensors", tmp_path / "w.pt"):
        loaded = load_guide("timm:vit_tiny_patch16_224", digits, weights=str(path), seed=7, **VIT)
        assert loaded.identity != "" and all(torch.equal(a, b) for a, b in
                                             zip(loaded.module.state_dict().values(), state.values()))
    with pytest.raises(UserError, match="do not load into the guide"):
        load_guide("timm:vit_tiny_patch16_224", digits, weights=str(tmp_path / "w.pt"), **{**VIT, "depth": 3})
    with pytest.raises(UserError, match="no such file"):
        load_guide("timm:resnet18", digits, weights=str(tmp_path / "missing.safetensors"))


def test_pretrained_offline_is_one_clear_error(digits, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    with pytest.raises(UserError, match="could not load pretrained weights"):
        load_guide("timm:resnet18", digits, weights="pretrained")


MODEL_FILE = '''
from torch import nn


class Net(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU())
        self.mid = nn.Sequential(nn.Linear(width, width), nn.ReLU())
        self.out = nn.Linear(width, 10)

    def forward(self, x):
        return self.out(self.mid(self.body(x)))


def make_net(width=16):
    return Net(width)


def make_list():
    return [1, 2]
'''


def test_torch_source_from_a_file_trains_once_then_caches(digits, tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(MODEL_FILE)
    src = f"torch:{tmp_path / 'mymodels.py'}:make_net"
    import nas_theseus.guides.weights as weights

    calls = []
    real = weights.fit_classifier
    monkeypatch.setattr(weights, "fit_classifier", lambda *a, **k: calls.append(1) or real(*a, **k))
    kw = dict(parts=["body", "mid"], head="out", fit={"max_epochs": 2}, progress=False, width=12)
    guide = load_guide(src, digits, **kw)
    again = load_guide(src, digits, **kw)
    assert len(calls) == 1 and guide.identity == again.identity and guide.shapes[-1] == (12,)
    monkeypatch.syspath_prepend(str(tmp_path))
    by_module = load_guide("torch:mymodels:make_net", digits, weights="random", parts=["body", "mid"], head="out")
    assert by_module.part_names == ["body", "mid"]


@pytest.mark.parametrize("source, kw, message", [
    ("torch:{dir}/mymodels.py:make_nett", {"parts": ["body"]}, "did you mean 'make_net'"),
    ("torch:{dir}/mymodels.py:make_list", {"parts": ["body"]}, "not an nn.Module"),
    ("torch:{dir}/mymodels.py:make_net", {}, "needs guide.parts"),
    ("torch:{dir}/mymodels.py:make_net", {"parts": ["body", "mid"]}, "do not cover the guide"),
    ("torch:{dir}/mymodels.py:make_net", {"parts": ["bdy"], "head": "out"}, "did you mean 'body'"),
    ("torch:{dir}/mymodels.py:make_net", {"parts": ["body"], "depth": 3}, "does not take these options"),
    ("torch:nonexistent_pkg_xyz:make", {"parts": ["a"]}, "cannot import"),
    ("torhc:x:y", {}, "valid prefixes: builtin:, hf:, timm:, torch:"),
    ("timm:resnet18", {"parts": ["layer9"]}, "did you mean 'layer4'"),
])
def test_bad_guide_sources_are_one_line(digits, tmp_path, source, kw, message):
    (tmp_path / "mymodels.py").write_text(MODEL_FILE)
    with pytest.raises(UserError, match=message) as e:
        load_guide(source.format(dir=tmp_path), digits, weights="random", **kw)
    assert "\n" not in str(e.value)
