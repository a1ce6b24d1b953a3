"""Guides: parts and shapes, the reproduce check, hooks, the frozen contract and the trained-guide cache."""

import pytest
import torch
from torch import nn

from nas_theseus.errors import UserError
from nas_theseus.guides import Guide, builtin_guide, guide_metrics, load_guide
from nas_theseus.testing import tiny_guide


def test_sequential_guide_derives_stem_and_head():
    g = tiny_guide("conv1d")
    assert g.part_names == ["1", "2", "3"]
    assert g.shapes == [(1, 40), (4, 19), (4, 10), (4, 5)] and g.output_shape == (10,)
    x = torch.randn(5, 40)
    acts = g.activations(x)
    assert [tuple(a.shape[1:]) for a in acts] == [*g.shapes, (10,)]
    assert torch.allclose(acts[-1], g.module(x))
    assert torch.allclose(g.run_chain(x), g.module(x))


def test_guide_is_frozen():
    g = tiny_guide("mlp")
    assert not any(p.requires_grad for p in g.module.parameters())
    assert not g.module.training


class _SkipForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.b(self.a(x)) + x)  # a residual the parts do not capture


def test_guide_that_parts_do_not_reproduce_is_refused():
    with pytest.raises(UserError, match="do not reproduce the guide's output"):
        Guide.from_module(_SkipForward(), ["a", "b"], sample_shape=(4,), head="head")


def test_unknown_part_path_is_a_user_error():
    net = nn.Module()
    net.conv1 = nn.Linear(4, 4)
    with pytest.raises(UserError, match="part path 'conv4' is not a submodule.*did you mean 'conv1'"):
        Guide.from_module(net, ["conv4"], sample_shape=(4,))


def test_sequential_parts_must_be_contiguous():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    with pytest.raises(UserError, match="skip children"):
        Guide.from_module(net, ["0", "2"], sample_shape=(4,))


def test_builtin_guide_trains_once_then_loads_from_cache(mnist1d, mnist1d_guide, _cache_dir):
    metrics = guide_metrics(mnist1d_guide)
    assert metrics["test_accuracy"] > 0.85, metrics
    files = sorted((_cache_dir / "guides").glob("mnist1d_cnn-*.safetensors"))
    assert files
    mtime = files[0].stat().st_mtime_ns
    again = load_guide("builtin:mnist1d_cnn", mnist1d, progress=False)
    assert files[0].stat().st_mtime_ns == mtime
    assert again.identity == mnist1d_guide.identity
    assert mnist1d_guide.part_names == ["conv1", "conv2", "conv3"]
    assert mnist1d_guide.shapes == [(1, 40), (25, 19), (25, 10), (25, 5)]


def test_random_guide_differs_and_is_not_cached(mnist1d, mnist1d_guide):
    rnd = load_guide("builtin:mnist1d_cnn", mnist1d, weights="random", seed=1)
    assert rnd.identity != mnist1d_guide.identity and guide_metrics(rnd) is None


def test_corrupt_cached_guide_is_retrained(digits, _cache_dir):
    g = builtin_guide("digits_cnn", digits, progress=False, fit={"max_epochs": 2})
    path = next((_cache_dir / "guides").glob(f"digits_cnn-{g.source['cache_key']}.safetensors"))
    path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable cached guide"):
        g2 = builtin_guide("digits_cnn", digits, progress=False, fit={"max_epochs": 2})
    assert g2.identity == g.identity


@pytest.mark.parametrize("source, message", [
    ("builtn:mnist1d_cnn", "did you mean 'builtin'"),
    ("mnist1d_cnn", "valid prefixes: builtin:"),
    ("builtin:mnist1d_cn", "did you mean 'mnist1d_cnn'"),
])
def test_bad_guide_sources(mnist1d, source, message):
    with pytest.raises(UserError, match=message):
        load_guide(source, mnist1d)


def test_builtin_guide_checks_its_data(digits):
    with pytest.raises(UserError, match="made for the 'mnist1d' data"):
        builtin_guide("mnist1d_cnn", digits)
