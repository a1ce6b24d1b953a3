"""Latency of one forward pass, measured the way a deployment would see it.

Warm-up runs first, then ``repeats`` timed blocks under ``torch.inference_mode``; on CUDA every block is
synchronised before the clock stops. A block is as many calls as last at least ``block_ms`` (default
``BLOCK_MS``, 2 ms; one call for anything slower) by the fastest warm-up call, so a network of a few
microseconds is not timed at the resolution of the clock; longer blocks average over more of the machine's
hiccups. The figure
is the **median** per-call time in milliseconds, for ``batch_size`` samples, on the given device with the
given number of CPU threads (recorded with the figure), in the given ``runtime`` (``eager`` PyTorch,
``compile``, ``onnxruntime``: :mod:`nas_theseus.measure.runtimes`). Inputs are standard-normal samples of
``sample_shape``, or rows of ``example`` (token ids for a language model).

With a ``reference`` (a prepared runner of another network, e.g. the study's guide), every block of the
network is followed by a block of the reference and the figure also holds the median ratio of the two
(``relative``): the machine's slow and fast moments cancel out of a ratio taken side by side. On a shared
2-core VM, absolute figures of the default study's MLPs moved 10-50 % between measurements a few seconds
apart, their ratios to the guide 1-10 % with 2 ms blocks and at most 5 % with 200 blocks of 10 ms
(``benchmarks/latency_stability.py``).
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import UserError
from ..utils.devices import canonical_device, devices_of
from .runtimes import get_runtime

BLOCK_MS = 2.0  # the shortest timed block, ms, by default


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p90_ms: float
    batch_size: int
    device: str
    threads: int
    repeats: int
    runtime: str = "eager"
    prepared: dict = field(default_factory=dict)  # what preparing the runtime took (compile_s, export_s)
    relative: float | None = None  # median of (this network ÷ the reference), timed side by side
    reference_ms: float | None = None  # the reference's median during this measurement


def example_input(sample_shape, batch_size: int, *, device, dtype=torch.float32, example=None) -> torch.Tensor:
    if example is None:
        return torch.randn((batch_size, *sample_shape), dtype=dtype, device=device)
    return example[torch.arange(batch_size) % len(example)].to(device)


def prepare(model: nn.Module, x: torch.Tensor, *, runtime: str = "eager", threads: int | None = None,
            device: str | torch.device = "cpu") -> tuple[Callable[[], object], dict]:
    """A runner of ``model`` on ``x`` in ``runtime`` on ``device`` (and what preparing it recorded), in eval
    mode; a model that lives on another device is timed as a copy there and stays where it is."""
    device = canonical_device(device)
    rt = get_runtime(runtime)
    if rt.cpu_only and device.type != "cpu":
        raise UserError(f"latency runtime {runtime!r} runs on the CPU only; use 'eager' or 'compile' on {device}")
    if devices_of(model) - {device}:
        model = copy.deepcopy(model).to(device)
    model.eval()
    return rt.prepare(model, x.to(device), threads or torch.get_num_threads())


class Runners:
    """A network's runners (:func:`prepare`), each made once per (runtime, input shape, device, threads): an ONNX
    export or a compile is paid once, however many networks are timed beside it. ``network()`` gives the
    network, when the first runner is made."""

    def __init__(self, network: Callable[[], nn.Module]):
        self.network, self.made = network, {}

    def __call__(self, runtime: str, x: torch.Tensor, threads: int) -> Callable[[], object]:
        key = (runtime, tuple(x.shape), str(x.device), threads)
        if key not in self.made:
            self.made[key] = prepare(self.network(), x, runtime=runtime, threads=threads, device=x.device)[0]
        return self.made[key]


def measure_latency(model: nn.Module, sample_shape: tuple[int, ...], *, batch_size: int = 1,
                    device: str | torch.device = "cpu", warmup: int = 10, repeats: int = 50,
                    threads: int | None = None, dtype: torch.dtype = torch.float32,
                    example: torch.Tensor | None = None, runtime: str = "eager",
                    reference: Callable[[], object] | None = None, block_ms: float = BLOCK_MS) -> Latency:
    device = torch.device(device)
    was = model.training
    x = example_input(sample_shape, batch_size, device=device, dtype=dtype, example=example)
    try:
        run, prepared = prepare(model, x, runtime=runtime, threads=threads, device=device)
        if reference is None:
            times, used = timed_runs(run, device=device, warmup=warmup, repeats=repeats, threads=threads,
                                     block_ms=block_ms)
            relative = reference_ms = None
        else:
            (times, ref_times), used = timed_side_by_side([run, reference], device=device, warmup=warmup,
                                                          repeats=repeats, threads=threads, block_ms=block_ms)
            relative = statistics.median(a / b for a, b in zip(times, ref_times))
            reference_ms = statistics.median(ref_times)
    finally:
        model.train(was)
    times = sorted(times)
    return Latency(statistics.median(times), p90(times), batch_size, str(device), used, repeats, runtime, prepared,
                   relative, reference_ms)


def timed_runs(run: Callable[[], object], *, device: torch.device, warmup: int, repeats: int,
               threads: int | None = None, block_ms: float = BLOCK_MS) -> tuple[list[float], int]:
    """``run()`` ``warmup`` times, then ``repeats`` timed blocks (see the module docs). Returns the sorted
    per-call times in ms and the thread count used."""
    (times,), used = timed_side_by_side([run], device=device, warmup=warmup, repeats=repeats, threads=threads,
                                        block_ms=block_ms)
    return sorted(times), used


def timed_side_by_side(runs: list[Callable[[], object]], *, device: torch.device, warmup: int, repeats: int,
                       threads: int | None = None, block_ms: float = BLOCK_MS) -> tuple[list[list[float]], int]:
    """Each of ``runs`` warmed up, then ``repeats`` rounds of one timed block of each in turn, under
    ``torch.inference_mode`` with ``threads`` CPU threads (restored after), synchronised on CUDA. Returns the
    per-call times in ms of every run, round by round (unsorted: ``[i][k]`` is run i in round k), and the
    thread count used."""
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)  # this GPU
    times: list[list[float]] = [[] for _ in runs]
    try:
        with torch.inference_mode():
            calls = []
            for run in runs:
                fastest = float("inf")  # not the last call: one slowed by the machine would shorten every block
                for _ in range(warmup):
                    t0 = time.perf_counter()
                    run()
                    sync()
                    fastest = min(fastest, (time.perf_counter() - t0) * 1e3)
                calls.append(max(1, math.ceil(block_ms / fastest)) if fastest > 0 else 1)
            for _ in range(repeats):
                for run, n, out in zip(runs, calls, times):
                    t0 = time.perf_counter()
                    for _ in range(n):
                        run()
                    sync()
                    out.append((time.perf_counter() - t0) * 1e3 / n)
    finally:
        used = torch.get_num_threads()
        torch.set_num_threads(old_threads)
    return times, used


def p90(sorted_times: list[float]) -> float:
    return sorted_times[int(0.9 * (len(sorted_times) - 1))]
