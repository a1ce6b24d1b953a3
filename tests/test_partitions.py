"""Searchable partitions: one target replaces a run of consecutive guide parts, aligned at the run's last
boundary; as data (JSON, keys), through conversion, export and rebuild, and in a search space."""

from __future__ import annotations

import optuna
import pytest
import torch

from nas_theseus.convert import Candidate, ConvertConfig, GuideActivations, Hybrid, convert
from nas_theseus.data import load_mnist1d
from nas_theseus.errors import UserError
from nas_theseus.export import arch_document, load_exported, save_network
from nas_theseus.guides import load_guide
from nas_theseus.search import suggest_partition
from nas_theseus.targets import BlockSpec
from nas_theseus.training import FitConfig

MLP = BlockSpec.of("mlp", width=16)


@pytest.fixture(scope="module")
def setup():
    data = load_mnist1d(num_samples=600)
    return data, load_guide("builtin:mnist1d_cnn", data, weights="random")


def fast():
    return ConvertConfig(steps_per_stage=6, batch_size=32, probe_size=64, refit_every=3,
                         finetune=FitConfig(max_epochs=1, patience=1))


def test_a_partition_is_data():
    c = Candidate((MLP, None), order=(1, 0), partition=(2, 1))
    assert c.to_dict()["partition"] == [2, 1] and Candidate.from_dict(c.to_dict()) == c
    assert c.describe(["conv1", "conv2", "conv3"]) == ("conv1+conv2=mlp(width=16), conv3=keep; order conv1+conv2; "
                                                       "head linear")
    assert "partition" not in Candidate((MLP,) * 3).to_dict()  # earlier candidates keep their keys
    assert Candidate((MLP,) * 3, partition=(1, 1, 1)) == Candidate((MLP,) * 3)  # all runs of one: no partition
    with pytest.raises(UserError, match="has 2 runs but the candidate has 3 blocks"):
        Candidate((MLP,) * 3, partition=(2, 1))
    with pytest.raises(UserError, match="run lengths of at least 1"):
        Candidate((MLP, MLP), partition=(3, 0))


def test_the_grouped_guide_aligns_at_the_runs_last_boundary(setup):
    data, guide = setup
    g = guide.grouped((2, 1))
    assert g.part_names == ["conv1+conv2", "conv3"] and g.levels == [0, 2, 3, 4]
    assert g.shapes == [guide.shapes[i] for i in (0, 2, 3)] and g.identity != guide.identity
    assert guide.grouped((2, 1)) is not guide and g.grouped(None) is guide and g.grouped((2, 1)) is g
    x = data.train.x[:50]
    full = GuideActivations.compute(guide, x, data_key="d", progress=False)
    mine = GuideActivations.compute(g, x, data_key="d", progress=False)
    for a, b in zip(full.select(g.levels).acts, mine.acts):
        assert torch.equal(a, b)
    with pytest.raises(UserError, match="must split the guide's 3 parts"):
        guide.grouped((2, 2))
    with pytest.raises(UserError, match="2 blocks but the guide has 3 parts"):
        Hybrid(guide, Candidate((MLP, MLP)), fast())


@pytest.mark.parametrize("blocks", [(MLP, MLP), (None, MLP)], ids=["run-replaced", "run-kept"])
def test_conversion_export_and_rebuild_with_a_partition(setup, tmp_path, blocks):
    data, guide = setup
    c = Candidate(blocks, partition=(2, 1))
    acts = GuideActivations.compute(guide, data.train.x, data_key=data.fingerprint, progress=False)
    r = convert(guide, c, data, fast(), checkpoint_dir=tmp_path / "ck", activations=acts, progress=False)
    swapped = ["conv1+conv2", "conv3"] if blocks[0] is not None else ["conv3"]
    assert [p for s in r.stages for p in s.parts] == swapped
    assert set(r.stages[-1].alignment) == set(swapped)  # CKA against the guide at the run's last boundary
    kinds = [(a["name"], a["kind"], a.get("path")) for a in r.model.arch if a["name"].startswith("part")]
    assert kinds[0] == (("part0", "target", None) if blocks[0] else ("part0", "guide", ["conv1", "conv2"]))
    arch = arch_document(r.model, guide_source=guide.source, sample_shape=data.sample_shape)
    save_network(tmp_path / "net", r.model, arch)
    x = data.test.x[:16]
    with torch.no_grad():
        assert torch.equal(load_exported(tmp_path / "net")(x), r.model.eval()(x))
    # resumed from its own checkpoints; never from those of the unpartitioned candidate
    again = convert(guide, c, data, fast(), checkpoint_dir=tmp_path / "ck", activations=acts, progress=False)
    assert all(s.resumed for s in again.stages)
    other = convert(guide, Candidate((MLP, MLP, MLP) if blocks[0] else (None, None, MLP)), data, fast(),
                    checkpoint_dir=tmp_path / "ck", activations=acts, progress=False)
    assert not any(s.resumed for s in other.stages)


def test_suggest_partition():
    assert suggest_partition(optuna.trial.FixedTrial({"partition.cut0": False, "partition.cut1": True}), 3) == (2, 1)
    assert suggest_partition(optuna.trial.FixedTrial({"partition.cut0": False, "partition.cut1": False}), 3) == (3,)
    assert suggest_partition(optuna.trial.FixedTrial({"partition.cut0": True, "partition.cut1": True}), 3) == (1, 1, 1)
    # a run that reaches max_run is cut without a parameter
    fixed = optuna.trial.FixedTrial({"partition.cut0": False, "partition.cut2": False})
    assert suggest_partition(fixed, 4, max_run=2) == (2, 2)
    assert suggest_partition(optuna.trial.FixedTrial({}), 1) == (1,)
