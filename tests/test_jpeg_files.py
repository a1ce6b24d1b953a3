"""JPEG folders decoded a batch at a time on the device (`decode`), by TorchCodec or torchvision: on the CPU the
rows are Pillow's bit for bit, and augmented batches are the packed reader's; the choice per device and
augmentation; a fingerprint that names the decoder on a GPU, so caches keep its rows apart; faults in one
line."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch
from test_packed_images import converted_each

from nas_theseus.data import jpeg_files, load_data
from nas_theseus.data.augment import make_augment
from nas_theseus.data.jpeg_files import JpegFiles, jpeg_decoder
from nas_theseus.errors import UserError
from nas_theseus.guides.weights import cached_training
from nas_theseus.training import FitConfig


def write_jpegs(root, *, n=8, classes=("a", "b", "c"), size=(16, 16), grey=False, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(n):
            shape = (size[1], size[0]) if grey else (size[1], size[0], 3)
            a = np.clip(rng.normal(60 + 60 * c, 40, size=shape), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / name / f"{i}.jpg", quality=90)
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_THESEUS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(params=["torchcodec", "torchvision"])
def backend(request, monkeypatch):
    """Each decoder the toolkit can use (TorchCodec's only where it is installed)."""
    if request.param == "torchcodec" and importlib.util.find_spec("torchcodec") is None:
        pytest.skip("torchcodec is not installed (the `jpeg` extra)")
    if request.param == "torchvision":
        monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)  # its import fails: torchvision's
    jpeg_decoder.cache_clear()
    yield request.param
    jpeg_decoder.cache_clear()


def _load(root, decode, **kw):
    return load_data("imagefolder", root=str(root), in_memory=False, workers=0, decode=decode, **kw)


@pytest.mark.parametrize("channels,grey", [(3, False), (1, False), (3, True)])
def test_batches_decoded_on_the_device_are_pillows_rows_and_the_packed_augmented_batches(tmp_path, cache, backend,
                                                                                           channels, grey):
    root = write_jpegs(tmp_path / "imgs", grey=grey)
    opts = dict(size=16, channels=channels)
    pillow, tv = _load(root, "pillow", **opts), _load(root, "device", **opts)
    packed = load_data("imagefolder", root=str(root), packed=True, **opts)
    assert isinstance(tv.train, JpegFiles) and type(pillow.train) is not JpegFiles
    augment = make_augment("standard")
    for name in ("train", "val", "test"):
        a, b, c = getattr(pillow, name), getattr(tv, name), getattr(packed, name)
        order = torch.randperm(len(a), generator=torch.Generator().manual_seed(1))
        for p, q, r in zip(a.batches(5, order=order), b.batches(5, order=order), c.batches(5, order=order)):
            assert torch.equal(p.x, q.x) and torch.equal(q.x, r.x) and torch.equal(p.y, q.y)
            assert torch.equal(p.idx, q.idx)
        for q, r in zip(b.batches(5, order=order, augment=augment, seed=3),
                        c.batches(5, order=order, augment=augment, seed=3)):
            assert torch.equal(q.x, r.x) and torch.equal(q.y, r.y)


def test_a_resize_on_the_device_is_pillows_within_rounding(tmp_path, cache, backend):
    root = write_jpegs(tmp_path / "imgs", size=(20, 14))
    pillow, tv = _load(root, "pillow", size=12), _load(root, "device", size=12)
    std = torch.as_tensor(pillow.train.dataset.std).view(1, -1, 1, 1)
    for p, q in zip(pillow.train.batches(8), tv.train.batches(8)):
        assert p.x.shape == q.x.shape == (len(p.x), 3, 12, 12)
        levels = ((p.x - q.x) * std * 255).abs()  # in 8-bit levels
        assert float(levels.mean()) < 0.5 and float(levels.max()) <= 3, (levels.mean(), levels.max())


def test_auto_decodes_on_the_device_on_cuda_and_with_pillow_elsewhere(tmp_path, cache):
    root = write_jpegs(tmp_path / "imgs")
    split = _load(root, "auto", size=16).train
    assert isinstance(split, JpegFiles)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert split.batched_on(cuda, None) and split.batched_on(cuda, make_augment("standard"))
    assert not split.batched_on(cpu, None)
    assert not split.batched_on(cuda, make_augment("rand-m9-mstd0.5"))  # one image at a time: Pillow
    forced = _load(root, "device", size=16).train
    assert forced.batched_on(cpu, None)
    with pytest.raises(UserError, match="one decoded image at a time"):
        forced.batched_on(cpu, make_augment("rand-m9-mstd0.5"))
    assert type(_load(root, "pillow", size=16).train) is not JpegFiles


