"""Built-in guides the toolkit trains itself: the MNIST-1D 1-D CNN and a small 2-D CNN for the digits set.

A trained guide is cached under ``$NAS_THESEUS_CACHE/guides`` (default ``~/.cache/nas_theseus``) by a hash of
its architecture, its training options, its seed and the data's fingerprint, so a study trains it once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..data import TaskData
from ..errors import UserError
from ..training import FitConfig
from ..utils.registry import Registry
from .guide import Guide
from .weights import cached_training, check_weights, describe_weights, load_weights_file, metrics_path


class _Unsqueeze(nn.Module):
    def forward(self, x):
        return x.unsqueeze(1)


class MNIST1DCNN(nn.Module):
    """The MNIST-1D benchmark CNN (Greydanus 2020): three strided conv stages and a linear head.

    (B, 40) -> stem (B, 1, 40) -> conv1 (B, C, 19) -> conv2 (B, C, 10) -> conv3 (B, C, 5) -> head (B, 10)

    ``depth`` > 3 makes a deeper guide of ``depth`` conv parts, the three strided ones spread among stride-1
    ones (depth 6: conv1, conv3, conv5 strided), for studies whose question needs more parts to replace.
    """

    def __init__(self, channels: int = 25, num_classes: int = 10, length: int = 40, depth: int = 3):
        super().__init__()
        if depth < 3:
            raise TypeError(f"depth must be at least 3 (the three strided parts), got {depth}")
        self.stem = _Unsqueeze()
        strided = {round(j * depth / 3) for j in range(3)}
        out_len, c_in = length, 1
        for i in range(depth):
            k, s = (5 if i == 0 else 3), (2 if i in strided else 1)
            setattr(self, f"conv{i + 1}", nn.Sequential(nn.Conv1d(c_in, channels, k, stride=s, padding=1),
                                                       nn.ReLU()))
            out_len, c_in = (out_len + 2 - k) // s + 1, channels
        self.depth = depth
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels * out_len, num_classes))

    @property
    def part_names(self) -> list[str]:
        return [f"conv{i + 1}" for i in range(self.depth)]

    def forward(self, x):
        h = self.stem(x)
        for name in self.part_names:
            h = getattr(self, name)(h)
        return self.head(h)


class DigitsCNN(nn.Module):
    """A small 2-D CNN for 8x8 digits: (B,1,8,8) -> (B,C,8,8) -> (B,2C,4,4) -> (B,2C,2,2) -> (B,10)."""

    def __init__(self, channels: int = 16, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1), nn.ReLU())
        self.conv3 = nn.Sequential(nn.Conv2d(2 * channels, 2 * channels, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * channels * 4, num_classes))

    def forward(self, x):
        return self.head(self.conv3(self.conv2(self.conv1(x))))


@dataclass(frozen=True)
class _BuiltinSpec:
    factory: type
    data: str
    stem: str | None
    fit: FitConfig


BUILTIN_GUIDES: Registry = Registry("built-in guide", {
    # MNIST-1D reference recipe: Adam, lr 1e-2, batch 100 (here with cosine decay and early stopping).
    "mnist1d_cnn": _BuiltinSpec(MNIST1DCNN, "mnist1d", "stem",
                                FitConfig(max_epochs=150, patience=40, lr=1e-2, batch_size=100)),
    "digits_cnn": _BuiltinSpec(DigitsCNN, "digits", None, FitConfig(max_epochs=60, patience=15, lr=3e-3)),
})


def builtin_guide(name: str, data: TaskData, *, weights: str = "train", seed: int = 0,
                  fit: FitConfig | dict | None = None, progress: bool = True, device: str = "auto",
                  artifacts=None, **arch) -> Guide:
    """Build a built-in guide; ``weights`` is ``"train"`` (train once, then load from the cache), ``"random"``
    or a local weights file (see :mod:`nas_theseus.guides.weights`).

    ``arch`` overrides the architecture (``channels=...``); ``fit`` overrides the training options.
    The trained guide's validation and test accuracy are stored beside it (see :func:`guide_metrics`).
    """
    spec = BUILTIN_GUIDES.lookup(name)
    if data.name != spec.data:
        raise UserError(f"built-in guide {name!r} is made for the {spec.data!r} data, not {data.name!r}")
    check_weights(weights)
    fit_cfg = fit_config(spec.fit, fit)
    arch = {"num_classes": data.num_classes, **arch}
    try:
        torch.manual_seed(seed)
        module = spec.factory(**arch)
    except TypeError as e:
        raise UserError(f"bad architecture option for built-in guide {name!r}: {e}") from None
    source = {"kind": "builtin", "name": name, "arch": arch, **describe_weights(weights), "seed": seed}
    if weights == "train":
        source["cache_key"] = cached_training(module, name=name, key_info={"arch": arch}, data=data, fit=fit_cfg,
                                              seed=seed, device=device, progress=progress, artifacts=artifacts)
    elif weights == "pretrained":
        raise UserError(f"built-in guide {name!r} has no pretrained weights: use 'train', 'random' or a path")
    elif weights != "random":
        load_weights_file(module, weights)
    parts = getattr(module, "part_names", ["conv1", "conv2", "conv3"])
    return Guide.from_module(module, parts, sample_shape=data.sample_shape, stem=spec.stem, head="head",
                             source=source)


def fit_config(default: FitConfig, fit: FitConfig | dict | None) -> FitConfig:
    """The guide's training options: ``default`` with the study's ``fit`` table (or a FitConfig) on top."""
    if fit is None or isinstance(fit, FitConfig):
        return fit or default
    try:
        return FitConfig(**{**asdict(default), **fit})
    except TypeError as e:
        raise UserError(f"bad guide.fit option: {e}") from None


def guide_metrics(guide: Guide) -> dict | None:
    """The stored training metrics of a guide trained by the toolkit, or None for other guides."""
    key = guide.source.get("cache_key")
    if key is None:
        return None
    path = metrics_path(guide.source.get("cache_name", guide.source.get("name", "")), key)
    return json.loads(path.read_text()) if path.exists() else None
