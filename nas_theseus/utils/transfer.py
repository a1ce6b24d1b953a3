"""Moving batches to a GPU without making the host wait for it.

A split held in memory goes to the GPU whole when it is small (:func:`resident`); otherwise each batch is
gathered on the host, pinned, and copied without blocking (:func:`to_device`). A plain ``tensor.to("cuda")``
from pageable memory waits for the copy, and with it for every kernel queued before it.
"""

from __future__ import annotations

import os

import torch

RESIDENT_FRACTION = 0.125  # of the GPU's free memory a split may take to be held there whole


def resident(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device`` when it is a CUDA device and ``t`` takes at most ``NAS_THESEUS_RESIDENT_GB`` (default
    an eighth of the GPU's free memory), else ``t`` where it is (batches are then moved by :func:`to_device`)."""
    device = torch.device(device)
    if device.type != "cuda" or t.device == device:
        return t
    env = os.environ.get("NAS_THESEUS_RESIDENT_GB")
    budget = float(env) * 2**30 if env else torch.cuda.mem_get_info(device)[0] * RESIDENT_FRACTION
    return t.to(device) if t.numel() * t.element_size() <= budget else t


def to_device(t: torch.Tensor, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Rows ``idx`` of ``t`` on ``device``: gathered where ``t`` lives; from the host to a GPU through pinned
    memory without blocking."""
    device = torch.device(device)
    rows = t[idx.to(t.device)]
    if rows.device == device:
        return rows
    if device.type == "cuda" and rows.device.type == "cpu":
        return rows.pin_memory().to(device, non_blocking=True)
    return rows.to(device)
