"""FLOPs by hand, no silent zeros, and latency records what it measured on."""

import pytest
import torch
from torch import nn

from nas_theseus.measure import UncountedOpsError, count_flops, count_params, measure_latency


def test_flops_of_an_mlp_by_hand():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(40, 16), nn.ReLU(), nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 10))
    assert count_flops(mlp, (1, 40)) == 40 * 16 + 16 * 16 + 16 * 10
    assert count_params(mlp) == (40 * 16 + 16) + (16 * 16 + 16) + (16 * 10 + 10)


def test_flops_of_the_guide_cnn_by_hand():
    from nas_theseus.guides.builtin import MNIST1DCNN

    c = 25
    expected = c * 19 * 5 + c * 10 * (3 * c) + c * 5 * (3 * c) + 125 * 10
    assert count_flops(MNIST1DCNN(), (40,)) == expected


class _FFT(nn.Module):
    def forward(self, x):
        return torch.fft.rfft(x).abs()


def test_unknown_op_is_never_a_silent_zero():
    with pytest.raises(UncountedOpsError, match="aten::fft_rfft"):
        count_flops(_FFT(), (16,))
    with pytest.warns(UserWarning, match="aten::fft_rfft"):
        count_flops(_FFT(), (16,), strict=False)


def test_latency_reports_median_and_settings():
    lat = measure_latency(nn.Linear(8, 8), (8,), batch_size=4, repeats=7, warmup=2, threads=1)
    assert lat.median_ms > 0 and lat.p90_ms >= lat.median_ms
    assert (lat.batch_size, lat.device, lat.threads, lat.repeats) == (4, "cpu", 1, 7)
