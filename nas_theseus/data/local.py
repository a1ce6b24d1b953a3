"""Data the user brings, read from local files (nothing is downloaded):

* ``npz``: ``X`` (N, ...) and integer ``y`` (N,), optionally ``X_test`` / ``y_test``; without a test split one
  is carved out (stratified, ``test_fraction``). Any array shape works: vectors, sequences, images.
* ``cifar10``: the standard python-pickle batches of CIFAR-10 (``data_batch_1`` … ``data_batch_5``,
  ``test_batch``, as in ``cifar-10-python.tar.gz``) under ``root``; images (3, 32, 32), held as their bytes
  and standardised a batch at a time (:class:`~nas_theseus.data.byte_images.ByteImages`).
(Image folders: :mod:`nas_theseus.data.image_folder`.)

Every loader carves its validation split out of the training data (stratified, ``val_fraction``, seeded) and
standardises with statistics of the **training split only**: per channel for (C, ...) samples, per feature
for flat vectors.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .base import Split, TaskData, carve_validation, stratified_indices
from .byte_images import ByteImages


def _finish(name: str, x: torch.Tensor, y: torch.Tensor, test: tuple[torch.Tensor, torch.Tensor] | None, *,
            val_fraction: float, test_fraction: float, split_seed: int, config: dict,
            num_classes: int | None = None) -> TaskData:
    if test is None:
        rest, test_split = carve_validation(x, y, test_fraction, split_seed + 1)
    else:
        rest, test_split = Split(x, y), Split(*test)
    train, val = carve_validation(rest.x, rest.y, val_fraction, split_seed)
    dims = [0] if train.x.dim() == 2 else [0, *range(2, train.x.dim())]  # per feature / per channel
    mean = train.x.mean(dim=dims, keepdim=True)
    std = train.x.std(dim=dims, keepdim=True).clamp_min(1e-6)

    def norm(s: Split) -> Split:
        return Split((s.x - mean[0]) / std[0], s.y)

    labels = torch.cat([train.y, val.y, test_split.y])
    num_classes = num_classes or int(labels.max()) + 1
    return TaskData(name, norm(train), norm(val), norm(test_split), num_classes=num_classes,
                    config={**config, "val_fraction": val_fraction, "split_seed": split_seed})


def _labels(y, where: str) -> torch.Tensor:
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise UserError(f"{where}: labels must be a 1-D array of non-negative integers, got dtype {y.dtype} "
                        f"and shape {y.shape}")
    return torch.as_tensor(y, dtype=torch.long)


def load_npz(*, path: str, val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0) -> TaskData:
    """Arrays from an ``.npz`` file (see the module docstring); loaded with ``allow_pickle=False``."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"npz data: no such file {p}")
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # noqa: BLE001 - a damaged file is the user's to fix
        raise UserError(f"npz data: cannot read {p} ({type(e).__name__}: {e})") from None
    missing = {"X", "y"} - set(arrays)
    if missing:
        raise UserError(f"npz data: {p} lacks {sorted(missing)} (has {sorted(arrays)}); expected X, y and "
                        f"optionally X_test, y_test")
    if ("X_test" in arrays) != ("y_test" in arrays):
        raise UserError(f"npz data: {p} has only one of X_test / y_test")
    x = torch.as_tensor(arrays["X"], dtype=torch.float32)
    y = _labels(arrays["y"], f"{p}: y")
    if len(x) != len(y):
        raise UserError(f"npz data: X has {len(x)} rows but y has {len(y)}")
    test = None
    if "X_test" in arrays:
        xt = torch.as_tensor(arrays["X_test"], dtype=torch.float32)
        yt = _labels(arrays["y_test"], f"{p}: y_test")
        if xt.shape[1:] != x.shape[1:] or len(xt) != len(yt):
            raise UserError(f"npz data: X_test {tuple(xt.shape)} / y_test {tuple(yt.shape)} do not match X "
                            f"{tuple(x.shape)}")
        test = (xt, yt)
    return _finish("npz", x, y, test, val_fraction=val_fraction, test_fraction=test_fraction,
                   split_seed=split_seed, config={"path": str(p)})


# what CIFAR-10's official python batches (and numpy pickles of such arrays) name: numpy's array
# reconstruction and dtypes, under numpy 1's and numpy 2's module names
_CIFAR_GLOBALS = {(mod, name) for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
                  for name in ("_reconstruct", "scalar")}
_CIFAR_GLOBALS |= {(mod, "_frombuffer") for mod in ("numpy.core.numeric", "numpy._core.numeric")}
_CIFAR_GLOBALS |= {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # bytes in protocol 2


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR-10 batch holds; any other global (a function a crafted file would call)
    is refused before it is looked up, so nothing it names runs."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return super().find_class(module, name)


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    # the official format is a pickle of {b"data": uint8 (N, 3072), b"labels": [...]}, read with an unpickler
    # that admits only numpy's array reconstruction (a crafted file cannot run code)
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise UserError(f"cifar10 data: {path} is not a CIFAR-10 python batch ({e}); nothing in it was run") from None
    except Exception as e:  # noqa: BLE001 - a damaged file is the user's to fix
        raise UserError(f"cifar10 data: cannot read {path} ({type(e).__name__}: {e})") from None
    data, labels = (d.get(b"data"), d.get(b"labels")) if isinstance(d, dict) else (None, None)
    if not isinstance(data, np.ndarray) or not isinstance(labels, list):
        raise UserError(f"cifar10 data: {path} is not a CIFAR-10 python batch (no b'data' array / b'labels' list)")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def load_cifar10(*, root: str, limit: int | None = None, val_fraction: float = 0.1, split_seed: int = 0) -> TaskData:
    """CIFAR-10 from ``root`` (the ``cifar-10-batches-py`` folder); ``limit`` keeps the first N train images."""
    folder = Path(root).expanduser()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise UserError(f"cifar10 data: {folder} lacks {', '.join(missing)} (expected the extracted "
                        f"cifar-10-batches-py folder of the python version)")
    train = [_cifar_batch(folder / n) for n in names[:5]]
    x = np.concatenate([b[0] for b in train])
    y = np.concatenate([b[1] for b in train])
    if limit is not None:
        x, y = x[:limit], y[:limit]
    xt, yt = _cifar_batch(folder / "test_batch")
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    train_idx, val_idx = stratified_indices(y, val_fraction, split_seed)
    train = ByteImages.standardised(x[train_idx], y[train_idx])
    val = ByteImages.standardised(x[val_idx], y[val_idx], like=train)
    test = ByteImages.standardised(torch.from_numpy(xt), torch.from_numpy(yt), like=train)
    return TaskData("cifar10", train, val, test, num_classes=10,
                    config={"root": str(folder), "limit": limit, "val_fraction": val_fraction,
                            "split_seed": split_seed})
