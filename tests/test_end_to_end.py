"""A short real conversion: the MNIST-1D CNN guide becomes an MLP that clearly beats the same MLP from scratch."""

import pytest

from nas_theseus.convert import Candidate, ConvertConfig, convert, stitching_penalty, train_from_scratch
from nas_theseus.targets import BlockSpec
from nas_theseus.training import FitConfig, evaluate


@pytest.mark.slow
def test_converted_mlp_beats_scratch_mlp(mnist1d, mnist1d_guide):
    cand = Candidate((BlockSpec.of("mlp", width=256),) * 3)
    cfg = ConvertConfig(steps_per_stage=300, finetune=FitConfig(max_epochs=30, patience=6))
    result = convert(mnist1d_guide, cand, mnist1d, cfg, progress=False)
    scratch = train_from_scratch(mnist1d_guide, cand, mnist1d, cfg, progress=False)
    assert result.stages[-1].alignment["conv3"] > 0.9
    assert result.test_accuracy >= scratch.test_accuracy + 0.08, (result.test_accuracy, scratch.test_accuracy)
    assert [a["kind"] for a in result.model.arch] == ["guide", "target", "target", "target", "linear"]


@pytest.mark.slow
def test_stitching_penalty_of_the_guide_with_itself_is_near_zero(mnist1d, mnist1d_guide):
    keep_all = Candidate((None, None, None), head="guide")
    result = convert(mnist1d_guide, keep_all, mnist1d, ConvertConfig(finetune=FitConfig(max_epochs=1)),
                     progress=False)
    assert result.stages == []
    reports = stitching_penalty(result.model, mnist1d_guide, mnist1d, fit=FitConfig(max_epochs=2, patience=2),
                                progress=False)
    assert [r.part for r in reports] == ["conv1", "conv2", "conv3"]
    guide_acc = evaluate(mnist1d_guide.module, mnist1d.test)[0]
    for r in reports:
        assert r.guide_accuracy == guide_acc and r.floor is None
        assert abs(r.penalty) <= 0.03, r


@pytest.mark.slow
def test_stitching_floor_of_a_twin_guide_is_computed_once_and_reported(mnist1d, mnist1d_guide, monkeypatch):
    from nas_theseus.convert import stitching as stitching_module
    from nas_theseus.guides import builtin_guide

    twin = builtin_guide("mnist1d_cnn", mnist1d, seed=1, fit={"max_epochs": 5}, progress=False)
    fit = FitConfig(max_epochs=3, patience=3)
    floor = stitching_module.stitching_floor(mnist1d_guide, twin, mnist1d, fit=fit, progress=False)
    assert len(floor) == 3 and all(-0.05 <= f <= 0.5 for f in floor), floor
    # cached by content: a second report reads it instead of training the twin's stitches again
    keep_all = Candidate((None, None, None), head="guide")
    result = convert(mnist1d_guide, keep_all, mnist1d, ConvertConfig(finetune=FitConfig(max_epochs=1)),
                     progress=False)
    calls = []
    real = stitching_module._stitched_accuracies
    monkeypatch.setattr(stitching_module, "_stitched_accuracies", lambda bottoms, *a: calls.append(1) or
                        real(bottoms, *a))
    reports = stitching_penalty(result.model, mnist1d_guide, mnist1d, fit=fit, progress=False, floor_guide=twin)
    assert len(calls) == 1  # the converted network's stitches only
    assert [r.floor for r in reports] == floor
