"""Packed image data (`packed = true`): the folder's rows and augmented batches bit for bit, a conversion's curves
as from the folder, a pack reused by content, and faults: a corrupt image, a shard off its manifest, a full disk,
a pack killed half way."""

from __future__ import annotations

import errno
import json
import logging
import os
import warnings

import pytest
import torch
from test_image_folder import write_folder

from nas_theseus.cli import main
from nas_theseus.convert import Candidate, ConvertConfig, convert
from nas_theseus.data import Split, image_pack, load_data, packed_images
from nas_theseus.data.packed_images import PackedImages
from nas_theseus.errors import UserError
from nas_theseus.targets import BlockSpec
from nas_theseus.testing import tiny_guide
from nas_theseus.training import FitConfig


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_THESEUS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _packs(cache):
    return sorted((cache / "packed").iterdir()) if (cache / "packed").is_dir() else []


@pytest.mark.parametrize("channels", [1, 3])
def test_packed_batches_are_the_folders_bit_for_bit_augmented_or_not(tmp_path, cache, channels):
    root = write_folder(tmp_path / "imgs", n=12, size=(16, 16))
    held = load_data("imagefolder", root=str(root), size=16, channels=channels, in_memory=True, augment="standard")
    packed = load_data("imagefolder", root=str(root), size=16, channels=channels, packed=True, augment="standard")
    assert isinstance(packed.train, PackedImages) and packed.train.x.dtype == torch.uint8
    assert packed.config["packed"] and packed.sample_shape == held.sample_shape
    for name in ("train", "val", "test"):
        a, b = getattr(held, name), getattr(packed, name)
        order = torch.randperm(len(a), generator=torch.Generator().manual_seed(1))
        for aug in (None, held.augmentation):
            xa = list(a.batches(5, order=order, augment=aug, seed=3))
            xb = list(b.batches(5, order=order, augment=aug, seed=3))
            assert all(torch.equal(p.x, q.x) and torch.equal(p.y, q.y) for p, q in zip(xa, xb))
        assert torch.equal(a.take(order[:4])[0], b.take(order[:4])[0])


def converted_each(datasets, tmp_path) -> list:
    """The same small conversion (a 3-class conv2d guide, part 1 → MLP(8)) over each of ``datasets``."""
    cfg = ConvertConfig(steps_per_stage=12, stage_stop="fixed", batch_size=16, probe_size=32, heldout_size=16,
                        finetune=FitConfig(max_epochs=2, patience=2, batch_size=16))
    return [convert(tiny_guide("conv2d", num_classes=3), Candidate((BlockSpec.of("mlp", width=8), None)), data,
                    cfg, device="cpu", progress=False, checkpoint_dir=tmp_path / f"ck{i}")
            for i, data in enumerate(datasets)]


def test_a_conversion_read_packed_has_the_folders_curves(tmp_path, cache):
    root = write_folder(tmp_path / "imgs", n=30, size=(8, 8))
    opts = dict(root=str(root), size=8, channels=1, augment="standard")
    held, packed = load_data("imagefolder", **opts, in_memory=True), load_data("imagefolder", **opts, packed=True)
    # content keys seed each stage: the same key for both readers, so that only the reader differs
    object.__setattr__(packed, "_fingerprint", held.fingerprint)
    runs = converted_each((held, packed), tmp_path)
    assert [s.loss_curve for s in runs[0].stages] == [s.loss_curve for s in runs[1].stages]
    assert runs[0].finetune.train_loss == runs[1].finetune.train_loss
    assert runs[0].finetune.val_accuracy == runs[1].finetune.val_accuracy
    assert runs[0].test_accuracy == runs[1].test_accuracy


