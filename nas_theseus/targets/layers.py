"""Small layer helpers shared by the blocks: activations and norms by name, flatten / reshape."""

from __future__ import annotations

import math

from torch import nn

from ..errors import unknown_name
from ..utils.registry import Registry

ACTIVATIONS = Registry("activation", {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU,
                                       "identity": nn.Identity})
NORMS = ("batch", "layer")


def activation(name: str) -> nn.Module:
    return ACTIVATIONS.lookup(name)()


def check_norm(norm: str | None) -> None:
    if norm is not None and norm not in NORMS:
        raise unknown_name("norm", norm, NORMS)


def vector_norm(norm: str | None, width: int) -> list[nn.Module]:
    """The norm layer for (B, width) features, as a list (empty for no norm) to splice into a Sequential."""
    if norm == "batch":
        return [nn.BatchNorm1d(width)]
    if norm == "layer":
        return [nn.LayerNorm(width)]
    return []


def channel_norm(norm: str | None, channels: int, dims: int) -> list[nn.Module]:
    """The norm layer for (B, C, *spatial) features, as a list (empty for no norm)."""
    if norm == "batch":
        return [(nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(channels)]
    if norm == "layer":
        return [nn.GroupNorm(1, channels)]
    return []


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


class Reshape(nn.Module):
    """(B, prod(shape)) -> (B, *shape)."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"
