"""Hugging Face image datasets from local copies (`hfimages`): a save_to_disk folder and parquet files read
lazily, the same rows as in memory, carved splits, a fingerprint that reads no image, one line for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas_theseus.convert import Candidate, ConvertConfig, convert
from nas_theseus.data import DatasetSplit, Split, load_data
from nas_theseus.errors import UserError
from nas_theseus.targets import BlockSpec
from nas_theseus.testing import tiny_guide
from nas_theseus.training import FitConfig


def make_dataset(datasets, n=30, seed=0, size=8):
    from PIL import Image

    rng = np.random.default_rng(seed)
    labels = [i % 3 for i in range(n)]
    images = [Image.fromarray(np.clip(rng.normal(60 + 60 * c, 30, size=(size, size)), 0, 255).astype(np.uint8))
              for c in labels]
    features = datasets.Features({"img": datasets.Image(), "fine": datasets.ClassLabel(names=["a", "b", "c"]),
                                  "note": datasets.Value("string")})
    return datasets.Dataset.from_dict({"img": images, "fine": labels, "note": ["x"] * n}, features=features)


def test_a_saved_dataset_dict_reads_lazily_the_rows_it_holds_in_memory(hf_offline, tmp_path):
    datasets = hf_offline
    folder = tmp_path / "saved"
    datasets.DatasetDict({"train": make_dataset(datasets, 40), "test": make_dataset(datasets, 12, seed=1)}) \
        .save_to_disk(str(folder))
    opts = dict(path=str(folder), image="img", label="fine", size=8, channels=1)
    lazy = load_data("hfimages", **opts, in_memory=False, workers=0)
    held = load_data("hfimages", **opts, in_memory=True)
    assert isinstance(lazy.train, DatasetSplit) and isinstance(held.train, Split)
    assert len(lazy.test) == 12 and len(lazy.train) + len(lazy.val) == 40  # validation carved out of train
    assert lazy.config["classes"] == ["a", "b", "c"] and lazy.num_classes == 3
    order = torch.randperm(len(held.train), generator=torch.Generator().manual_seed(0))
    for a, b in zip(lazy.train.batches(7, order=order), held.train.batches(7, order=order)):
        assert torch.equal(a.y, b.y) and torch.allclose(a.x, b.x)
    assert load_data("hfimages", **opts, in_memory=False).fingerprint == lazy.fingerprint
    augmented = load_data("hfimages", **opts, in_memory=False, workers=0, augment="standard")
    assert augmented.fingerprint != lazy.fingerprint


def test_parquet_files_and_a_single_saved_dataset_carve_their_missing_splits(hf_offline, tmp_path):
    datasets = hf_offline
    ds = make_dataset(datasets, 60)
    (tmp_path / "pq").mkdir()
    ds.to_parquet(str(tmp_path / "pq" / "train-00000-of-00001.parquet"))
    ds.save_to_disk(str(tmp_path / "one"))
    for path in (tmp_path / "pq", tmp_path / "one"):
        data = load_data("hfimages", path=str(path), image="img", label="fine", size=8, channels=1,
                         in_memory=False, workers=0)
        assert len(data.train) + len(data.val) + len(data.test) == 60 and len(data.test) == 12
        rows = [set(data.train.dataset.rows), set(data.val.dataset.rows), set(data.test.dataset.rows)]
        assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])


def test_bad_hf_image_data_is_one_line(hf_offline, tmp_path):
    datasets = hf_offline
    make_dataset(datasets).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(UserError, match=r"has no column 'image', 'label' \(columns: img, fine, note\)"):
        load_data("hfimages", path=str(tmp_path / "saved"))
    with pytest.raises(UserError, match="must hold non-negative integer labels, found 'x'"):
        load_data("hfimages", path=str(tmp_path / "saved"), image="img", label="note")
    with pytest.raises(UserError, match="holds neither a dataset saved with save_to_disk"):
        load_data("hfimages", path=str(tmp_path))
    with pytest.raises(UserError, match="no such folder"):
        load_data("hfimages", path=str(tmp_path / "missing"))


def test_a_conversion_streams_a_hf_image_dataset_with_augmentation(hf_offline, tmp_path):
    datasets = hf_offline
    make_dataset(datasets, 90).save_to_disk(str(tmp_path / "saved"))
    data = load_data("hfimages", path=str(tmp_path / "saved"), image="img", label="fine", size=8, channels=1,
                     in_memory=False, workers=1, augment="standard")
    cfg = ConvertConfig(steps_per_stage=6, stage_stop="fixed", batch_size=16, probe_size=32, heldout_size=8,
                        finetune=FitConfig(max_epochs=1, patience=1))
    r = convert(tiny_guide("conv2d"), Candidate((BlockSpec.of("mlp", width=8), None)), data, cfg, device="cpu",
                progress=False)
    assert r.activations["mode"] == "stream" and 0.0 <= r.test_accuracy <= 1.0
