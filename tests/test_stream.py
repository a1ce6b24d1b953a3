"""The guide on the fly (`activations = "stream"`) and augmentation: the same batches as the cache where
augmentation is off, the choice `auto` makes and why, augmented rows reaching guide and targets alike, resume."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from nas_theseus.convert import Candidate, ConvertConfig, convert
from nas_theseus.convert import stages as stages_module
from nas_theseus.convert.activations import choose_activations
from nas_theseus.convert.stream import GuideStream
from nas_theseus.data import Split, TaskData, load_mnist1d
from nas_theseus.errors import UserError
from nas_theseus.targets import BlockSpec
from nas_theseus.testing import tiny_guide
from nas_theseus.training import FitConfig
from nas_theseus.utils import testhooks

MLP16 = BlockSpec.of("mlp", width=16)
FT = FitConfig(max_epochs=1, patience=1)


@pytest.fixture(scope="module")
def data():
    return load_mnist1d(num_samples=1200)


def images(n=240, seed=0) -> TaskData:
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(10, 1, 8, 8, generator=g)

    def split(m):
        y = torch.randint(0, 10, (m,), generator=g)
        return Split(protos[y] + 0.5 * torch.randn(m, 1, 8, 8, generator=g), y)

    return TaskData("images8", split(n), split(60), split(60), 10)


@pytest.mark.parametrize("cand", [Candidate((MLP16, None, MLP16), order=(2, 0)),
                                  Candidate((MLP16, None), partition=(2, 1))])
def test_streamed_stages_equal_cached_ones_and_reuse_their_checkpoints(data, cand, tmp_path):
    """With augmentation off the stream draws the cache's rows in the cache's order, and the guide's chain gives
    the activations its hooks gave: on the CPU the loss curves are bit-identical, so the stage keys leave the
    feed out and a streamed run resumes from a cached run's checkpoints."""
    cfg = ConvertConfig(steps_per_stage=60, batch_size=64, probe_size=128, finetune=FT)
    cached = convert(tiny_guide("conv1d"), cand, data, replace(cfg, activations="cache"),
                     device="cpu", progress=False, checkpoint_dir=tmp_path)
    fresh = convert(tiny_guide("conv1d"), cand, data, replace(cfg, activations="stream"),
                    device="cpu", progress=False)
    assert cached.activations["mode"] == "cache" and fresh.activations["mode"] == "stream"
    assert [s.loss_curve for s in cached.stages] == [s.loss_curve for s in fresh.stages]
    assert fresh.test_accuracy == cached.test_accuracy
    again = convert(tiny_guide("conv1d"), cand, data, replace(cfg, activations="stream"),
                    device="cpu", progress=False, checkpoint_dir=tmp_path)
    assert all(s.resumed for s in again.stages) and again.finetune_resumed


def test_auto_caches_without_augmentation_within_the_budget_and_streams_otherwise(data, monkeypatch):
    guide = tiny_guide("conv1d")
    mode, why = choose_activations("auto", data, guide)
    assert mode == "cache" and "augmentation off" in why
    monkeypatch.setenv("NAS_THESEUS_ACTIVATION_MEMORY", "0.0001")
    mode, why = choose_activations("auto", data, guide)
    assert mode == "stream" and "over the memory budget" in why
    monkeypatch.delenv("NAS_THESEUS_ACTIVATION_MEMORY")
    augmented = images().with_augment("standard")
    assert choose_activations("auto", augmented, tiny_guide("conv2d"))[0] == "stream"
    with pytest.raises(UserError, match="activations = \"cache\" holds the guide's activations of the rows as"):
        choose_activations("cache", augmented, tiny_guide("conv2d"))
    with pytest.raises(UserError, match="augment = 'standard' is for images"):
        data.with_augment("standard")
    with pytest.raises(UserError, match="transforms one decoded image at a time"):
        images().with_augment("rand-m9-mstd0.5")
    with pytest.raises(UserError, match="neither none, standard, crop nor a timm auto-augment policy"):
        images().with_augment("banana")


def test_augmentation_is_batched_seeded_and_only_for_training_passes():
    d = images().with_augment("standard")
    order = torch.arange(len(d.train))
    plain = next(d.train.batches(32, order=order))
    one = next(d.train.batches(32, order=order, augment=d.augmentation, seed=1))
    same = next(d.train.batches(32, order=order, augment=d.augmentation, seed=1))
    other = next(d.train.batches(32, order=order, augment=d.augmentation, seed=2))
    assert one.x.shape == plain.x.shape and torch.equal(one.x, same.x) and not torch.equal(one.x, other.x)
    assert not torch.equal(one.x, plain.x) and torch.equal(one.y, plain.y)
    assert d.fingerprint != images().fingerprint  # what is trained on it differs: its keys do too


