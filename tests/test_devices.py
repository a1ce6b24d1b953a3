"""Devices right by construction, checked on the CPU with PyTorch's ``meta`` device standing in for a GPU (how:
tests/meta_device.py; every shipped study there: tests/test_meta_studies.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from meta_device import META, MixedDevices, device_guard, one_device, until_a_value_is_read

from nas_theseus.convert import Candidate, ConvertConfig, GuideActivations, Hybrid
from nas_theseus.convert.baseline import scratch_model
from nas_theseus.errors import UserError
from nas_theseus.study.config import config_from_dict
from nas_theseus.study.context import build_context
from nas_theseus.targets import BlockSpec
from nas_theseus.testing import tiny_guide
from nas_theseus.training import evaluate
from nas_theseus.utils.devices import canonical_device, devices_of, resolve_device

SPACE = Path(__file__).resolve().parent.parent / "search_spaces" / "mnist1d_cnn_to_mlp.py"
MLP8 = BlockSpec.of("mlp", width=8)


def test_the_guide_lives_on_the_study_device_from_build_context():
    config = config_from_dict({"study": {"name": "s", "search_space": str(SPACE), "device": "meta"},
                               "guide": {"weights": "random"}, "data": {"options": {"num_samples": 600}}},
                              base_dir=".")
    ctx = build_context(config, progress=False)
    assert ctx.device == "meta" and one_device(ctx.guide.module) == META
    assert {one_device(m) for m in (ctx.guide.stem, ctx.guide.head, *(p.module for p in ctx.guide.parts))
            if devices_of(m)} == {META}


def test_hybrids_and_deploy_networks_are_built_on_the_guides_device():
    guide = tiny_guide("conv1d").to(META)
    for cand in (Candidate((MLP8, None, MLP8), order=(2, 0), head="guide"), Candidate((None, MLP8, None))):
        hybrid = Hybrid(guide, cand, ConvertConfig())
        hybrid.swap_in(cand.swap_order)  # adapters made later are made there too
        assert one_device(hybrid) == META
        assert one_device(hybrid.deploy()) == META
        assert one_device(scratch_model(guide, cand, ConvertConfig())) == META  # the pruning rule's network


def test_activations_run_the_guide_on_the_device_given_or_refuse_in_one_line():
    guide, x = tiny_guide("conv1d"), torch.randn(16, 40)
    with pytest.raises(UserError, match="the guide is on cpu but its activations were asked for on meta"):
        GuideActivations.compute(guide, x, data_key="k", device="meta", progress=False)
    assert guide.identity  # hashed from the weights' values (remembered), which meta tensors do not have
    guide.to(META)
    with device_guard() as called:
        where = until_a_value_is_read(lambda: GuideActivations.compute(guide, x, data_key="k", device="meta",
                                                                         progress=False))
    assert where == "activations.py:compute"  # the activations stored to the host: the first value read
    assert "Conv1d" in called  # the guide ran, on its device, on a batch moved there


def test_evaluate_runs_a_model_on_its_own_device(mnist1d):
    model = tiny_guide("conv1d").module.to(META)
    with device_guard() as called:
        assert until_a_value_is_read(lambda: evaluate(model, mnist1d.val)) == "training.py:evaluate"
    assert "Linear" in called


def test_the_guard_itself_catches_a_batch_on_another_device():
    model = torch.nn.Linear(4, 2).to(META)
    with device_guard(), pytest.raises(MixedDevices):
        until_a_value_is_read(lambda: model(torch.zeros(3, 4)))
    rows, index = torch.zeros(5, 3, device=META), torch.tensor([1, 3])  # an index on the host: a copy per call
    with device_guard(), pytest.raises(MixedDevices, match="aten::index"):
        until_a_value_is_read(lambda: rows[index])
    with device_guard():  # a move between devices is the one mix allowed; a Python number is no tensor
        assert until_a_value_is_read(lambda: rows[index.to(META)] * 2 + torch.tensor(1.0)) is None


def test_a_guide_refuses_a_batch_on_another_device_in_one_line_and_regroups_without_a_forward_pass():
    guide = tiny_guide("conv1d").to(META)
    with pytest.raises(UserError, match="the guide is on meta but was given a batch on cpu"):
        guide.activations(torch.randn(2, 40))
    with device_guard() as called:
        grouped = guide.grouped((2, 1))
    assert called == [] and grouped.shapes == [guide.shapes[0], guide.shapes[2], guide.shapes[3]]
    assert guide.example_input(3).device == META


def test_auto_is_the_cpu_without_a_gpu_and_cuda_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device(None) == "cpu"
    with pytest.raises(UserError, match="CUDA is not available here"):
        resolve_device("cuda:0")
    with pytest.raises(UserError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    assert canonical_device("cpu") == torch.device("cpu")


def test_auto_is_printed_once(monkeypatch, capsys):
    monkeypatch.setattr("nas_theseus.utils.devices._announced", set())
    resolve_device("auto", announce=True)
    resolve_device("auto", announce=True)
    assert capsys.readouterr().err.count("device: cpu (auto)") == (0 if torch.cuda.is_available() else 1)


def test_the_staging_buffers_gather_the_asked_rows_from_tensors_and_memory_maps(tmp_path):
    """What a GPU reads of a host cache through the double-buffered stager (its CUDA copy and events run in
    tests/test_cuda.py): the asked rows of every wanted level, in order, and a later batch never overwrites an
    earlier one's tensors."""
    import numpy as np

    from nas_theseus.convert.activations import PinnedStager

    a = torch.randn(50, 3, 4)
    mapped = np.lib.format.open_memmap(tmp_path / "a.npy", mode="w+", dtype=np.float16, shape=(50, 2))
    mapped[:] = np.random.default_rng(0).standard_normal((50, 2))
    stager = PinnedStager("cpu")
    first = stager.gather([a, mapped], torch.tensor([7, 2, 9]), {0, 1})
    second = stager.gather([a, mapped], torch.tensor([1, 0]), {0})
    third = stager.gather([a, mapped], torch.tensor([4, 4, 4, 3]), {0, 1})  # reuses the first buffer
    assert torch.equal(first[0], a[[7, 2, 9]]) and torch.equal(third[0], a[[4, 4, 4, 3]])
    assert np.array_equal(first[1].numpy(), mapped[[7, 2, 9]].astype(np.float32)) and second[1] is None
    assert torch.equal(second[0], a[[1, 0]])


