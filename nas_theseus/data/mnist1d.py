"""MNIST-1D (Greydanus 2020), generated offline by the ``mnist1d`` package: 40-sample 1-D signals, 10 classes."""

from __future__ import annotations

import numpy as np
import torch

from ..utils.files import atomic_write, cache_dir
from ..utils.hashing import stable_hash
from .base import Split, TaskData, carve_validation


def load_mnist1d(*, num_samples: int = 5000, train_split: float = 0.8, val_fraction: float = 0.1,
                 data_seed: int = 42, split_seed: int = 0) -> TaskData:
    """Generate MNIST-1D (once per machine: then read from the cache) and carve a validation split out of its
    training part.

    The defaults give the benchmark's 4000 train / 1000 test; 10 % of train (400) becomes validation, so
    training uses 3600 samples. ``data_seed`` picks the generated signals, ``split_seed`` the validation
    carve-out. Inputs are float32 of shape (N, 40). Global NumPy / ``random`` state is restored afterwards
    (the generator reseeds them).

    >>> data = load_mnist1d(num_samples=500)  # doctest: +SKIP
    """
    raw = _generated(int(num_samples), float(train_split), int(data_seed))
    x = torch.as_tensor(raw["x"], dtype=torch.float32)
    y = torch.as_tensor(raw["y"], dtype=torch.long)
    train, val = carve_validation(x, y, val_fraction, split_seed)
    test = Split(torch.as_tensor(raw["x_test"], dtype=torch.float32), torch.as_tensor(raw["y_test"], dtype=torch.long))
    config = dict(num_samples=num_samples, train_split=train_split, val_fraction=val_fraction,
                  data_seed=data_seed, split_seed=split_seed)
    return TaskData("mnist1d", train, val, test, num_classes=10, config=config)


def _generated(num_samples: int, train_split: float, data_seed: int) -> dict:
    """The ``mnist1d`` package's arrays for these settings, generated once per machine and read back from the
    cache after (generating 5000 signals takes seconds: every study process and ``nas-theseus library`` paid it).
    A cache file that does not read is generated again."""
    import random
    from importlib.metadata import version

    key = stable_hash({"mnist1d": version("mnist1d"), "num_samples": num_samples, "train_split": train_split,
                       "seed": data_seed})
    path = cache_dir() / "data" / f"mnist1d-{key}.npz"
    names = ("x", "y", "x_test", "y_test")
    try:
        with np.load(path) as stored:
            return {n: stored[n] for n in names}
    except (OSError, KeyError, ValueError):
        pass  # not generated on this machine yet, or a damaged file
    from mnist1d.data import get_dataset_args, make_dataset  # imports matplotlib: only where it generates

    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = num_samples, train_split, data_seed
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    arrays = {n: np.asarray(raw[n]) for n in names}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)
    return arrays