def test_the_guide_and_the_targets_see_the_same_augmented_batch(monkeypatch):
    """A relearned stem reads the input rows the guide reads, both augmented."""
    d = images().with_augment("standard")
    seen = {"guide": [], "targets": []}
    original_upto = GuideStream.stage_batches

    def spy_feed(self, *args, **kwargs):
        for x, acts in original_upto(self, *args, **kwargs):
            seen["guide"].append(x)
            yield x, acts

    original_forward = stages_module._forward_outputs

    def spy_forward(hybrid, stage, x, acts):
        if torch.is_grad_enabled():
            seen["targets"].append(x)
        return original_forward(hybrid, stage, x, acts)

    monkeypatch.setattr(GuideStream, "stage_batches", spy_feed)
    monkeypatch.setattr(stages_module, "_forward_outputs", spy_forward)
    cfg = ConvertConfig(steps_per_stage=8, stage_stop="fixed", batch_size=32, probe_size=64, heldout_size=32,
                        finetune=FT)
    r = convert(tiny_guide("conv2d"), Candidate((BlockSpec.of("mlp", width=8), None), stem="relearn"), d, cfg,
                device="cpu", progress=False)
    assert r.activations["mode"] == "stream" and len(seen["targets"]) == 8
    assert all(torch.equal(a, b) for a, b in zip(seen["guide"], seen["targets"]))
    rows = {tuple(x.flatten().tolist()) for x in d.train.x}
    assert not all(tuple(x.flatten().tolist()) in rows for x in seen["targets"][0])  # augmented, not the rows


def test_a_streamed_stage_interrupted_and_resumed_ends_as_an_uninterrupted_one(data, tmp_path, monkeypatch):
    """Stage checkpoints hold finished stages; an interrupted stage starts again from its key-seeded generator,
    so it draws the batches an uninterrupted run draws."""
    cand = Candidate((MLP16, MLP16, None))
    cfg = ConvertConfig(steps_per_stage=40, stage_stop="fixed", batch_size=64, probe_size=128, finetune=FT,
                        activations="stream")
    whole = convert(tiny_guide("conv1d"), cand, data, cfg, device="cpu", progress=False)
    monkeypatch.setenv("NAS_THESEUS_TEST_HOOK", "stage_step:interrupt:55")  # in the second stage
    testhooks.reset()
    with pytest.raises(KeyboardInterrupt):
        convert(tiny_guide("conv1d"), cand, data, cfg, device="cpu", progress=False, checkpoint_dir=tmp_path)
    monkeypatch.delenv("NAS_THESEUS_TEST_HOOK")
    resumed = convert(tiny_guide("conv1d"), cand, data, cfg, device="cpu", progress=False, checkpoint_dir=tmp_path)
    assert [s.resumed for s in resumed.stages] == [True, False]
    assert [s.loss_curve for s in resumed.stages] == [s.loss_curve for s in whole.stages]
    assert resumed.test_accuracy == whole.test_accuracy


def test_a_study_records_where_its_activations_came_from(tmp_path):
    from test_study_cli import load, write_study

    from nas_theseus.cli import main

    study_file = write_study(tmp_path, n_trials=1)
    assert main(["run", str(study_file), "--workdir", str(tmp_path / "wd"), "--no-progress", "--set",
                 'convert.activations="stream"']) == 0
    trial = load(tmp_path / "wd").trials[0]
    assert trial.user_attrs["activations"] == {"mode": "stream", "why": "asked for (activations = \"stream\")"}
    assert not list((tmp_path / "wd" / "cache").glob("activations-*"))  # nothing cached for a streamed study


def test_a_channels_last_guide_streams_the_same_activations():
    """ConvertConfig.channels_last (on CUDA) puts the streamed guide and its image batches in channels_last:
    a memory format, so the same values (tried here on the CPU, whose convolutions take it too)."""
    d = images(64).with_augment("standard")
    guide = tiny_guide("conv2d")
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    plain = next(GuideStream(guide, d).stage_batches(d, 16, gen(), "cpu", {1, 2}, False))[1]
    last = GuideStream(guide, d, channels_last=True)
    assert last.channels_last and guide.parts[0].module[0].weight.is_contiguous(memory_format=torch.channels_last)
    converted = next(last.stage_batches(d, 16, gen(), "cpu", {1, 2}, False))[1]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain[1:], converted[1:]))
    assert not GuideStream(tiny_guide("conv1d"), load_mnist1d(num_samples=200), channels_last=True).channels_last


def test_crop_is_standard_without_the_flip():
    """`crop` draws standard's crops and never mirrors: in images whose every row reads 1..8 left to right (0 is
    the crop's padding), no row of a cropped image reads right to left; with `standard` about half do."""
    x = torch.arange(1.0, 9.0).repeat(64, 1, 8, 1)
    rows = Split(x, torch.zeros(64, dtype=torch.long))

    def mirrored(augment: str) -> int:
        out = next(rows.batches(64, order=torch.arange(64), augment=images().with_augment(augment).augmentation,
                                seed=0)).x
        assert not torch.equal(out, x)
        middle = [r[r > 0] for r in out[:, 0, 4]]  # the middle row's pixels, padding left out
        return sum(bool((r[1:] < r[:-1]).all()) for r in middle)

    assert mirrored("crop") == 0 and 16 < mirrored("standard") < 48
