"""Small layer helpers shared by the blocks: activations and norms by name, flatten / reshape."""

from __future__ import annotations

import math

from torch import nn

from ..utils.registry import Registry

ACTIVATIONS = Registry("activation", {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU,
                                       "identity": nn.Identity})


class _BatchNorm:
    vector = staticmethod(nn.BatchNorm1d)

    @staticmethod
    def channel(channels: int, dims: int) -> nn.Module:
        return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(channels)


class _LayerNorm:
    vector = staticmethod(nn.LayerNorm)

    @staticmethod
    def channel(channels: int, dims: int) -> nn.Module:
        return nn.GroupNorm(1, channels)  # normalises over channels and positions, as LayerNorm over features


NORMS: Registry = Registry("norm", {"batch": _BatchNorm, "layer": _LayerNorm})


def activation(name: str) -> nn.Module:
    return ACTIVATIONS.lookup(name)()


def check_norm(norm: str | None) -> None:
    if norm is not None:
        NORMS.lookup(norm)


def vector_norm(norm: str | None, width: int) -> list[nn.Module]:
    """The norm layer for (B, width) features, as a list (empty for no norm) to splice into a Sequential."""
    return [] if norm is None else [NORMS.lookup(norm).vector(width)]


def channel_norm(norm: str | None, channels: int, dims: int) -> list[nn.Module]:
    """The norm layer for (B, C, *spatial) features, as a list (empty for no norm)."""
    return [] if norm is None else [NORMS.lookup(norm).channel(channels, dims)]


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
