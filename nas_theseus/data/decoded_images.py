"""Images decoded when read (Pillow), the layer every image loader shares: :class:`Images` converts each to grey
(``channels = 1``) or RGB (3), resizes it to the split's size (``size = None`` keeps the images' own size,
which must then be one size for all), scales it to [0, 1] and standardises it per channel; :func:`image_task`
makes the task of three such splits, standardised with the mean and standard deviation of up to
``STAT_IMAGES`` training images (a seeded sample; every training image when there are fewer).

Nothing proportional to the data is held in memory: the splits are read through a ``DataLoader``
(:class:`~nas_theseus.data.dataset_split.DatasetSplit`), except for data whose decoded images fit in
``IN_MEMORY_MB`` (``in_memory = "auto"``): that is decoded once into tensors, the fast path. The loaders:
image folders (:mod:`nas_theseus.data.image_folder`) and Hugging Face image datasets
(:mod:`nas_theseus.data.hf_images`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError
from ..utils.hashing import stable_hash
from .augment import Augment, seeded
from .base import Split, TaskData
from .dataset_split import DatasetSplit

IN_MEMORY_MB = 256  # in_memory = "auto": decoded float32 images up to this size are held as tensors
STAT_IMAGES = 1000


class Images(Dataset):
    """``(image, label)`` pairs: decoded by :meth:`image` (a subclass's), converted, resized and standardised
    (see the module docstring)."""

    def __init__(self, labels: list[int], *, size: tuple[int, int], channels: int, mean: np.ndarray | None = None,
                 std: np.ndarray | None = None, size_option: int | None = None):
        self.labels = labels
        self.size, self.channels, self.size_option = size, channels, size_option
        self.mean = np.zeros(channels, np.float32) if mean is None else mean
        self.std = np.ones(channels, np.float32) if std is None else std

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int):
        """Image ``i`` decoded (PIL), converted and at the split's size."""
        raise NotImplementedError

    def _fit(self, im, where: str):
        """``im`` converted to the split's channels and size; mixed sizes without ``size`` are one line."""
        im = im.convert("L" if self.channels == 1 else "RGB")
        if self.size_option is not None:
            return im.resize(self.size)
        if im.size != self.size:
            raise UserError(f"{where} is {im.size[0]}x{im.size[1]} px but the first image is "
                            f"{self.size[0]}x{self.size[1]}; set the `size` option to resize them all")
        im.load()
        return im

    def raw(self, i: int) -> np.ndarray:
        """Image ``i`` as float32 (C, H, W) in [0, 1], before standardising."""
        return _array(self.image(i))

    def _standardised(self, a: np.ndarray) -> torch.Tensor:
        a = (a - self.mean[:, None, None]) / self.std[:, None, None]
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self._standardised(self.raw(i)), self.labels[i]

    def augmented(self, i: int, seed: int, augment: Augment) -> tuple[torch.Tensor, int]:
        """Image ``i`` through ``augment`` (on the decoded image, before standardising), its randomness seeded
        by ``seed``."""
        return self._standardised(_array(augment.image(self.image(i), seeded(seed)))), self.labels[i]

    def with_statistics(self, mean: np.ndarray, std: np.ndarray) -> Images:
        """These images standardised with ``mean`` and ``std`` (the training split's)."""
        out = copy.copy(self)
        out.mean, out.std = mean, std
        return out


def _array(img) -> np.ndarray:
    a = np.asarray(img, dtype=np.float32) / 255.0
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def image_task(name: str, parts: list[Images], identities: list, config: dict, *, in_memory: bool | str,
               workers: int | None, split_seed: int, val_fraction: float,
               reader: Callable[..., DatasetSplit] = DatasetSplit) -> TaskData:
    """The task over train / validation / test images: standardised with statistics of the training images,
    decoded once into tensors when they fit ``IN_MEMORY_MB`` (``in_memory = "auto"``) or always (true), else
    read through a DataLoader (a ``reader``: :class:`DatasetSplit`, or one that decodes batches otherwise),
    fingerprinted by ``identities`` (what identifies each split's rows unread)."""
    if in_memory not in ("auto", True, False):
        raise UserError(f"{name} data: in_memory must be \"auto\", true or false, got {in_memory!r}")
    mean, std = image_statistics(parts[0], split_seed)
    parts = [p.with_statistics(mean, std) for p in parts]
    channels, (w, h) = parts[0].channels, parts[0].size
    if in_memory is True or (in_memory == "auto" and sum(map(len, parts)) * channels * w * h * 4
                             <= IN_MEMORY_MB * 2**20):
        splits = [_decode_all(p) for p in parts]
    else:
        key = {"mean": mean.tolist(), "std": std.tolist(), **{k: v for k, v in config.items() if k != "root"}}
        splits = [reader(p, workers=workers, fingerprint=stable_hash({**key, "rows": identity}))
                  for p, identity in zip(parts, identities)]
    return TaskData(name, *splits, num_classes=len(config["classes"]),
                    config={**config, "val_fraction": val_fraction, "split_seed": split_seed,
                            "in_memory": isinstance(splits[0], Split)})


def image_statistics(images: Images, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of up to ``STAT_IMAGES`` training images (a seeded sample)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(images), generator=g)[:STAT_IMAGES].sort().values.tolist()
    total, total_sq, count = np.zeros(images.channels), np.zeros(images.channels), 0
    for i in idx:
        a = images.raw(i).astype(np.float64)
        total += a.sum(axis=(1, 2))
        total_sq += (a ** 2).sum(axis=(1, 2))
        count += a.shape[1] * a.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0) * count / max(count - 1, 1))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def _decode_all(images: Images) -> Split:
    if len(images) == 0:
        shape = (0, images.channels, images.size[1], images.size[0])
        return Split(torch.empty(shape), torch.empty(0, dtype=torch.long))
    xs = [images[i][0] for i in range(len(images))]
    return Split(torch.stack(xs), torch.as_tensor(images.labels, dtype=torch.long))
