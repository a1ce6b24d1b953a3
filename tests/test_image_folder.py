"""Image folders read lazily through a DataLoader: the same rows as in memory, a fingerprint that reads no image,
one line for each bad input, and a conversion over a streamed folder."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from nas_theseus.convert import Candidate, ConvertConfig, convert
from nas_theseus.data import DatasetSplit, Split, load_data
from nas_theseus.errors import UserError
from nas_theseus.targets import BlockSpec
from nas_theseus.testing import tiny_guide
from nas_theseus.training import FitConfig


def write_folder(root, *, n=10, classes=("a", "b", "c"), size=(8, 8), seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(n):
            a = np.clip(rng.normal(60 + 60 * c, 30, size=(size[1], size[0])), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root


def test_a_streamed_folder_holds_the_same_rows_as_one_in_memory(tmp_path):
    root = write_folder(tmp_path / "imgs")
    lazy = load_data("imagefolder", root=str(root), size=8, channels=1, in_memory=False, workers=0)
    held = load_data("imagefolder", root=str(root), size=8, channels=1, in_memory=True)
    assert isinstance(lazy.train, DatasetSplit) and isinstance(held.train, Split)
    assert lazy.sample_shape == held.sample_shape == (1, 8, 8) and len(lazy.train) == len(held.train)
    order = torch.randperm(len(held.train), generator=torch.Generator().manual_seed(0))
    for a, b in zip(lazy.train.batches(7, order=order), held.train.batches(7, order=order)):
        assert torch.equal(a.idx.cpu(), b.idx.cpu()) and torch.equal(a.y, b.y)
        assert torch.allclose(a.x, b.x)
    assert abs(float(held.train.x.mean())) < 1e-4  # standardised with the training images' statistics
    auto = load_data("imagefolder", root=str(root), size=8, channels=1)  # small: in memory by default
    assert isinstance(auto.train, Split)


def test_the_fingerprint_reads_no_image_and_follows_the_files(tmp_path, monkeypatch):
    from nas_theseus.data import image_folder

    root = write_folder(tmp_path / "imgs")
    data = load_data("imagefolder", root=str(root), size=8, in_memory=False, workers=0)
    monkeypatch.setattr(image_folder.ImageFiles, "raw", lambda self, i: pytest.fail("an image was read"))
    first = data.fingerprint
    monkeypatch.undo()
    victim = root / "b" / "3.png"
    os.utime(victim, ns=(victim.stat().st_atime_ns, victim.stat().st_mtime_ns + 10**9))
    again = load_data("imagefolder", root=str(root), size=8, in_memory=False, workers=0)
    assert again.fingerprint != first


@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_image_is_one_line_naming_the_file(tmp_path, workers):
    root = write_folder(tmp_path / "imgs")
    data = load_data("imagefolder", root=str(root), size=8, in_memory=False, workers=workers)
    bad = next(f for f in data.train.dataset.files if f.name == "4.png")
    bad.write_bytes(b"not a png")
    with pytest.raises(UserError) as e:
        for _ in data.train.batches(8):
            pass
    assert str(e.value).startswith(f"imagefolder data: cannot read image {bad}") and "\n" not in str(e.value)


def test_bad_folders_are_one_line_each(tmp_path):
    root = write_folder(tmp_path / "imgs")
    (root / "empty").mkdir()
    with pytest.raises(UserError, match="class folder .*empty holds no images"):
        load_data("imagefolder", root=str(root))
    (root / "empty").rmdir()
    write_folder(tmp_path / "mixed", classes=("d",), size=(12, 9))
    os.replace(tmp_path / "mixed" / "d", root / "d")
    with pytest.raises(UserError, match=r"is (12x9|8x8) px but the first image is (8x8|12x9); set the `size` option"):
        load_data("imagefolder", root=str(root), size=None, in_memory=False, workers=0)  # read for the statistics
    with pytest.raises(UserError, match="in_memory must be"):
        load_data("imagefolder", root=str(root), in_memory="sometimes")


def test_a_conversion_reads_a_streamed_folder(tmp_path):
    root = write_folder(tmp_path / "imgs", n=40)
    data = load_data("imagefolder", root=str(root), size=8, channels=1, in_memory=False, workers=0)
    cfg = ConvertConfig(steps_per_stage=20, stage_stop="fixed", batch_size=16, probe_size=32, heldout_size=16,
                        finetune=FitConfig(max_epochs=2, patience=2, batch_size=16))
    r = convert(tiny_guide("conv2d", num_classes=3), Candidate((BlockSpec.of("mlp", width=8), None)), data, cfg,
                device="cpu", progress=False)
    assert r.stages[0].steps == 20 and 0.0 <= r.test_accuracy <= 1.0


@pytest.mark.parametrize("augment", ["standard", "rand-m9-mstd0.5"])
def test_images_read_from_files_are_augmented_per_image_seeded_by_pass_and_row(tmp_path, augment):
    root = write_folder(tmp_path / "imgs", n=12, size=(16, 16))
    data = load_data("imagefolder", root=str(root), size=16, in_memory=False, workers=0, augment=augment)
    order = torch.arange(len(data.train))
    plain = torch.cat([b.x for b in data.train.batches(8, order=order)])
    first = torch.cat([b.x for b in data.train.batches(8, order=order, augment=data.augmentation, seed=3)])
    in_workers = load_data("imagefolder", root=str(root), size=16, in_memory=False, workers=2, augment=augment)
    again = torch.cat([b.x for b in in_workers.train.batches(8, order=order, augment=data.augmentation, seed=3)])
    other = torch.cat([b.x for b in data.train.batches(8, order=order, augment=data.augmentation, seed=4)])
    assert torch.equal(first, again) and not torch.equal(first, other) and not torch.equal(first, plain)
    assert torch.equal(torch.cat([b.x for b in data.val.batches(8)]),
                       torch.cat([b.x for b in load_data("imagefolder", root=str(root), size=16, in_memory=False,
                                                         workers=0).val.batches(8)]))  # val: never augmented


@pytest.mark.parametrize("weights", ["train", "random"])
def test_a_guide_that_cannot_read_the_images_is_one_line_before_any_training(tmp_path, weights):
    """Real-size digits (28 px) read at the default size (32 px) into a 28-px CNN given as torch:file.py:fn."""
    from nas_theseus.guides import load_guide

    root = write_folder(tmp_path / "imgs", size=(28, 28))
    (tmp_path / "mycnn.py").write_text(
        "import torch.nn as nn\n"
        "def make_cnn(num_classes=10):\n"
        "    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, num_classes))\n")
    data = load_data("imagefolder", root=str(root), channels=1)
    with pytest.raises(UserError, match=r"guide torch:mycnn.py:make_cnn does not accept the data's samples of shape "
                                        r"\(1, 32, 32\) .*size = 32, channels = 1.*mat1 and mat2 shapes"):
        load_guide(f"torch:{tmp_path / 'mycnn.py'}:make_cnn", data, parts=["0"], weights=weights, progress=False,
                   num_classes=3)
    ok = load_data("imagefolder", root=str(root), channels=1, size=28)
    assert load_guide(f"torch:{tmp_path / 'mycnn.py'}:make_cnn", ok, parts=["0"], weights="random",
                      num_classes=3).sample_shape == (1, 28, 28)


_CONVERT = """
import json, sys
from nas_theseus.convert import Candidate, ConvertConfig, convert
from nas_theseus.data import load_data
from nas_theseus.targets import BlockSpec
from nas_theseus.testing import tiny_guide
from nas_theseus.training import FitConfig

