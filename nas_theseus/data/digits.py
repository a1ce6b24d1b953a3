"""scikit-learn's 8x8 handwritten digits as a small 2-D image set (1797 images, 10 classes, shipped offline)."""

from __future__ import annotations

import torch

from .base import Split, TaskData, carve_validation


def load_digits(*, test_fraction: float = 0.2, val_fraction: float = 0.1, split_seed: int = 0) -> TaskData:
    """Images of shape (1, 8, 8), scaled to [0, 1] then standardised with the training split's mean and std."""
    from sklearn.datasets import load_digits as _sk_load

    raw = _sk_load()
    x = torch.as_tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.as_tensor(raw.target, dtype=torch.long)
    rest, test = carve_validation(x, y, test_fraction, split_seed + 1)
    train, val = carve_validation(rest.x, rest.y, val_fraction, split_seed)
    mean, std = train.x.mean(), train.x.std()

    def norm(s: Split) -> Split:
        return Split((s.x - mean) / std, s.y)

    config = dict(test_fraction=test_fraction, val_fraction=val_fraction, split_seed=split_seed)
    return TaskData("digits", norm(train), norm(val), norm(test), num_classes=10, config=config)
