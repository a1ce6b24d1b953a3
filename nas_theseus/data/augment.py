"""Training-time augmentation (``[data] augment``): one registered class per kind.

* ``none`` (the default): the training rows as they are.
* ``standard``: at CIFAR sizes (below 128 px) a random crop of the image padded by an eighth of its side, and a
  horizontal flip; at ImageNet sizes a random-resized crop (area 8–100 %, aspect 3/4–4/3) back to the image's
  size, and a flip.
* ``crop``: ``standard`` without the flip, for images whose mirror image is another class (digits, letters).
* a timm auto-augment policy by its string (``rand-m9-mstd0.5``, ``augmix-m5-w3``, ``original``, ...:
  ``timm.data.auto_augment``) after the ``standard`` crop and flip, as timm's training transform does.

Augmentation applies to the training split wherever it is read for training (guide training, alignment stages,
fine-tuning, the scratch and distillation baselines), never to validation or test rows, nor to the rows a
probe or the activation cache reads. Images held in memory as tensors are augmented a batch at a time on the
device they are read on (no loop over samples: ``standard`` only); images decoded from files are augmented one
at a time in the DataLoader's workers, seeded by (pass, row), so a resumed run sees the same augmented batches.
There the crop and flip are drawn from a ``random.Random`` of that seed and done with Pillow's own operations
(a torchvision transform would draw from torch's global generator, whose seeding per image cost more than the
image's decoding); timm's policies draw from Python's and NumPy's generators, seeded likewise.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..utils.registry import Registry

AUGMENTS: Registry = Registry("augmentation")
LARGE = 128  # px: from this size on, ``standard`` is a random-resized crop


def register_augment(cls: type[Augment]) -> type[Augment]:
    return AUGMENTS.add(cls.name, cls)


class Augment:
    """One kind of augmentation. ``batch`` augments a (N, C, H, W) tensor on its device with ``generator``;
    ``image`` augments one PIL image (in a DataLoader worker, its random state seeded by the caller)."""

    name = ""
    batched = True  # whether ``batch`` exists (tensors held in memory can be augmented)

    def __init__(self, spec: str):
        self.spec = spec

    def batch(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def image(self, img, rng: random.Random | None = None):
        """``img`` augmented, its random draws from ``rng`` (and, for timm's policies, Python's and NumPy's
        generators, seeded by the caller)."""
        raise NotImplementedError


@register_augment
class NoAugment(Augment):
    name = "none"

    def batch(self, x, generator):
        return x

    def image(self, img, rng=None):
        return img


@register_augment
class Standard(Augment):
    """Pad-crop and flip (CIFAR sizes), or random-resized crop and flip (ImageNet sizes)."""

    name = "standard"
    flips = True

    def batch(self, x, generator):
        x = random_resized_crop(x, generator) if x.shape[-1] >= LARGE else pad_crop(x, x.shape[-1] // 8, generator)
        return flip(x, generator) if self.flips else x

    def image(self, img, rng: random.Random | None = None):
        from PIL import Image, ImageOps

        rng = rng or random.Random()
        w, h = img.size
        if w >= LARGE:
            box = resized_crop_box(w, h, rng)
            img = img.resize((w, h), Image.Resampling.BILINEAR, box=box)
        else:
            pad = w // 8
            x0, y0 = rng.randint(0, 2 * pad), rng.randint(0, 2 * pad)
            img = ImageOps.expand(img, border=pad, fill=0).crop((x0, y0, x0 + w, y0 + h))
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if self.flips and rng.random() < 0.5 else img


@register_augment
class Crop(Standard):
    """``standard``'s crop without its flip: for images whose mirror image is another class (digits, text)."""

    name = "crop"
    flips = False


class TimmPolicy(Augment):
    """``standard``, then a timm auto-augment policy (per image only)."""

    name = "timm"
    batched = False

    def __init__(self, spec: str):
        super().__init__(spec)
        from timm.data.auto_augment import augment_and_mix_transform, auto_augment_transform, rand_augment_transform

        make = (rand_augment_transform if spec.startswith("rand") else
                augment_and_mix_transform if spec.startswith("augmix") else auto_augment_transform)
        try:
            self.policy = make(spec, {"translate_const": 100, "img_mean": (128, 128, 128)})
        except Exception as e:  # noqa: BLE001 - timm's parse error, in one line
            raise UserError(f"augment {spec!r} is neither none, standard, crop nor a timm auto-augment policy "
                            f"(e.g. rand-m9-mstd0.5, augmix-m5-w3, original): {type(e).__name__}: {e}") from None

    def image(self, img, rng: random.Random | None = None):
        return self.policy(Standard("standard").image(img, rng))