root, checkpoints, out = sys.argv[1:4]
data = load_data("imagefolder", root=root, size=8, channels=1, in_memory=False, workers=1, augment="standard")
cfg = ConvertConfig(steps_per_stage=12, stage_stop="fixed", batch_size=8, probe_size=16, heldout_size=8,
                    activations="stream", finetune=FitConfig(max_epochs=1, patience=1))
mlp = BlockSpec.of("mlp", width=8)
r = convert(tiny_guide("conv2d"), Candidate((mlp, mlp)), data, cfg, device="cpu", progress=False,
            checkpoint_dir=checkpoints)
with open(out, "w") as f:
    json.dump({"curves": [s.loss_curve for s in r.stages], "resumed": [s.resumed for s in r.stages],
               "test": r.test_accuracy}, f)
"""


@pytest.mark.slow
def test_a_streamed_augmented_conversion_killed_mid_stage_resumes_as_an_uninterrupted_one(tmp_path):
    """SIGKILL in the second stage of a conversion reading a folder through a DataLoader worker, with
    augmentation: the rerun resumes the finished stage and redraws the killed one's batches and augmentations
    (the stage's generator is seeded by its key, each image's augmentation by (pass, row)), so its curves and
    test accuracy equal an uninterrupted run's."""
    import json
    import signal
    import subprocess
    import sys

    root = write_folder(tmp_path / "imgs", n=16)
    script = tmp_path / "convert.py"
    script.write_text(_CONVERT)

    def run(checkpoints, out, **env):
        return subprocess.run([sys.executable, str(script), str(root), str(tmp_path / checkpoints),
                               str(tmp_path / out)], env={**os.environ, **env}, capture_output=True, text=True,
                              timeout=600)

    whole = run("whole", "whole.json")
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = run("killed", "never.json", NAS_THESEUS_TEST_HOOK="stage_step:kill:18")  # step 6 of stage 2
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (tmp_path / "never.json").exists()
    again = run("killed", "again.json")
    assert again.returncode == 0, again.stderr[-3000:]
    whole, again = (json.loads((tmp_path / f).read_text()) for f in ("whole.json", "again.json"))
    assert whole["resumed"] == [False, False] and again["resumed"] == [True, False]
    assert again["curves"] == whole["curves"] and again["test"] == whole["test"]
