"""Target blocks for image parts (timm CNN guides): the ResNet bottleneck."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from ..errors import UserError
from .registry import register_block


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    """Conv2d (no bias, padding kernel // 2) -> BatchNorm2d, as a list to splice into a Sequential."""
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out)]


def matching_stride(in_shape, guide_out_shape) -> int:
    """The smallest stride s with ceil(H / s), ceil(W / s) equal to the part's output (H', W'), else 1.

    ceil(H / s) is the output size of a 3x3 conv with padding 1 and stride s.
    """
    if len(guide_out_shape) != 3:
        return 1
    (h, w), (h_out, w_out) = in_shape[1:], guide_out_shape[1:]
    return next((s for s in range(1, max(h, w) + 1) if (math.ceil(h / s), math.ceil(w / s)) == (h_out, w_out)), 1)


class Bottleneck(nn.Module):
    """ReLU(body(x) + shortcut(x)); body = 1x1 reduce -> 3x3 (stride) -> 1x1 expand, each conv -> BatchNorm,
    ReLU after the first two. The shortcut is 1x1 conv (stride) -> BatchNorm when the shape changes, else x.
    """

    def __init__(self, c_in: int, channels: int, mid: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(c_in, mid, 1), nn.ReLU(), *conv_bn(mid, mid, 3, stride), nn.ReLU(),
                                  *conv_bn(mid, channels, 1))
        same = c_in == channels and stride == 1
        self.shortcut = nn.Identity() if same else nn.Sequential(*conv_bn(c_in, channels, 1, stride))
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


@register_block("bottleneck2d")
class Bottleneck2dBlock:
    """A ResNet bottleneck block on (C, H, W): 1x1 reduce -> 3x3 (stride) -> 1x1 expand, residual; see
    :class:`Bottleneck`.

    ``channels=None`` uses the replaced part's output channels (C when it is not an image); the middle width is
    max(1, channels // ``reduction``). ``stride=None`` picks the stride that gives the part's output size
    (:func:`matching_stride`), 1 when none does. Output: (channels, ceil(H / stride), ceil(W / stride)).
    """

    @dataclass(frozen=True)
    class Options:
        channels: int | None = None
        reduction: int = 4
        stride: int | None = None

    examples = ({}, {"channels": 8, "reduction": 2, "stride": 2}, {"channels": 4, "reduction": 8, "stride": 1})

    @staticmethod
    def check(o: Options) -> None:
        if any(v is not None and v < 1 for v in (o.channels, o.stride)) or o.reduction < 1:
            raise UserError(f"bottleneck2d needs channels, reduction, stride >= 1, got {o}")

    @staticmethod
    def build(o: Options, in_shape, guide_out_shape) -> nn.Module:
        if len(in_shape) != 3:
            raise UserError(f"bottleneck2d reads (C, H, W) inputs, but this part's input has shape {tuple(in_shape)}")
        channels = o.channels or (guide_out_shape[0] if len(guide_out_shape) == 3 else in_shape[0])
        stride = o.stride or matching_stride(in_shape, guide_out_shape)
        return Bottleneck(in_shape[0], channels, max(1, channels // o.reduction), stride)
