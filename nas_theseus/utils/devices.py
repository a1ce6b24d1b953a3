"""Devices: which one a run uses (``auto``: the GPU where there is one, as Lightning's ``accelerator="auto"``),
and where a module lives.

Every function that runs a module on data takes the module's own device (:func:`module_device`) rather than a
``device`` argument beside it, so a module and its batch cannot end up on different devices.
"""

from __future__ import annotations

import copy
import logging
import os
import platform

import torch
from torch import nn

from ..errors import UserError

logger = logging.getLogger(__name__)

AUTO = "auto"
_announced: set[str] = set()


def resolve_device(spec: str | torch.device | None = AUTO, *, announce: bool = False) -> str:
    """The device a run uses, as a string: ``auto`` (or None) is ``cuda`` where a CUDA GPU is visible, else
    ``cpu``; an explicit ``cuda``/``cuda:i`` that this machine lacks is refused in one line. With ``announce``,
    the choice is logged once per process (``device: cpu (auto)``, INFO; see :mod:`nas_theseus.logging`),
    so a GPU user never trains on the CPU untold."""
    text = AUTO if spec is None else str(spec)
    if text == AUTO:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        try:
            parsed = torch.device(text)
        except (RuntimeError, ValueError):
            raise UserError(f"unknown device {text!r}: use auto, cpu, cuda or cuda:i") from None
        if parsed.type == "cuda":
            if not torch.cuda.is_available():
                raise UserError(f"device {text!r} asked for, but CUDA is not available here; use --device cpu "
                                f"(or auto)")
            if parsed.index is not None and parsed.index >= torch.cuda.device_count():
                raise UserError(f"device {text!r} asked for, but this machine has {torch.cuda.device_count()} "
                                f"CUDA device(s)")
        device = text
    if announce and device not in _announced:
        _announced.add(device)
        logger.info("device: %s%s", describe_device(device), " (auto)" if text == AUTO else "")
    return device


def describe_device(device: str | torch.device) -> str:
    """``cuda:0 (NVIDIA H200)``, or ``cpu``."""
    d = canonical_device(device)
    return f"{d} ({torch.cuda.get_device_name(d)})" if d.type == "cuda" else str(d)


def canonical_device(device: str | torch.device) -> torch.device:
    """One spelling per device: ``cuda`` is the current CUDA device with its index (``cuda:0``), so caches keyed
    by device are not duplicated by ``cuda`` vs ``cuda:0``."""
    d = torch.device(device)
    if d.type == "cuda" and d.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return d


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter or buffer (the CPU for a module holding neither)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def devices_of(module: nn.Module) -> set[torch.device]:
    """Every device that ``module``'s parameters and buffers live on."""
    return {t.device for t in [*module.parameters(), *module.buffers()]}


def cpu_copy(module: nn.Module) -> nn.Module:
    """``module`` itself when it lives on the CPU, else a CPU copy of it (for what does not depend on the
    device, e.g. counting FLOPs, and must not move a module that others use)."""
    if devices_of(module) <= {torch.device("cpu")}:
        return module
    return copy.deepcopy(module).cpu()


def versions(device: str | torch.device) -> dict:
    """What a result on ``device`` was computed with: torch, Python and, on a GPU, CUDA and cuDNN."""
    out = {"torch": torch.__version__, "python": platform.python_version()}
    if torch.device(device).type == "cuda":
        out.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return out


MEMORY_FRACTION = "NAS_THESEUS_GPU_MEMORY_FRACTION"  # set by --workers for a worker that shares its GPU


def take_memory_share(device: str | torch.device) -> float | None:
    """Cap this process's share of its GPU's memory at ``$NAS_THESEUS_GPU_MEMORY_FRACTION`` (set by
    ``--workers`` for each worker that shares a GPU: 1 / the workers on it), so one worker's peak cannot starve the
    others; returns the share taken (None: not capped, or not a GPU)."""
    text = os.environ.get(MEMORY_FRACTION)
    d = torch.device(device)
    if not text or d.type != "cuda":
        return None
    share = float(text)
    torch.cuda.set_per_process_memory_fraction(share, canonical_device(d))
    return share


class GpuMemory:
    """Peak GPU memory over a span of work (a trial): the peaks are reset when it is made and read by
    :meth:`peak`, or stored on a trial by :meth:`record`. Nothing is read on the CPU (``enabled`` is False)."""

    def __init__(self, device: str | torch.device):
        self.device = canonical_device(device)
        self.enabled = self.device.type == "cuda"
        if self.enabled:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> dict:
        mb = 2**20
        return {"gpu": torch.cuda.get_device_name(self.device),
                "peak_allocated_mb": round(torch.cuda.max_memory_allocated(self.device) / mb, 1),
                "peak_reserved_mb": round(torch.cuda.max_memory_reserved(self.device) / mb, 1)}

    def record(self, trial) -> None:
        """The peaks as the trial's ``gpu_memory`` attribute (on a GPU only)."""
        if self.enabled:
            trial.set_user_attr("gpu_memory", self.peak())
