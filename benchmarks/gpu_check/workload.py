"""What most steps convert: learnable synthetic 32-px images and a timm ResNet-18 guide over them."""

from __future__ import annotations

import torch

from nas_theseus.data.base import Split, TaskData
from nas_theseus.guides import load_guide


def prototypes(n_train: int, n_eval: int | None = None, noise: float = 1.5) -> TaskData:
    """Learnable 3×32×32 images: 10 random class prototypes plus per-sample noise."""
    n_eval = n_eval or max(64, n_train // 10)
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(10, 3, 32, 32, generator=g)

    def split(n):
        y = torch.randint(0, 10, (n,), generator=g)
        return Split(protos[y] + noise * torch.randn(n, 3, 32, 32, generator=g), y)

    return TaskData(f"prototypes32-{n_train}", split(n_train), split(n_eval), split(n_eval), 10)


def resnet(data: TaskData, *, epochs: int = 0, device: str = "cpu"):
    """A timm ResNet-18 guide at 32 px: random weights, or trained for ``epochs`` on ``data`` (cached)."""
    if epochs == 0:
        return load_guide("timm:resnet18", data, weights="random", progress=False)
    return load_guide("timm:resnet18", data, device=device, progress=False,
                      fit={"max_epochs": epochs, "patience": epochs, "lr": 1e-3, "batch_size": 256})