def test_device_decoding_with_a_timm_policy_is_refused_when_the_data_are_loaded(tmp_path, cache):
    root = write_jpegs(tmp_path / "imgs")
    policy = "rand-m9-mstd0.5"
    with pytest.raises(UserError) as e:
        _load(root, "device", size=16, augment=policy)  # no batch read: said at load, as a study file is checked
    line = str(e.value)
    assert "\n" not in line and f"augment = '{policy}'" in line and 'decode = "device"' in line
    assert 'use decode = "auto" or "pillow"' in line
    assert isinstance(_load(root, "auto", size=16, augment=policy).train, JpegFiles)  # Pillow decodes there


def test_the_fingerprint_names_the_decoder_on_a_gpu_and_stays_pillows_on_the_cpu(tmp_path, cache):
    root = write_jpegs(tmp_path / "imgs")
    pillow = _load(root, "pillow", size=16)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # no GPU needed: the fingerprint reads no batch
    for decode in ("auto", "device"):
        data = _load(root, decode, size=16)
        assert data.fingerprint_on(cpu) == data.fingerprint == pillow.fingerprint == pillow.fingerprint_on(cuda)
        assert data.fingerprint_on(cuda) != data.fingerprint  # decoded by nvJPEG there: not Pillow's rows
    plain, augmented = _load(root, "auto", size=16), _load(root, "auto", size=16, augment="standard")
    assert augmented.fingerprint_on(cuda) not in (augmented.fingerprint, plain.fingerprint_on(cuda))


def test_no_cache_mixes_rows_decoded_on_a_gpu_with_pillows(tmp_path, cache, monkeypatch):
    """No GPU here: the decision is faked, rows decoded on the CPU taken for nvJPEG's; a trained guide and a
    conversion's stage checkpoints (keyed by the data's fingerprint on their device) are then not reused."""
    root = write_jpegs(tmp_path / "imgs", n=10, size=(8, 8))
    data = load_data("imagefolder", root=str(root), size=8, channels=1, in_memory=False, workers=0, decode="device")

    def guide_key():
        return cached_training(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)), name="tiny",
                               key_info={"arch": 1}, data=data, fit=FitConfig(max_epochs=1, batch_size=16), seed=0,
                               device="cpu", progress=False)

    key, [first] = guide_key(), converted_each((data,), tmp_path)
    assert not any(s.resumed for s in first.stages)
    with monkeypatch.context() as m:
        m.setattr(jpeg_files, "as_pillow_on", lambda device: False)
        assert guide_key() != key  # the guide trained on Pillow's rows is not taken for one trained on nvJPEG's
        [off] = converted_each((data,), tmp_path)  # the same checkpoint folder
    assert not any(s.resumed for s in off.stages)  # nor are Pillow's rows' stages
    [again] = converted_each((data,), tmp_path)
    assert all(s.resumed for s in again.stages) and guide_key() == key  # on the CPU: the same keys as ever


def test_a_folder_with_other_images_is_read_by_pillow_or_refused_in_one_line(tmp_path, cache):
    from PIL import Image

    root = write_jpegs(tmp_path / "imgs")
    Image.new("RGB", (16, 16)).save(root / "a" / "extra.png")
    assert type(_load(root, "auto", size=16).train) is not JpegFiles
    with pytest.raises(UserError, match=r"decodes JPEG files only, but .*extra\.png is not one"):
        _load(root, "device", size=16)
    with pytest.raises(UserError, match="decode must be one of"):
        _load(root, "nvjpeg", size=16)


def test_a_corrupt_jpeg_is_named_in_one_line(tmp_path, cache, backend):
    root = write_jpegs(tmp_path / "imgs")
    data = _load(root, "device", size=16)
    bad = root / "b" / "3.jpg"  # damaged after the load, which read the training images' statistics with Pillow
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(UserError, match=r"cannot decode .*3\.jpg as a JPEG") as e:
        for split in (data.train, data.val, data.test):
            list(split.batches(64))
    assert "\n" not in str(e.value)


def test_a_conversion_decoded_on_the_device_has_the_packed_curves(tmp_path, cache):
    root = write_jpegs(tmp_path / "imgs", n=10, size=(8, 8))
    opts = dict(root=str(root), size=8, channels=1, augment="standard")
    tv = load_data("imagefolder", **opts, in_memory=False, workers=0, decode="device")
    packed = load_data("imagefolder", **opts, packed=True)
    object.__setattr__(packed, "_fingerprint", tv.fingerprint)  # the same content keys: only the reader differs
    runs = converted_each((tv, packed), tmp_path)
    assert [s.loss_curve for s in runs[0].stages] == [s.loss_curve for s in runs[1].stages]
    assert runs[0].finetune.train_loss == runs[1].finetune.train_loss
    assert runs[0].test_accuracy == runs[1].test_accuracy