def make_augment(spec: str | None) -> Augment:
    """The augmentation named by ``spec`` (see the module docstring)."""
    spec = spec or "none"
    if not isinstance(spec, str):
        raise UserError(f"augment must be a string (none, standard, crop or a timm policy), got {spec!r}")
    return AUGMENTS[spec](spec) if spec in AUGMENTS else TimmPolicy(spec)


def check_augment(augment: Augment, sample_shape: tuple[int, ...], *, batched: bool, per_image: bool,
                  where: str) -> None:
    """Refuse, in one line, an augmentation the data cannot take: any but ``none`` needs (C, H, W) images, held
    in memory (``batched``) or decoded by a dataset that augments them (``per_image``), and a timm policy needs
    images decoded one at a time."""
    if augment.name == "none":
        return
    if len(sample_shape) != 3:
        raise UserError(f"{where}: augment = {augment.spec!r} is for images (C, H, W), but the samples have shape "
                        f"{tuple(sample_shape)}; use augment = \"none\"")
    if not batched and not per_image:
        raise UserError(f"{where}: augment = {augment.spec!r}: this dataset's items cannot be augmented (it has no "
                        f"`augmented(i, seed, augment)` method); use augment = \"none\"")
    if batched and not augment.batched:
        raise UserError(f"{where}: augment = {augment.spec!r} transforms one decoded image at a time; these images "
                        f"are held in memory as tensors (augmented a batch at a time): use augment = \"standard\" "
                        f"or \"crop\", "
                        f"or read the images from files (imagefolder with in_memory = false, packed = false)")


def seeded(seed: int) -> random.Random:
    """A generator for one image's augmentation; Python's and NumPy's global generators (which timm's policies
    read) are seeded from it too."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    return random.Random(seed)


def resized_crop_box(w: int, h: int, rng: random.Random, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """A random box of ``scale`` of the image's area and aspect ``ratio`` (the whole image after 10 misses), as
    torchvision's ``RandomResizedCrop`` draws it."""
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        bw, bh = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < bw <= w and 0 < bh <= h:
            x0, y0 = rng.randint(0, w - bw), rng.randint(0, h - bh)
            return (x0, y0, x0 + bw, y0 + bh)
    return (0, 0, w, h)


# --- batched transforms on the device -------------------------------------------------------------------------
def _uniform(n: int, generator: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=generator.device).to(device)


def pad_crop(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Each image zero-padded by ``pad`` and cropped back to its size at a random offset of its own."""
    if pad <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = (_uniform(n, generator, x.device) * (2 * pad + 1)).long().clamp_max(2 * pad)
    dx = (_uniform(n, generator, x.device) * (2 * pad + 1)).long().clamp_max(2 * pad)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (n, 1, h, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (n, 1, 1, w)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image flipped left-right with probability 1/2."""
    mask = _uniform(len(x), generator, x.device) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def random_resized_crop(x: torch.Tensor, generator: torch.Generator, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """Each image cropped to a random box (area ``scale`` of the image, aspect ``ratio``) and resized back to
    the image's size, bilinear (``torchvision.ops.roi_align``)."""
    from torchvision.ops import roi_align

    n, _, h, w = x.shape
    area = h * w * (scale[0] + (scale[1] - scale[0]) * _uniform(n, generator, x.device))
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * _uniform(n, generator, x.device)
    aspect = torch.exp(log_r)
    bw = torch.sqrt(area * aspect).clamp(1, w)
    bh = torch.sqrt(area / aspect).clamp(1, h)
    x0 = _uniform(n, generator, x.device) * (w - bw)
    y0 = _uniform(n, generator, x.device) * (h - bh)
    boxes = torch.stack([torch.arange(n, device=x.device, dtype=x.dtype), x0, y0, x0 + bw, y0 + bh], dim=1)
    return roi_align(x, boxes.to(x.dtype), output_size=(h, w), spatial_scale=1.0, sampling_ratio=2, aligned=True)
