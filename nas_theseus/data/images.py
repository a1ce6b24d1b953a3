"""Image folders: ``root/<class>/<image>`` (sorted class names are the labels), or ``root/train/<class>/`` and
``root/test/<class>/``, decoded with Pillow when read.

Nothing proportional to the folder is held in memory: the splits are lists of file names, read through a
``DataLoader`` (:class:`~nas_theseus.data.dataset_split.DatasetSplit`), except for a small folder whose decoded
images fit in ``IN_MEMORY_MB`` (``in_memory = "auto"``): that one is decoded once into tensors, the fast path.

Each image is converted to grey (``channels = 1``) or RGB (3), resized to ``size`` × ``size`` (``size = None``
keeps the images' own size, which must then be one size for all), scaled to [0, 1] and standardised per
channel with the mean and standard deviation of up to ``STAT_IMAGES`` training images (a seeded sample; every
training image when there are fewer). The data's fingerprint is made of the files' relative paths, sizes and
modification times, and the options: no image is read for it.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError
from ..utils.hashing import stable_hash
from .augment import Augment, seeded
from .base import Split, TaskData, stratified_indices
from .dataset_split import DatasetSplit

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
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


class ImageFiles(Images):
    """Images from a list of files, decoded with Pillow."""

    def __init__(self, files: list[Path], labels: list[int], **kwargs):
        super().__init__(labels, **kwargs)
        self.files = files

    def image(self, i: int):
        from PIL import Image, UnidentifiedImageError

        f = self.files[i]
        try:
            with Image.open(f) as im:
                return self._fit(im, f"imagefolder data: {f}")
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
            raise UserError(f"imagefolder data: cannot read image {f} ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None


def _array(img) -> np.ndarray:
    a = np.asarray(img, dtype=np.float32) / 255.0
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def load_image_folder(*, root: str, size: int | None = 32, channels: int = 3, val_fraction: float = 0.1,
                      test_fraction: float = 0.2, split_seed: int = 0, in_memory: bool | str = "auto",
                      workers: int | None = None) -> TaskData:
    """Images under ``root/<class>/`` (see the module docstring); ``in_memory``: ``"auto"``, true or false;
    ``workers``: DataLoader processes (default: :func:`~nas_theseus.data.dataset_split.default_workers`)."""
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise UserError(f"imagefolder data: no such folder {folder}")
    if channels not in (1, 3):
        raise UserError(f"imagefolder data: channels must be 1 or 3, got {channels}")
    split_dirs = (folder / "train", folder / "test")
    has_split = all(d.is_dir() for d in split_dirs)
    classes = sorted(d.name for d in (split_dirs[0] if has_split else folder).iterdir() if d.is_dir())
    if not classes:
        raise UserError(f"imagefolder data: {folder} has no class subfolders")
    files, labels = _list(split_dirs[0] if has_split else folder, classes)
    if has_split:
        test = _list(split_dirs[1], classes, allow_empty_classes=True)
    else:
        rest, carved = stratified_indices(torch.as_tensor(labels), test_fraction, split_seed + 1)
        test = _pick(files, labels, carved)
        files, labels = _pick(files, labels, rest)
    train_idx, val_idx = stratified_indices(torch.as_tensor(labels), val_fraction, split_seed)
    train, val = _pick(files, labels, train_idx), _pick(files, labels, val_idx)
    shape = _first_size(train[0][0]) if size is None else (size, size)
    kw = {"size": shape, "channels": channels, "size_option": size}
    parts = [ImageFiles(*part, **kw) for part in (train, val, test)]
    config = {"root": str(folder), "size": size, "channels": channels, "classes": classes}
    identities = [_file_identity(part[0], folder) for part in (train, val, test)]
    return image_task("imagefolder", parts, identities, config, in_memory=in_memory, workers=workers,
                      split_seed=split_seed, val_fraction=val_fraction)


def image_task(name: str, parts: list[Images], identities: list, config: dict, *, in_memory: bool | str,
               workers: int | None, split_seed: int, val_fraction: float) -> TaskData:
    """The task over train / validation / test images: standardised with statistics of the training images,
    decoded once into tensors when they fit ``IN_MEMORY_MB`` (``in_memory = "auto"``) or always (true), else
    read through a DataLoader, fingerprinted by ``identities`` (what identifies each split's rows unread)."""
    if in_memory not in ("auto", True, False):
        raise UserError(f"{name} data: in_memory must be \"auto\", true or false, got {in_memory!r}")
    mean, std = _statistics(parts[0], split_seed)
    parts = [p.with_statistics(mean, std) for p in parts]
    channels, (w, h) = parts[0].channels, parts[0].size
    if in_memory is True or (in_memory == "auto" and sum(map(len, parts)) * channels * w * h * 4
                             <= IN_MEMORY_MB * 2**20):
        splits = [_decode_all(p) for p in parts]
    else:
        key = {"mean": mean.tolist(), "std": std.tolist(), **{k: v for k, v in config.items() if k != "root"}}
        splits = [DatasetSplit(p, workers=workers, fingerprint=stable_hash({**key, "rows": identity}))
                  for p, identity in zip(parts, identities)]
    return TaskData(name, *splits, num_classes=len(config["classes"]),
                    config={**config, "val_fraction": val_fraction, "split_seed": split_seed,
                            "in_memory": isinstance(splits[0], Split)})


def _list(base: Path, classes: list[str], *, allow_empty_classes: bool = False) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for label, name in enumerate(classes):
        found = [f for f in sorted((base / name).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES] \
            if (base / name).is_dir() else []
        if not found and not allow_empty_classes:
            raise UserError(f"imagefolder data: class folder {base / name} holds no images "
                            f"({', '.join(IMAGE_SUFFIXES)}); remove it or add images")
        files += found
        labels += [label] * len(found)
    if not files:
        raise UserError(f"imagefolder data: no images ({', '.join(IMAGE_SUFFIXES)}) under {base}")
    return files, labels


def _pick(files: list[Path], labels: list[int], idx: torch.Tensor) -> tuple[list[Path], list[int]]:
    return [files[i] for i in idx.tolist()], [labels[i] for i in idx.tolist()]


def _first_size(f: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(f) as im:
            return im.size
    except OSError as e:
        raise UserError(f"imagefolder data: cannot read image {f} ({type(e).__name__}: {e})") from None


def _statistics(images: Images, seed: int) -> tuple[np.ndarray, np.ndarray]:
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


def _file_identity(files: list[Path], root: Path) -> list:
    """(relative path, size, modification time) of every file: what the fingerprint hashes."""
    out = []
    for f in files:
        st = f.stat()
        out.append([str(f.relative_to(root)), st.st_size, st.st_mtime_ns])
    return out
