"""MNIST-1D (Greydanus 2020), generated offline by the ``mnist1d`` package: 40-sample 1-D signals, 10 classes."""

from __future__ import annotations

import numpy as np
import torch

from .base import Split, TaskData, carve_validation


def load_mnist1d(*, num_samples: int = 5000, train_split: float = 0.8, val_fraction: float = 0.1,
                 data_seed: int = 42, split_seed: int = 0) -> TaskData:
    """Generate MNIST-1D and carve a validation split out of its training part.

    The defaults give the benchmark's 4000 train / 1000 test; 10 % of train (400) becomes validation, so
    training uses 3600 samples. ``data_seed`` picks the generated signals, ``split_seed`` the validation
    carve-out. Inputs are float32 of shape (N, 40). Global NumPy / ``random`` state is restored afterwards
    (the generator reseeds them).

    >>> data = load_mnist1d(num_samples=500)  # doctest: +SKIP
    """
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.train_split = float(train_split)
    args.seed = int(data_seed)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x = torch.as_tensor(raw["x"], dtype=torch.float32)
    y = torch.as_tensor(raw["y"], dtype=torch.long)
    train, val = carve_validation(x, y, val_fraction, split_seed)
    test = Split(torch.as_tensor(raw["x_test"], dtype=torch.float32), torch.as_tensor(raw["y_test"], dtype=torch.long))
    config = dict(num_samples=num_samples, train_split=train_split, val_fraction=val_fraction,
                  data_seed=data_seed, split_seed=split_seed)
    return TaskData("mnist1d", train, val, test, num_classes=10, config=config)
