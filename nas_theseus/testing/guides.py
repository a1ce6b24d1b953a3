"""Tiny guides for fast tests: random-weight networks with every activation shape the engine must handle."""

from __future__ import annotations

import torch
from torch import nn

from ..guides import Guide


def tiny_guide(kind: str = "conv1d", seed: int = 0, num_classes: int = 10) -> Guide:
    """An untrained guide: ``conv1d`` (input (40,) -> (4,19) -> (4,10) -> (4,5)), ``conv2d`` on (1, 8, 8), or
    ``mlp`` on (12,)."""
    torch.manual_seed(seed)
    if kind == "conv1d":
        net = nn.Sequential(nn.Unflatten(1, (1, 40)),
                            nn.Sequential(nn.Conv1d(1, 4, 5, stride=2, padding=1), nn.ReLU()),
                            nn.Sequential(nn.Conv1d(4, 4, 3, stride=2, padding=1), nn.ReLU()),
                            nn.Sequential(nn.Conv1d(4, 4, 3, stride=2, padding=1), nn.ReLU()),
                            nn.Flatten(), nn.Linear(20, num_classes))
        return Guide.from_module(net, ["1", "2", "3"], sample_shape=(40,), source={"kind": "tiny", "name": kind})
    if kind == "conv2d":
        net = nn.Sequential(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()),
                            nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU()),
                            nn.Flatten(), nn.Linear(8 * 16, num_classes))
        return Guide.from_module(net, ["0", "1"], sample_shape=(1, 8, 8), source={"kind": "tiny", "name": kind})
    if kind == "mlp":
        net = nn.Sequential(nn.Sequential(nn.Linear(12, 16), nn.ReLU()), nn.Sequential(nn.Linear(16, 16), nn.ReLU()),
                            nn.Linear(16, num_classes))
        return Guide.from_module(net, ["0", "1"], sample_shape=(12,), source={"kind": "tiny", "name": kind})
    raise ValueError(f"unknown tiny guide {kind!r}")
