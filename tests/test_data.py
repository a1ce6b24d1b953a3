"""Offline data: split sizes, a stratified validation carve-out, no leakage between splits."""

import torch

from nas_theseus.data import load_data, load_digits, load_mnist1d
from nas_theseus.errors import UserError


def test_mnist1d_default_split(mnist1d):
    assert len(mnist1d.train) + len(mnist1d.val) == 4000 and len(mnist1d.test) == 1000
    assert 390 <= len(mnist1d.val) <= 410
    assert mnist1d.sample_shape == (40,) and mnist1d.num_classes == 10
    assert mnist1d.train.x.dtype == torch.float32 and mnist1d.train.y.dtype == torch.long
    counts = torch.bincount(mnist1d.val.y, minlength=10)
    assert counts.min() >= 30  # stratified: every class in validation
    rows = {tuple(r.tolist()) for r in mnist1d.train.x}
    assert not any(tuple(r.tolist()) in rows for r in mnist1d.val.x)


def test_mnist1d_is_deterministic_and_restores_numpy_state():
    import numpy as np

    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a, b = load_mnist1d(num_samples=500), load_mnist1d(num_samples=500)
    assert a.fingerprint == b.fingerprint
    assert (np.random.get_state()[1] == before).all()
    assert load_mnist1d(num_samples=500, split_seed=1).fingerprint != a.fingerprint


def test_mnist1d_is_generated_once_then_read_back(tmp_path, monkeypatch):
    import mnist1d.data

    monkeypatch.setenv("NAS_THESEUS_CACHE", str(tmp_path))
    first = load_mnist1d(num_samples=300)
    (path,) = (tmp_path / "data").glob("mnist1d-*.npz")
    make_dataset = mnist1d.data.make_dataset

    def not_again(args):
        raise AssertionError("generated again")

    monkeypatch.setattr(mnist1d.data, "make_dataset", not_again)
    assert load_mnist1d(num_samples=300).fingerprint == first.fingerprint  # read from the cache
    monkeypatch.setattr(mnist1d.data, "make_dataset", make_dataset)
    path.write_bytes(b"damaged")
    assert load_mnist1d(num_samples=300).fingerprint == first.fingerprint  # generated again, and stored again
    monkeypatch.setattr(mnist1d.data, "make_dataset", not_again)
    assert load_mnist1d(num_samples=300).fingerprint == first.fingerprint


def test_digits(digits):
    assert digits.sample_shape == (1, 8, 8)
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    assert abs(digits.train.x.mean().item()) < 1e-5  # normalised with the training split's statistics


def test_load_data_by_name():
    assert load_data("digits").name == "digits"
    try:
        load_data("mnist")
    except UserError as e:
        assert "mnist1d" in str(e)
    else:
        raise AssertionError("no error for an unknown dataset")


def test_load_digits_split_seed_changes_split():
    assert load_digits(split_seed=3).fingerprint != load_digits().fingerprint