def test_a_second_load_reuses_the_pack_and_other_options_pack_anew(tmp_path, cache, monkeypatch):
    root = write_folder(tmp_path / "imgs")
    first = load_data("imagefolder", root=str(root), size=8, packed=True)
    with monkeypatch.context() as m:
        m.setattr(image_pack, "_write_shard", lambda *a: pytest.fail("packed again"))
        again = load_data("imagefolder", root=str(root), size=8, packed=True)
    assert again.config["packed"] == first.config["packed"] and again.fingerprint == first.fingerprint
    other = load_data("imagefolder", root=str(root), size=6, packed=True)
    assert other.config["packed"] != first.config["packed"] and other.fingerprint != first.fingerprint
    assert len(_packs(cache)) == 2
    manifest = json.loads((_packs(cache)[0] / "manifest.json").read_text())
    assert {"classes", "splits", "key", "source", "source_fingerprint", "images", "bytes"} <= set(manifest)
    assert manifest["images"] == 30 and manifest["classes"] == ["a", "b", "c"]


def test_packed_auto_packs_what_would_not_be_held_in_memory(tmp_path, cache):
    root = write_folder(tmp_path / "imgs")
    assert isinstance(load_data("imagefolder", root=str(root), size=8, packed="auto").train, Split)
    assert not _packs(cache) and not isinstance(load_data("imagefolder", root=str(root), size=8).train,
                                                 PackedImages)
    assert isinstance(load_data("imagefolder", root=str(root), size=8, packed="auto", in_memory=False).train,
                      PackedImages)
    with pytest.raises(UserError, match="packed must be"):
        load_data("imagefolder", root=str(root), packed="yes")


