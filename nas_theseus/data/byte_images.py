"""Images held in memory as they are stored, 8 bits a pixel, and standardised a batch at a time where they are
read (the GPU when they are resident there): CIFAR-10's 50,000 training images are 150 MB of bytes, a quarter
of the float32 tensor they would be, and a batch is augmented on the device like any in-memory split."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Split


@dataclass(frozen=True)
class ByteImages(Split):
    """``x`` uint8 (N, C, H, W) and labels ``y``; rows come out as float32 ``(x / 255 − mean) / std`` per
    channel (``mean`` and ``std``: (C,) statistics of the training split, on the 0–1 scale)."""

    mean: torch.Tensor = None
    std: torch.Tensor = None

    @classmethod
    def standardised(cls, x: torch.Tensor, y: torch.Tensor, *, like: ByteImages | None = None) -> ByteImages:
        """Rows ``x``, ``y`` with ``like``'s statistics, or their own (per channel, in float64 chunks)."""
        if like is not None:
            return cls(x, y, like.mean, like.std)
        total = torch.zeros(x.shape[1], dtype=torch.float64)
        squares, n = torch.zeros_like(total), 0
        for i in range(0, len(x), 4096):
            chunk = x[i:i + 4096].double().div_(255).transpose(0, 1).flatten(1)
            total += chunk.sum(1)
            squares += chunk.square().sum(1)
            n += chunk.shape[1]
        mean = total / n
        std = ((squares - n * mean.square()) / max(n - 1, 1)).clamp_min(1e-12).sqrt()
        return cls(x, y, mean.float(), std.float().clamp_min(1e-6))

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def _rows(self, xb: torch.Tensor) -> torch.Tensor:
        """Bytes to float32, standardised, on the device they were gathered to."""
        mean = self.mean.to(xb.device).view(1, -1, 1, 1)
        std = self.std.to(xb.device).view(1, -1, 1, 1)
        return (xb.float() / 255.0 - mean) / std
