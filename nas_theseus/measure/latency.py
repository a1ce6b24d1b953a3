"""Latency of one forward pass, measured the way a deployment would see it.

Warm-up runs first, then ``repeats`` timed runs under ``torch.inference_mode``; on CUDA every run is
synchronised before the clock stops. The figure is the **median** in milliseconds, for ``batch_size``
samples, on the given device with the given number of CPU threads (recorded with the figure). Inputs are
standard-normal samples of ``sample_shape``, or rows of ``example`` (token ids for a language model).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p90_ms: float
    batch_size: int
    device: str
    threads: int
    repeats: int


def measure_latency(model: nn.Module, sample_shape: tuple[int, ...], *, batch_size: int = 1,
                    device: str | torch.device = "cpu", warmup: int = 10, repeats: int = 50,
                    threads: int | None = None, dtype: torch.dtype = torch.float32,
                    example: torch.Tensor | None = None) -> Latency:
    device = torch.device(device)
    was = model.training
    model.eval().to(device)
    if example is None:
        x = torch.randn((batch_size, *sample_shape), dtype=dtype, device=device)
    else:
        x = example[torch.arange(batch_size) % len(example)].to(device)
    try:
        times, used = timed_runs(lambda: model(x), device=device, warmup=warmup, repeats=repeats, threads=threads)
    finally:
        model.train(was)
    return Latency(statistics.median(times), p90(times), batch_size, str(device), used, repeats)


def timed_runs(run: Callable[[], object], *, device: torch.device, warmup: int, repeats: int,
               threads: int | None = None) -> tuple[list[float], int]:
    """``run()`` ``warmup`` times, then ``repeats`` timed calls under ``torch.inference_mode`` with
    ``threads`` CPU threads (restored after), each synchronised on CUDA. Returns the sorted times in ms and the
    thread count used."""
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)  # this GPU
    times = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                run()
            sync()
            for _ in range(repeats):
                t0 = time.perf_counter()
                run()
                sync()
                times.append((time.perf_counter() - t0) * 1e3)
    finally:
        used = torch.get_num_threads()
        torch.set_num_threads(old_threads)
    return sorted(times), used


def p90(sorted_times: list[float]) -> float:
    return sorted_times[int(0.9 * (len(sorted_times) - 1))]
