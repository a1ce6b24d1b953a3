"""The hybrid network runs end to end at every stage of every swap order; the deploy network is clean."""

import itertools

import pytest
import torch

from nas_theseus.convert import Candidate, ConvertConfig, Hybrid
from nas_theseus.errors import UserError
from nas_theseus.targets import BlockSpec
from nas_theseus.testing import tiny_guide

MLP8 = BlockSpec.of("mlp", width=8)
CANDIDATES = {
    "all-mlp": (MLP8, MLP8, MLP8),
    "mixed": (BlockSpec.of("conv1d", channels=3, stride=2), None, BlockSpec.of("mlp")),
    "keep-ends": (None, BlockSpec.of("lowrank", rank=2), None),
    "mlp-then-keep": (MLP8, None, MLP8),
}


@pytest.mark.parametrize("head", ["linear", "guide"])
@pytest.mark.parametrize("name", sorted(CANDIDATES))
def test_every_swap_order_runs_at_every_stage(name, head):
    guide = tiny_guide("conv1d")
    blocks = CANDIDATES[name]
    swapped = [i for i, b in enumerate(blocks) if b is not None]
    x = torch.randn(16, 40)
    probe_acts = guide.activations(x)
    for order in itertools.permutations(swapped):
        for bridge in ("lowrank", "stitch"):
            hybrid = Hybrid(guide, Candidate(blocks, order, head), ConvertConfig(bridge=bridge))
            for i, k in enumerate(order):
                hybrid.swap_in([k])
                hybrid.refit(x, probe_acts)
                y, outs = hybrid(x, collect=True)
                assert y.shape == (16, 10) and torch.isfinite(y).all(), (order, i)
                assert sorted(outs) == sorted(order[: i + 1])
                for j, h in outs.items():
                    assert tuple(h.shape[1:]) == hybrid.out_shapes[j]
            model = hybrid.deploy()
            model.eval()
            assert model(x).shape == (16, 10)
            kinds = [a["kind"] for a in model.arch]
            assert kinds.count("target") == len(swapped)
            assert not any(n.startswith("in") for n, _ in model.named_children())


def test_deploy_network_of_an_all_mlp_candidate_is_a_plain_mlp():
    guide = tiny_guide("conv1d")
    hybrid = Hybrid(guide, Candidate((MLP8, MLP8, MLP8)), ConvertConfig())
    hybrid.swap_in([0, 1, 2])
    model = hybrid.deploy()
    assert [n for n, _ in model.named_children()] == ["stem", "part0", "part1", "part2", "head"]
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == (40 * 8 + 8) + 2 * (8 * 8 + 8) + (8 * 10 + 10)


def test_kept_guide_part_after_a_target_gets_a_deploy_adapter():
    guide = tiny_guide("conv1d")
    hybrid = Hybrid(guide, Candidate((MLP8, None, MLP8)), ConvertConfig())
    hybrid.swap_in([0, 2])
    names = [n for n, _ in hybrid.deploy().named_children()]
    assert names == ["stem", "part0", "adapter0", "part1", "part2", "head"]


def test_shapes_no_block_can_read_are_user_errors():
    guide = tiny_guide("conv1d")
    with pytest.raises(UserError, match=r"part 2: conv1d reads \(C, L\) inputs"):
        Hybrid(guide, Candidate((MLP8, BlockSpec.of("conv1d"), None)), ConvertConfig())
    with pytest.raises(UserError, match="3 blocks but the guide has 2 parts"):
        Hybrid(tiny_guide("mlp"), Candidate((MLP8, MLP8, MLP8)), ConvertConfig())


def test_candidate_validation():
    with pytest.raises(UserError, match="distinct part indices"):
        Candidate((MLP8, MLP8), order=(0, 0))
    with pytest.raises(UserError, match="leaves out swapped parts"):
        Candidate((MLP8, MLP8), order=(1,))
    with pytest.raises(UserError, match="unknown head"):
        Candidate((MLP8,), head="new")
    c = Candidate((MLP8, None, MLP8), order=(2, 1, 0))
    assert c.swap_order == [2, 0]
    assert Candidate.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("bridge", ["lowrank", "stitch"])
@pytest.mark.parametrize("name", sorted(CANDIDATES))
def test_every_module_the_hybrid_creates_lives_on_its_device(name, bridge):
    """On the `meta` device (no data, no GPU needed): a module created on the CPU after `.to(device)` would
    show up as a CPU parameter after swap_in, as the adapters once did (and crashed the first CUDA stage)."""
    guide = tiny_guide("conv1d")
    blocks = CANDIDATES[name]
    swapped = [i for i, b in enumerate(blocks) if b is not None]
    for order in itertools.permutations(swapped):
        hybrid = Hybrid(guide, Candidate(blocks, order, "guide"), ConvertConfig(bridge=bridge)).to("meta")
        for k in order:
            hybrid.swap_in([k])
            tensors = list(hybrid.parameters()) + list(hybrid.buffers())
            assert tensors and {t.device.type for t in tensors} == {"meta"}, (order, k)
        assert hybrid.out_adapters  # head = "guide" after a swapped last part or a guide part after a target


def test_checkpoints_hold_cpu_tensors_and_load_onto_the_cpu(tmp_path, monkeypatch):
    from nas_theseus.convert import checkpoints

    store = checkpoints.CheckpointStore(tmp_path)
    payload = {"state": {"w": torch.ones(2), "nested": [torch.zeros(1), (torch.ones(1),)]}, "report": {"x": 1}}
    moved = []
    monkeypatch.setattr(checkpoints, "to_cpu", lambda obj: moved.append(obj) or obj)  # sees what is saved
    store.save("k", payload)
    assert moved and moved[0]["state"] is payload["state"]
    monkeypatch.undo()
    seen = {}
    real_load = torch.load
    monkeypatch.setattr(checkpoints.torch, "load", lambda *a, **kw: seen.update(kw) or real_load(*a, **kw))
    assert store.load("k")["report"] == {"x": 1}
    assert seen.get("map_location") == "cpu" and seen.get("weights_only") is True
