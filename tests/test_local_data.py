"""Local data loaders on small files the tests write in the real formats: npz, CIFAR-10 batches, image folders."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from nas_theseus.data import load_data
from nas_theseus.errors import UserError


def _check_standardised(data):
    x = data.train.head(len(data.train))[0]
    dims = [0] if x.dim() == 2 else [0, *range(2, x.dim())]
    assert torch.allclose(x.mean(dim=dims), torch.zeros(1), atol=1e-4)
    assert torch.allclose(x.std(dim=dims), torch.ones(1), atol=1e-3)


def test_npz_with_and_without_a_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(3.0, 2.0, size=(200, 5)).astype(np.float32), rng.integers(0, 4, 200)
    np.savez(tmp_path / "a.npz", X=x, y=y)
    data = load_data("npz", path=str(tmp_path / "a.npz"))
    assert len(data.train) + len(data.val) + len(data.test) == 200 and data.num_classes == 4
    assert data.sample_shape == (5,)
    _check_standardised(data)
    xt, yt = rng.normal(size=(30, 2, 6)).astype(np.float32), rng.integers(0, 3, 30)
    np.savez(tmp_path / "b.npz", X=rng.normal(size=(90, 2, 6)), y=rng.integers(0, 3, 90), X_test=xt, y_test=yt)
    data = load_data("npz", path=str(tmp_path / "b.npz"))
    assert len(data.test) == 30 and len(data.train) + len(data.val) == 90 and data.sample_shape == (2, 6)
    _check_standardised(data)  # per channel, from the training split only
    assert not torch.allclose(data.test.x.mean(), torch.zeros(1), atol=1e-6)


@pytest.mark.parametrize("arrays, message", [
    ({"X": np.zeros((4, 2))}, "lacks ['y']"),
    ({"X": np.zeros((4, 2)), "y": np.zeros(3, dtype=int)}, "X has 4 rows but y has 3"),
    ({"X": np.zeros((4, 2)), "y": np.zeros(4)}, "non-negative integers"),
    ({"X": np.zeros((4, 2)), "y": np.zeros(4, dtype=int), "X_test": np.zeros((2, 2))}, "only one of"),
])
def test_bad_npz_files(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_data("npz", path=str(tmp_path / "bad.npz"))


def test_npz_options_are_checked(tmp_path):
    with pytest.raises(UserError, match="missing option 'path'"):
        load_data("npz")
    with pytest.raises(UserError, match="unknown option 'pth' \\(did you mean 'path'\\?\\)"):
        load_data("npz", pth="x.npz")
    with pytest.raises(UserError, match="no such file"):
        load_data("npz", path=str(tmp_path / "missing.npz"))


def write_fake_cifar10(folder, per_batch=20, seed=0):
    """CIFAR-10's python format: pickled dicts of uint8 (N, 3072) data and a label list."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, per_batch)
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": data,
                         b"filenames": [b"x.png"] * per_batch}, f)
    return folder


def test_cifar10_from_the_python_batches(tmp_path):
    folder = write_fake_cifar10(tmp_path / "cifar-10-batches-py")
    data = load_data("cifar10", root=str(folder))
    assert data.sample_shape == (3, 32, 32) and data.num_classes == 10
    assert len(data.train) + len(data.val) == 100 and len(data.test) == 20
    _check_standardised(data)
    assert data.train.x.dtype == torch.uint8 and data.train.dtype == torch.float32  # held as bytes
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
    batch = next(data.train.batches(16, order=order))
    assert batch.x.dtype == torch.float32 and torch.equal(batch.x, data.train.take(order[:16])[0])
    augmented = data.with_augment("standard")  # batched on the device, as tensors in memory are
    moved = next(augmented.train.batches(16, order=order, augment=augmented.augmentation, seed=1))
    assert moved.x.shape == batch.x.shape and not torch.equal(moved.x, batch.x)
    assert len(load_data("cifar10", root=str(folder), limit=50).train) < 50
    (folder / "test_batch").unlink()
    with pytest.raises(UserError, match="lacks test_batch"):
        load_data("cifar10", root=str(folder))


class _RunsCode:
    """Unpickles as a call of os.system (what a crafted data file would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_batch_that_would_run_code_is_refused_unrun(tmp_path, protocol):
    folder = write_fake_cifar10(tmp_path / "cifar-10-batches-py")
    with open(folder / "data_batch_1", "rb") as f:
        batch = pickle.load(f)
    marker = tmp_path / "pwned"
    batch[b"labels"] = _RunsCode(marker)
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump(batch, f, protocol=protocol)
    with pytest.raises(UserError, match=r"data_batch_1 is not a CIFAR-10 python batch \(refused global "
                                        r"(posix|os)\.system\); nothing in it was run"):
        load_data("cifar10", root=str(folder))
    assert not marker.exists()
    # numpy arrays pickled with either protocol still load
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({**batch, b"labels": [0] * 20}, f, protocol=protocol)
    assert len(load_data("cifar10", root=str(folder)).test) == 20


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for cls in ("cat", "dog", "emu"):
            (tmp_path / "imgs" / split / cls).mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 256, size=(10, 14, 3), dtype=np.uint8)
                Image.fromarray(a).save(tmp_path / "imgs" / split / cls / f"{i}.png")
    data = load_data("imagefolder", root=str(tmp_path / "imgs"), size=8)
    assert data.sample_shape == (3, 8, 8) and data.num_classes == 3 and len(data.test) == 12
    assert data.config["classes"] == ["cat", "dog", "emu"]
    grey = load_data("imagefolder", root=str(tmp_path / "imgs" / "train"), size=8, channels=1)
    assert grey.sample_shape == (1, 8, 8) and len(grey.train) + len(grey.val) + len(grey.test) == 36
    with pytest.raises(UserError, match="no class subfolders"):
        load_data("imagefolder", root=str(tmp_path / "imgs" / "train" / "cat"))
