"""The built-in target blocks: MLP, 1-D / 2-D conv, depthwise-separable conv, low-rank linear, identity.

Each is one registered class; its ``Options`` fields are the spec's options and their defaults, and
``examples`` lists option sets the contract tests (:mod:`nas_theseus.testing`) build and run.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import UserError
from .layers import Reshape, activation, channel_norm, check_norm, numel, vector_norm
from .registry import register_block


@register_block("mlp")
class MLPBlock:
    """Flatten, then ``depth`` x (Linear -> norm -> activation).

    ``width=None`` makes the block output the replaced part's size, reshaped to its shape; an integer width
    outputs a (width,) vector. Input: any shape (flattened).
    """

    @dataclass(frozen=True)
    class Options:
        width: int | None = None
        depth: int = 1
        activation: str = "relu"
        norm: str | None = None
        dropout: float = 0.0

    examples = ({"width": 32}, {"width": 16, "depth": 2, "norm": "batch", "activation": "gelu"},
                {"norm": "layer", "dropout": 0.1})

    @staticmethod
    def check(o: Options) -> None:
        if o.width is not None and o.width < 1 or o.depth < 1 or not 0.0 <= o.dropout < 1.0:
            raise UserError(f"mlp needs width >= 1, depth >= 1 and 0 <= dropout < 1, got {o}")
        check_norm(o.norm)
        activation(o.activation)

    @staticmethod
    def build(o: Options, in_shape, guide_out_shape) -> nn.Module:
        width = o.width or numel(guide_out_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        d_in = numel(in_shape)
        for _ in range(o.depth):
            layers += [nn.Linear(d_in, width), *vector_norm(o.norm, width), activation(o.activation)]
            if o.dropout:
                layers.append(nn.Dropout(o.dropout))
            d_in = width
        if o.width is None and len(guide_out_shape) > 1:
            layers.append(Reshape(guide_out_shape))
        return nn.Sequential(*layers)


class _ConvBlock:
    dims = 1
    examples = ({"channels": 8}, {"channels": 4, "kernel": 5, "stride": 2, "depth": 2, "norm": "batch"},
                {"norm": "layer"})

    @dataclass(frozen=True)
    class Options:
        channels: int | None = None
        kernel: int = 3
        stride: int = 1
        depth: int = 1
        activation: str = "relu"
        norm: str | None = None

    @staticmethod
    def check(o: Options) -> None:
        if (o.channels is not None and o.channels < 1) or o.kernel < 1 or o.stride < 1 or o.depth < 1:
            raise UserError(f"conv needs channels, kernel, stride, depth >= 1, got {o}")
        check_norm(o.norm)
        activation(o.activation)

    @classmethod
    def build(cls, o: Options, in_shape, guide_out_shape) -> nn.Module:
        if len(in_shape) != cls.dims + 1:
            want = "(C, L)" if cls.dims == 1 else "(C, H, W)"
            raise UserError(f"{cls.kind} reads {want} inputs, but this part's input has shape {tuple(in_shape)}")
        channels = o.channels or (guide_out_shape[0] if len(guide_out_shape) == cls.dims + 1 else in_shape[0])
        layers: list[nn.Module] = []
        c_in = in_shape[0]
        for i in range(o.depth):
            layers += [*cls.convs(c_in, channels, o.kernel, o.stride if i == 0 else 1),
                       *channel_norm(o.norm, channels, cls.dims), activation(o.activation)]
            c_in = channels
        return nn.Sequential(*layers)

    @classmethod
    def convs(cls, c_in: int, c_out: int, kernel: int, stride: int) -> list[nn.Module]:
        """One layer's convolutions: a full convolution."""
        conv = nn.Conv1d if cls.dims == 1 else nn.Conv2d
        return [conv(c_in, c_out, kernel, stride=stride, padding=kernel // 2)]


@register_block("conv1d")
class Conv1dBlock(_ConvBlock):
    """``depth`` x (Conv1d -> norm -> activation) on (C, L); the first conv has the stride, padding k//2.

    ``channels=None`` uses the replaced part's output channels.
    """

    dims = 1


@register_block("conv2d")
class Conv2dBlock(_ConvBlock):
    """``depth`` x (Conv2d -> norm -> activation) on (C, H, W); the first conv has the stride, padding k//2."""

    dims = 2


class _SeparableConvBlock(_ConvBlock):
    @classmethod
    def convs(cls, c_in: int, c_out: int, kernel: int, stride: int) -> list[nn.Module]:
        """A depthwise convolution (one filter per input channel, with the stride) then a pointwise 1x1 one."""
        conv = nn.Conv1d if cls.dims == 1 else nn.Conv2d
        return [conv(c_in, c_in, kernel, stride=stride, padding=kernel // 2, groups=c_in, bias=False),
                conv(c_in, c_out, 1)]


@register_block("sepconv1d")
class SeparableConv1dBlock(_SeparableConvBlock):
    """``depth`` x (depthwise Conv1d -> pointwise Conv1d -> norm -> activation) on (C, L): a conv1d's receptive
    field at about 1/kernel + 1/channels of its multiply-adds (MobileNet's factorisation)."""

    dims = 1


@register_block("sepconv2d")
class SeparableConv2dBlock(_SeparableConvBlock):
    """``depth`` x (depthwise Conv2d -> pointwise Conv2d -> norm -> activation) on (C, H, W)."""

    dims = 2


@register_block("lowrank")
class LowRankBlock:
    """Flatten -> Linear(in, rank, no bias) -> Linear(rank, out) [-> activation], reshaped to the part's shape."""

    @dataclass(frozen=True)
    class Options:
        rank: int = 16
        activation: str = "identity"

    examples = ({"rank": 4}, {"rank": 2, "activation": "relu"})

    @staticmethod
    def check(o: Options) -> None:
        if o.rank < 1:
            raise UserError(f"lowrank needs rank >= 1, got {o.rank}")
        activation(o.activation)

    @staticmethod
    def build(o: Options, in_shape, guide_out_shape) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(numel(in_shape), o.rank, bias=False),
                             nn.Linear(o.rank, numel(guide_out_shape)), activation(o.activation),
                             Reshape(guide_out_shape))


@register_block("identity")
class IdentityBlock:
    """Drop the part: the output is the input (no parameters, no FLOPs)."""

    @dataclass(frozen=True)
    class Options:
        pass

    @staticmethod
    def build(o: Options, in_shape, guide_out_shape) -> nn.Module:
        return nn.Identity()