@pytest.mark.parametrize("damage,workers", [("garbage", 0), ("truncated", 0), ("truncated", 1)])
def test_a_corrupt_image_fails_the_pack_in_one_line_naming_it(tmp_path, cache, damage, workers):
    root = write_folder(tmp_path / "imgs", size=(32, 32))
    bad = root / "b" / "4.png"
    data = bad.read_bytes()
    bad.write_bytes(b"not a png" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(UserError) as e:
        load_data("imagefolder", root=str(root), size=8, packed=True, workers=workers)
    assert str(e.value).startswith(f"imagefolder data: cannot read image {bad}") and "\n" not in str(e.value)
    assert all(not any(p.iterdir()) for p in _packs(cache))  # nothing kept, nothing trusted


def test_a_shard_off_its_manifest_is_refused_and_packed_again(tmp_path, cache):
    root = write_folder(tmp_path / "imgs")
    good = load_data("imagefolder", root=str(root), size=8, packed=True).train.x.clone()  # its map sees the damage
    shard = _packs(cache)[0] / "train.npy"
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0xFF  # the same size, another checksum
    mtime = shard.stat().st_mtime_ns
    shard.write_bytes(bytes(raw))
    os.utime(shard, ns=(mtime + 10**9, mtime + 10**9))  # rewritten: a later modification time, whatever the clock
    with pytest.warns(UserWarning, match=r"train.npy does not match its manifest \(another sha256"):
        again = load_data("imagefolder", root=str(root), size=8, packed=True)
    assert torch.equal(again.train.x, good)
    shard.write_bytes(shard.read_bytes()[:-7])
    with pytest.warns(UserWarning, match=r"train.npy does not match its manifest \(\d+ bytes, expected"):
        load_data("imagefolder", root=str(root), size=8, packed=True)


def test_a_shard_is_hashed_once_then_trusted_while_its_size_and_time_stay(tmp_path, cache, monkeypatch):
    root = write_folder(tmp_path / "imgs")
    load_data("imagefolder", root=str(root), size=8, packed=True)  # packed: its shards' stamps written with it
    hashed = []
    monkeypatch.setattr(packed_images, "file_sha256", lambda p: hashed.append(p.name) or "")
    load_data("imagefolder", root=str(root), size=8, packed=True)
    assert hashed == []  # opened again: every shard trusted by its stamp, none read for its sha256
    shard = _packs(cache)[0] / "val.npy"
    mtime = shard.stat().st_mtime_ns
    os.utime(shard, ns=(mtime + 10**9, mtime + 10**9))  # touched: hashed again (here: refused, the hash is fake)
    with pytest.warns(UserWarning, match=r"val.npy does not match its manifest \(another sha256"):
        load_data("imagefolder", root=str(root), size=8, packed=True)
    assert hashed == ["val.npy"]


def test_a_full_disk_leaves_the_source_usable_and_says_so(tmp_path, cache, monkeypatch):
    root = write_folder(tmp_path / "imgs")
    calls = []

    def full(f, digest, data):
        calls.append(len(data))
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        f.write(data)

    monkeypatch.setattr(image_pack, "_write_block", full)
    with pytest.warns(UserWarning) as w:
        data = load_data("imagefolder", root=str(root), size=8, packed=True)
    [line] = [str(x.message) for x in w]
    assert "No space left on device" in line and "source is untouched and read unpacked" in line
    assert "\n" not in line and isinstance(data.train, Split) and not data.config.get("packed")
    assert all(not any(p.iterdir()) for p in _packs(cache))  # what was written is freed
    with pytest.warns(UserWarning):
        assert main(["data", "pack", str(root), "--option", "size=8"]) == 2  # the CLI: one error line


@pytest.fixture
def read_only(monkeypatch):
    """Make a pack folder and its files read-only. Root ignores the permission bits: then the writes that the
    bits would refuse (the stamp written or its time set) raise PermissionError as a read-only folder does."""
    made = []

    def make(folder):
        for f in [*folder.iterdir(), folder]:
            made.append((f, f.stat().st_mode))
            f.chmod(0o555 if f.is_dir() else 0o444)
        if os.access(folder, os.W_OK):  # root
            refused = PermissionError(errno.EACCES, "Permission denied")
            write, utime = packed_images.atomic_write_text, os.utime

            def no_write(path, *a, **k):
                if os.path.dirname(path) == str(folder):
                    raise refused
                return write(path, *a, **k)

            def no_utime(path, *a, **k):
                if os.path.dirname(path) == str(folder):
                    raise refused
                return utime(path, *a, **k)

            monkeypatch.setattr(packed_images, "atomic_write_text", no_write)
            monkeypatch.setattr(os, "utime", no_utime)

    yield make
    for f, mode in reversed(made):
        f.chmod(mode)


@pytest.fixture
def hashed(monkeypatch):
    """The shards' names as they are hashed (for real)."""
    names, real = [], packed_images.file_sha256
    monkeypatch.setattr(packed_images, "file_sha256", lambda p: names.append(p.name) or real(p))
    return names


@pytest.fixture
def logged(caplog, monkeypatch):
    """The package's log records of level DEBUG and above (its logger passes none on to the root by default)."""
    monkeypatch.setattr(logging.getLogger("nas_theseus"), "propagate", True)
    with caplog.at_level(logging.DEBUG, logger="nas_theseus.data.packed_images"):
        yield caplog


def test_a_read_only_pack_is_read_trusted_by_its_stamp_without_a_warning(tmp_path, cache, read_only, hashed,
                                                                           logged):
    root = write_folder(tmp_path / "imgs")
    first = load_data("imagefolder", root=str(root), size=8, packed=True)
    [folder] = _packs(cache)
    read_only(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "could not pack into ...": the pack is complete and readable
        again = load_data("imagefolder", root=str(root), size=8, packed=True)
    assert isinstance(again.train, PackedImages) and again.config["packed"] == str(folder)
    assert torch.equal(again.train.x, first.train.x) and hashed == []  # trusted by its stamp, read unhashed
    [record] = logged.records  # only the last use went unrecorded: a debug record, not a line on the terminal
    assert record.levelno == logging.DEBUG and "could not record the last use" in record.getMessage()


def test_a_read_only_pack_never_verified_is_hashed_on_every_open(tmp_path, cache, read_only, hashed, logged):
    root = write_folder(tmp_path / "imgs")
    first = load_data("imagefolder", root=str(root), size=8, packed=True)
    [folder] = _packs(cache)
    (folder / "verified.json").unlink()  # e.g. packed by an older version, then shared read-only
    read_only(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):
            again = load_data("imagefolder", root=str(root), size=8, packed=True)
            assert isinstance(again.train, PackedImages) and torch.equal(again.train.x, first.train.x)
    assert hashed == ["train.npy", "val.npy", "test.npy"] * 2  # never trusted unread: no stamp could be recorded
    [note] = logged.records  # one note for the process, not one per open
    assert note.levelno == logging.INFO and "hashed again on every open" in note.getMessage()
    assert not (folder / "verified.json").exists()


def test_a_pack_killed_half_way_leaves_no_trusted_manifest(tmp_path, cache, monkeypatch):
    root = write_folder(tmp_path / "imgs")
    real, calls = image_pack._write_block, []

    def killed(f, digest, data):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        real(f, digest, data)

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(image_pack, "_write_block", killed)
        load_data("imagefolder", root=str(root), size=8, packed=True)
    [folder] = _packs(cache)
    assert not (folder / "manifest.json").exists()
    (folder / "train.npy").write_bytes(b"\x93NUMPY half a shard a SIGKILL left")  # no manifest: never read
    data = load_data("imagefolder", root=str(root), size=8, packed=True)
    assert isinstance(data.train, PackedImages) and (folder / "manifest.json").is_file()
    held = load_data("imagefolder", root=str(root), size=8, in_memory=True)
    assert torch.equal(data.train.head(30)[0], held.train.head(30)[0])


def test_data_pack_on_the_command_line_packs_once_for_the_study(tmp_path, cache, capsys):
    root = write_folder(tmp_path / "imgs")
    assert main(["data", "pack", str(root), "--option", "size=8", "--option", "channels=1"]) == 0
    out = capsys.readouterr().out
    assert "packed in" in out and len(_packs(cache)) == 1
    data = load_data("imagefolder", root=str(root), size=8, channels=1, packed=True)
    assert data.config["packed"] in out and len(_packs(cache)) == 1
    assert main(["data", "pack", str(root), "--option", "size"]) == 2


def test_a_hugging_face_image_dataset_packs_like_a_folder(hf_offline, tmp_path, cache):
    from test_hf_images import make_dataset

    datasets = hf_offline
    make_dataset(datasets, 40).save_to_disk(str(tmp_path / "saved"))
    opts = dict(path=str(tmp_path / "saved"), image="img", label="fine", size=8, channels=1)
    held, packed = load_data("hfimages", **opts, in_memory=True), load_data("hfimages", **opts, packed=True)
    assert isinstance(packed.train, PackedImages) and packed.config["classes"] == ["a", "b", "c"]
    for name in ("train", "val", "test"):
        a, b = getattr(held, name), getattr(packed, name)
        assert torch.equal(a.head(100)[0], b.head(100)[0]) and torch.equal(a.head(100)[1], b.head(100)[1])
    assert load_data("hfimages", **opts, packed=True).config["packed"] == packed.config["packed"]


def test_data_pack_reads_a_study_files_data(tmp_path, cache, capsys):
    from pathlib import Path

    study = Path(__file__).resolve().parent.parent / "studies" / "imagefolder_cnn_to_mlp.toml"
    root = write_folder(tmp_path / "imgs")
    assert main(["data", "pack", str(study), "--option", f"root={root}", "--option", "size=8"]) == 0
    assert "sample shape (3, 8, 8)" in capsys.readouterr().out and len(_packs(cache)) == 1
    assert main(["data", "pack", str(study)]) == 2  # its own root, ../data/images, is not there
    assert "imagefolder data: no such folder" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads Linux's /proc/self/maps")
def test_packed_rows_stay_on_disk_memory_mapped(tmp_path, cache):
    """Memory flat in the number of images: the shards are mapped, not read into the process."""
    root = write_folder(tmp_path / "imgs")
    data = load_data("imagefolder", root=str(root), size=8, packed=True, augment="standard")
    next(iter(data.train.batches(8, order=torch.randperm(len(data.train)), augment=data.augmentation)))
    maps = open("/proc/self/maps").read()
    assert all(f"{data.config['packed']}/{split}.npy" in maps for split in ("train", "val", "test"))
