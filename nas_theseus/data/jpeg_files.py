"""JPEG folders decoded a batch at a time (``decode_jpeg`` on a list of the files' bytes) on the device the batch
goes to: nvJPEG on a GPU, libjpeg-turbo on the CPU. The decoder is TorchCodec's where it is installed (the
``jpeg`` extra; torchvision deprecated its own image decoders in 0.29 in its favour), else torchvision's. What
the ``decode`` option of an image folder chooses (data read from the files: not held in memory, not packed):

* ``"auto"`` (the default): on the device when it is a GPU, else with Pillow; with Pillow too wherever a file
  is not a JPEG by its name, or the augmentation is a timm policy (one decoded image at a time);
* ``"pillow"``: one image at a time in the DataLoader's workers (:class:`~nas_theseus.data.dataset_split.
  DatasetSplit`), augmented there per image;
* ``"device"``: a batch at a time on any device, the CPU included (refused in one line, when the data are
  loaded, where a file is not a JPEG or the augmentation is a timm policy).

The DataLoader's workers only read the files' bytes; the batch is decoded, converted to the split's channels
(grey with Pillow's own integer weights) and resized (bicubic, antialiased, where a size differs), then
standardised and augmented on the device a batch at a time, with the draws of images held in memory or packed
(:meth:`~nas_theseus.data.base.Split.batches`), not Pillow's per image. On the CPU the pixels are Pillow's bit
for bit where no resize is needed (a resize's may differ by rounding), and the data keep the fingerprint of
Pillow's rows. nvJPEG's may differ by rounding too: on a GPU, the data's fingerprint there (what caches built
there are keyed by: :meth:`~nas_theseus.data.base.TaskData.fingerprint_on`) names the decoder, so no cache
mixes rows that nvJPEG decoded with Pillow's. Probes and references
(:meth:`~nas_theseus.data.dataset_split.DatasetSplit.take`) decode with Pillow.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from .augment import Augment
from .base import Batch
from .dataset_split import DatasetSplit, one_line_errors

DECODERS = ("auto", "pillow", "device")
JPEG_SUFFIXES = (".jpg", ".jpeg")


def is_jpeg(files: list[Path]) -> bool:
    """Whether every file is a JPEG by its name."""
    return all(f.suffix.lower() in JPEG_SUFFIXES for f in files)


def check_decode(decode: str, files: list[Path]) -> None:
    """Refuse, in one line, a ``decode`` that is not one of :data:`DECODERS`, or ``"device"`` for a non-JPEG."""
    if decode not in DECODERS:
        raise UserError(f"imagefolder data: decode must be one of {', '.join(map(repr, DECODERS))}, got {decode!r}")
    if decode == "device" and not is_jpeg(files):
        first = next(f for f in files if f.suffix.lower() not in JPEG_SUFFIXES)
        raise UserError(f"imagefolder data: decode = \"device\" decodes JPEG files only, but {first} is not "
                        f"one ({', '.join(JPEG_SUFFIXES)}); use decode = \"auto\" or \"pillow\"")


def as_pillow_on(device: torch.device) -> bool:
    """Whether JPEGs decoded a batch at a time on ``device`` are decoded as Pillow decodes them, so that the data
    keep the fingerprint of Pillow's rows: on the CPU (libjpeg-turbo, Pillow's own decoder: the same pixels bit
    for bit), not on a GPU (nvJPEG, which is not bound to them)."""
    return device.type == "cpu"


class JpegFiles(DatasetSplit):
    """A :class:`DatasetSplit` over an :class:`~nas_theseus.data.image_folder.ImageFiles` of JPEGs whose
    batches are decoded on the device where ``decode`` says so (see the module docstring), else by Pillow."""

    def __init__(self, dataset, *, decode: str, fingerprint: str, workers: int | None = None, prefetch: int = 2):
        super().__init__(dataset, fingerprint=fingerprint, workers=workers, prefetch=prefetch)
        self.decode = decode

    def decoder_on(self, device: torch.device) -> str | None:
        """The decoder of batches on ``device`` where it is not Pillow's equal (nvJPEG: see :func:`as_pillow_on`),
        named in the data's fingerprint there; None where Pillow decodes, or libjpeg-turbo on the CPU."""
        if not self.batched_on(device, None) or as_pillow_on(device):
            return None
        return f"{jpeg_decoder().library} decode_jpeg on {device.type}"

    def refuse_augment(self, augment: Augment) -> None:
        """``decode = "device"`` with a policy for one decoded image at a time (timm's): one line naming both."""
        if self.decode == "device" and not augment.batched:
            raise UserError(f"imagefolder data: augment = {augment.spec!r} transforms one decoded image at a time, "
                            f"but decode = \"device\" decodes a batch at a time; use decode = \"auto\" or "
                            f"\"pillow\" (Pillow decodes for such a policy), or augment = \"standard\" or \"crop\"")

    def batched_on(self, device: torch.device, augment: Augment | None) -> bool:
        """Whether batches on ``device`` with ``augment`` are decoded there, a batch at a time."""
        if self.decode == "device":
            if augment is not None:  # checked when the data were loaded; here for batches asked for directly
                self.refuse_augment(augment)
            return True
        return self.decode == "auto" and device.type == "cuda" and (augment is None or augment.batched)

    def batches(self, batch_size: int, *, order: torch.Tensor | None = None, device: torch.device | str = "cpu",
                augment: Augment | None = None, seed: int = 0) -> Iterator[Batch]:
        device = torch.device(device)
        if not self.batched_on(device, augment):
            yield from super().batches(batch_size, order=order, device=device, augment=augment, seed=seed)
            return
        images = self.dataset
        order = torch.arange(len(self)) if order is None else order.cpu()
        chunks = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
        prefetch = {"prefetch_factor": self.prefetch} if self.workers else {}
        loader = DataLoader(_FileBytes(images.files), batch_sampler=chunks, num_workers=self.workers,
                            collate_fn=_listed, **prefetch)
        mean = torch.as_tensor(images.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.as_tensor(images.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        labels = torch.as_tensor(images.labels, dtype=torch.long)
        generator = None
        if augment is not None and augment.name != "none":  # a batch at a time, on the device (Split.batches')
            generator = torch.Generator(device=device).manual_seed(seed)
        for idx, data in one_line_errors(loader):
            x = decode_batch(data, [images.files[i] for i in idx.tolist()], channels=images.channels,
                             size=images.size, device=device)
            x = (x.float() / 255.0 - mean) / std  # as ByteImages and Images standardise: the same float32 ops
            yield Batch(idx, x if generator is None else augment.batch(x, generator),
                        labels[idx].to(device, non_blocking=True))


def decode_batch(data: list[torch.Tensor], files: list[Path], *, channels: int, size: tuple[int, int],
                 device: torch.device) -> torch.Tensor:
    """JPEG bytes ``data`` (one uint8 tensor a file) as uint8 (N, channels, H, W) on ``device`` at ``size``
    (W, H); a file that cannot be decoded is named in one line."""
    decode_jpeg = jpeg_decoder()
    try:
        images = decode_jpeg(data, device=device)
    except RuntimeError:
        for one, f in zip(data, files):  # which file: decoded alone, the first that fails is named
            try:
                decode_jpeg([one], device=device)
            except RuntimeError as e:
                raise UserError(f"imagefolder data: cannot decode {f} as a JPEG ({str(e).splitlines()[0][-200:]}); "
                                f"decode = \"pillow\" reads any image Pillow can") from None
        raise
    return torch.stack([_fit(im, channels, size) for im in images])


@functools.cache
def jpeg_decoder() -> Callable[..., list[torch.Tensor]]:
    """``decode(list of bytes tensors, device=...)`` → (3, H, W) uint8 images: TorchCodec's where it imports,
    else torchvision's (its deprecation warning, one per call, silenced); ``decode.library`` names which."""
    try:
        from torchcodec.decoders import decode_jpeg as codec
    except Exception:  # noqa: BLE001 - not installed, or built for another torch: torchvision's then
        codec = None
    if codec is not None:
        decode = functools.partial(codec, mode="RGB")
        decode.library = "torchcodec"
        return decode
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_jpeg as vision

    def decode(data, device):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
            return vision(data, mode=ImageReadMode.RGB, device=device)

    decode.library = "torchvision"
    return decode


def _fit(im: torch.Tensor, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """A decoded (3, H, W) uint8 image in ``channels``, then at ``size`` (W, H), as ``Images._fit`` does with
    Pillow: grey first (ITU-R 601-2 luma in Pillow's integer arithmetic), then a bicubic antialiased resize."""
    if channels == 1:
        r, g, b = im.to(torch.int32)
        im = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8)[None]
    w, h = size
    if im.shape[1:] != (h, w):
        resized = F.interpolate(im[None].float(), size=(h, w), mode="bicubic", antialias=True, align_corners=False)
        im = resized[0].round_().clamp_(0, 255).to(torch.uint8)
    return im


class _FileBytes(Dataset):
    """Row ``i`` as ``(i, the file's bytes)``: what a DataLoader worker does for a batch decoded on the device."""

    def __init__(self, files: list[Path]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        f = self.files[i]
        try:
            raw = np.fromfile(f, dtype=np.uint8)
        except OSError as e:
            raise UserError(f"imagefolder data: cannot read image {f} ({e.strerror or e})") from None
        return i, torch.from_numpy(raw)


def _listed(items: list[tuple[int, torch.Tensor]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A batch as (row indices, the files' bytes as a list): the files differ in length."""
    return torch.tensor([i for i, _ in items], dtype=torch.long), [raw for _, raw in items]
