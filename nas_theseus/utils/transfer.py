"""Moving batches to a GPU without making the host wait for it.

A split held in memory goes to the GPU whole when it is small (:func:`resident`); otherwise each batch is
gathered on the host, pinned, and copied without blocking (:func:`upload`). A plain ``tensor.to("cuda")``
from pageable memory waits for the copy, and with it for every kernel queued before it.
"""

from __future__ import annotations

import os

import torch

RESIDENT_FRACTION = 0.125  # of the GPU's free memory a split may take to be held there whole


def resident(*tensors: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``tensors`` on ``device`` when it is a CUDA device and together they take at most
    ``NAS_THESEUS_RESIDENT_GB`` (default an eighth of the GPU's free memory), else where they are (batches are
    then moved by :func:`to_device`). All or none: rows of both are then indexed where they live."""
    device = torch.device(device)
    if device.type != "cuda" or all(t.device == device for t in tensors):
        return tensors
    env = os.environ.get("NAS_THESEUS_RESIDENT_GB")
    budget = float(env) * 2**30 if env else torch.cuda.mem_get_info(device)[0] * RESIDENT_FRACTION
    if sum(t.numel() * t.element_size() for t in tensors) > budget:
        return tensors
    return tuple(t.to(device) for t in tensors)


def upload(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; from the host to a GPU through pinned memory, without blocking."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