def test_the_device_line_is_a_log_record_a_user_can_silence_or_route(monkeypatch, capsys):
    """The line goes through the ``nas_theseus`` logger: ``set_verbosity`` hides it, and after
    ``disable_default_handler`` it reaches the application's own logging (the root logger) instead of stderr."""
    import logging

    from nas_theseus import logging as nt_logging

    root = logging.getLogger("nas_theseus")
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # restored after the test
    monkeypatch.setattr(root, "propagate", root.propagate)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("nas_theseus.utils.devices._announced", set())
    nt_logging.set_verbosity("WARNING")
    try:
        resolve_device("auto", announce=True)
    finally:
        nt_logging.set_verbosity(logging.INFO)
    assert "device:" not in capsys.readouterr().err

    monkeypatch.setattr("nas_theseus.utils.devices._announced", set())
    nt_logging.disable_default_handler()
    records = []
    application = logging.Handler()  # the application's own handler, on the root logger
    application.emit = records.append
    logging.getLogger().addHandler(application)
    try:
        resolve_device("auto", announce=True)
    finally:
        logging.getLogger().removeHandler(application)
    assert capsys.readouterr().err == ""
    assert [(r.name, r.levelname, r.getMessage()) for r in records] == [
        ("nas_theseus.utils.devices", "INFO", "device: cpu (auto)")]
