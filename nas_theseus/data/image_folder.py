"""Image folders: ``root/<class>/<image>`` (sorted class names are the labels), or ``root/train/<class>/`` and
``root/test/<class>/``, decoded with Pillow when read; without a test folder, a test split is carved out
(stratified, ``test_fraction``), and a validation split out of the training images (``val_fraction``).

The images are converted, resized, standardised and held in memory or read through a ``DataLoader`` as
:mod:`nas_theseus.data.decoded_images` says (a folder of JPEGs decoded a batch at a time on the GPU instead:
``decode``, :mod:`nas_theseus.data.jpeg_files`), or packed once into uint8 shards and read memory-mapped
(``packed``: :mod:`nas_theseus.data.packed_images`). The data's fingerprint is made of the files' relative paths, sizes
and modification times, and the options: no image is read for it.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from ..errors import UserError
from .base import TaskData, stratified_indices
from .dataset_split import DatasetSplit
from .decoded_images import Images
from .jpeg_files import JpegFiles, check_decode, is_jpeg
from .packed_images import packed_task

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


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


def load_image_folder(*, root: str, size: int | None = 32, channels: int = 3, val_fraction: float = 0.1,
                      test_fraction: float = 0.2, split_seed: int = 0, in_memory: bool | str = "auto",
                      workers: int | None = None, packed: bool | str = False, decode: str = "auto") -> TaskData:
    """Images under ``root/<class>/`` (see the module docstring); ``in_memory``: ``"auto"``, true or false;
    ``workers``: DataLoader processes (default: :func:`~nas_theseus.data.dataset_split.default_workers`);
    ``packed``: read from uint8 shards packed once (true; ``"auto"``: when not held in memory), see
    :mod:`nas_theseus.data.packed_images`; ``decode``: ``"auto"``, ``"pillow"`` or ``"device"``, who decodes
    JPEGs read from the files (:mod:`nas_theseus.data.jpeg_files`)."""
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
    every_file = train[0] + val[0] + test[0]
    check_decode(decode, every_file)
    reader = partial(JpegFiles, decode=decode) if decode != "pillow" and is_jpeg(every_file) else DatasetSplit
    return packed_task("imagefolder", parts, identities, config, packed=packed, in_memory=in_memory,
                       workers=workers, split_seed=split_seed, val_fraction=val_fraction, reader=reader)


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


def _file_identity(files: list[Path], root: Path) -> list:
    """(relative path, size, modification time) of every file: what the fingerprint hashes."""
    out = []
    for f in files:
        st = f.stat()
        out.append([str(f.relative_to(root)), st.st_size, st.st_mtime_ns])
    return out
