"""Task data: splits as tensors, and the offline loaders (MNIST-1D, scikit-learn digits)."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import unknown_name
from .base import Split, TaskData, carve_validation
from .digits import load_digits
from .mnist1d import load_mnist1d

DATASETS: dict[str, Callable[..., TaskData]] = {"mnist1d": load_mnist1d, "digits": load_digits}


def load_data(name: str, **options) -> TaskData:
    """Load a registered dataset by name with its keyword options."""
    if name not in DATASETS:
        raise unknown_name("dataset", name, DATASETS)
    return DATASETS[name](**options)


__all__ = ["DATASETS", "Split", "TaskData", "carve_validation", "load_data", "load_digits", "load_mnist1d"]
