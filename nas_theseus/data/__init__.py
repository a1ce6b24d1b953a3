"""Task data: splits held in memory or read through a DataLoader (:mod:`nas_theseus.data.base`); offline
loaders (MNIST-1D, scikit-learn digits, the stdlib's pydoc text), and local files (npz, CIFAR-10 python batches,
image folders, a Hugging Face image dataset, UTF-8 text, a local WikiText copy)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from ..errors import UserError, did_you_mean
from ..utils.registry import Registry
from .base import Batch, Rows, Split, TaskData, carve_validation
from .dataset_split import DatasetSplit
from .digits import load_digits
from .hf_images import load_hf_images
from .image_folder import load_image_folder
from .local import load_cifar10, load_npz
from .mnist1d import load_mnist1d
from .text import ByteTokenizer, load_text
from .wikitext import load_wikitext

DATASETS: Registry = Registry("dataset", {
    "mnist1d": load_mnist1d, "digits": load_digits, "npz": load_npz, "cifar10": load_cifar10,
    "imagefolder": load_image_folder, "hfimages": load_hf_images, "text": load_text, "wikitext": load_wikitext})


def load_data(name: str, *, augment: str = "none", **options) -> TaskData:
    """Load a registered dataset by name with its keyword options; ``augment``: training-time augmentation
    (``none``, ``standard``, ``crop`` or a timm policy: :mod:`nas_theseus.data.augment`)."""
    loader: Callable[..., TaskData] = DATASETS.lookup(name)
    params = inspect.signature(loader).parameters
    unknown = [k for k in options if k not in params]
    missing = [k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in options]
    if unknown or missing:
        what = "; ".join(filter(None, [f"unknown option {k!r}{did_you_mean(k, params)}" for k in unknown]
                                + [f"missing option {k!r}" for k in missing]))
        raise UserError(f"data {name!r}: {what}; options: {', '.join(params)}")
    data = loader(**options)
    return data if augment in (None, "none") else data.with_augment(augment)


__all__ = ["DATASETS", "Batch", "ByteTokenizer", "DatasetSplit", "Rows", "Split", "TaskData", "carve_validation",
           "load_cifar10", "load_data", "load_digits", "load_hf_images", "load_image_folder", "load_mnist1d",
           "load_npz", "load_text", "load_wikitext"]
