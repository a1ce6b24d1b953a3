"""Numerics: similarity losses in full float32 whatever the TF32 / autocast settings, TF32 restored after a
conversion, precision and compile in the stage keys, and fine-tuning that reads its losses once per window."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas_theseus.align import make_alignment
from nas_theseus.align.precision import _FullFloat32, full_float32, tf32_allowed
from nas_theseus.convert import Candidate, ConvertConfig, convert
from nas_theseus.targets import BlockSpec
from nas_theseus.testing import tiny_guide
from nas_theseus.training import FitConfig, fit_classifier
from nas_theseus.utils.hashing import stable_hash


@pytest.mark.parametrize("name", ["cka", "cka_unbiased", "dmnn", "mse"])
def test_the_full_float32_path_gives_the_plain_loss_and_its_gradients(name):
    """The path every loss takes on CUDA, run here on the CPU: the same value, the same gradient for the
    network's output and for the loss's own parameters (the MSE bridge)."""
    torch.manual_seed(0)
    loss = make_alignment(name, (6,), (5,))
    h, a = torch.randn(32, 6, requires_grad=True), torch.randn(32, 5)

    def grads(value):
        params = [p for p in loss.parameters()]
        return torch.autograd.grad(value, [h, *params])

    plain = loss._loss(h, a)
    exact = _FullFloat32.apply(loss._loss, h, a, *loss.parameters())
    assert torch.allclose(plain, exact, atol=1e-6)
    for g, e in zip(grads(plain), grads(exact)):
        assert torch.allclose(g, e, atol=1e-6)


def test_tf32_and_autocast_are_off_inside_and_restored_after():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        with tf32_allowed(True):
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
            with full_float32("cpu"):
                assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
                assert not torch.is_autocast_enabled("cpu")
            assert torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_a_conversion_leaves_the_processs_tf32_settings_as_it_found_them(mnist1d):
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        cfg = ConvertConfig(steps_per_stage=20, stage_stop="fixed", batch_size=32, probe_size=64,
                            finetune=FitConfig(max_epochs=1), tf32=True)
        convert(tiny_guide("conv1d"), Candidate((BlockSpec.of("mlp", width=8), None, None)), mnist1d, cfg,
                device="cpu", progress=False)
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, False)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_precision_and_compile_are_keyed_where_they_change_results():
    key = lambda cfg, device="cpu": stable_hash(cfg.stage_settings(device))  # noqa: E731
    default = ConvertConfig()
    assert key(default) == key(ConvertConfig(tf32=False))  # TF32 does nothing on the CPU
    assert key(default, "cuda") != key(default)  # ... and is on by default on CUDA
    assert key(ConvertConfig(tf32=False), "cuda") == key(default)  # fp32 on CUDA reuses fp32 stages
    assert key(ConvertConfig(autocast="bf16")) != key(default)
    assert key(ConvertConfig(autocast="bf16"), "cuda") == key(ConvertConfig(autocast="bf16"))
    assert key(ConvertConfig(compile=True)) != key(default)
    assert [ConvertConfig().precision(d) for d in ("cpu", "cuda")] == ["fp32", "tf32"]


@pytest.mark.parametrize("bad_step", [3, 60])
def test_fine_tuning_fails_on_a_non_finite_loss_with_its_step(digits, monkeypatch, bad_step):
    """The host reads training losses once per window (no sync per step on a GPU); a NaN still fails the run
    with the step it appeared at, in a full window or the last partial one."""
    monkeypatch.setattr("nas_theseus.training.SYNC_EVERY", 50)
    calls = []

    class LateNaN(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(64, 10)

        def forward(self, x):
            calls.append(1) if self.training else None
            y = self.net(x.flatten(1))
            return y * float("nan") if len(calls) > bad_step else y

    with pytest.raises(FloatingPointError, match=f"non-finite training loss at step {bad_step} "):
        fit_classifier(LateNaN(), digits, FitConfig(max_epochs=3, batch_size=16), progress=False)
