"""The memory figures the steps record: peak GPU memory on CUDA, the process's resident memory on the CPU."""

from __future__ import annotations

import os

import torch


def peak_memory(device) -> dict:
    if torch.device(device).type != "cuda":
        return {"peak_rss_mb": round(rss_mb(), 1)}
    mb = 2**20
    return {"peak_allocated_mb": round(torch.cuda.max_memory_allocated(device) / mb, 1),
            "peak_reserved_mb": round(torch.cuda.max_memory_reserved(device) / mb, 1)}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
