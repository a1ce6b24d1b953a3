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


def test_a_timed_block_is_as_many_calls_as_last_block_ms(monkeypatch):
    from nas_theseus.measure import latency as latency_module

    clock = [0.0]
    monkeypatch.setattr(latency_module.time, "perf_counter", lambda: clock[0])
    model = _Clocked(clock, [2.0] * 40, warmup=2)  # warm-up calls take 1000 ms, timed ones 2 ms
    lat = measure_latency(model, (8,), repeats=4, warmup=2, threads=1, block_ms=5000)
    assert model.calls == 2 + 4 * 5 and lat.median_ms == pytest.approx(2.0)  # sized by the warm-up calls


def test_one_slow_warm_up_call_does_not_shorten_the_blocks(monkeypatch):
    """Sized by the fastest warm-up call: one slowed by the machine (here the last) would make every block
    shorter than block_ms, and the figure noisier than the study asked for."""
    from nas_theseus.measure import latency as latency_module

    clock = [0.0]
    monkeypatch.setattr(latency_module.time, "perf_counter", lambda: clock[0])
    model = _Clocked(clock, [2.0] * 40, warmup=3, warm_ms=[2.0, 2.0, 8.0])
    measure_latency(model, (8,), repeats=4, warmup=3, threads=1, block_ms=10)
    assert model.calls == 3 + 4 * 5  # 5 calls of 2 ms a block, not 2 (by the last warm-up call's 8 ms)


class _Clocked(nn.Module):
    """Each forward advances a fake clock by the next duration (ms): warm-up runs by ``warm_ms`` (1000 ms each
    by default)."""

    def __init__(self, clock, durations, warmup, warm_ms=None):
        super().__init__()
        self.clock, self.durations, self.warmup, self.calls = clock, list(durations), warmup, 0
        self.warm_ms = list(warm_ms) if warm_ms is not None else [1000.0] * warmup

    def forward(self, x):
        self.calls += 1
        ms = self.warm_ms[self.calls - 1] if self.calls <= self.warmup else self.durations[self.calls - self.warmup - 1]
        self.clock[0] += ms / 1e3
        return x


def test_latency_is_the_median_of_the_timed_runs_only(monkeypatch):
    from nas_theseus.measure import latency as latency_module

    clock = [0.0]
    monkeypatch.setattr(latency_module.time, "perf_counter", lambda: clock[0])
    durations = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]  # sorted: 1 1 2 3 3 4 5 5 6 9
    model = _Clocked(clock, durations, warmup=2)
    threads = torch.get_num_threads()
    lat = measure_latency(model, (8,), batch_size=4, repeats=len(durations), warmup=2, threads=1)
    assert model.calls == 12
    assert lat.median_ms == pytest.approx(3.5) and lat.p90_ms == pytest.approx(6.0)  # warm-up never timed
    assert (lat.batch_size, lat.device, lat.threads, lat.repeats) == (4, "cpu", 1, 10)
    assert torch.get_num_threads() == threads  # restored
