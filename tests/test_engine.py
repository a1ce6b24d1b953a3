"""Schedules, determinism, checkpoints and resume, the frozen guide, and failure on non-finite losses."""

import copy

import pytest
import torch
from torch import nn

from nas_theseus.convert import Candidate, ConversionError, ConvertConfig, budget_steps, convert, plan_stages
from nas_theseus.convert import engine as engine_module
from nas_theseus.convert import stages as stages_module
from nas_theseus.data import load_mnist1d
from nas_theseus.errors import UserError
from nas_theseus.guides import Guide
from nas_theseus.targets import BlockSpec
from nas_theseus.testing import tiny_guide
from nas_theseus.training import FitConfig
from nas_theseus.utils.hashing import module_fingerprint

MLP8 = BlockSpec.of("mlp", width=8)
FAST_FT = FitConfig(max_epochs=2, patience=2)


@pytest.fixture(scope="module")
def small_data():
    return load_mnist1d(num_samples=600)


def fast(schedule="progressive", **kw):
    return ConvertConfig(schedule=schedule, steps_per_stage=6, batch_size=32, probe_size=64, refit_every=3,
                         finetune=FAST_FT, **kw)


class _Snapshots:
    """on_stage callback that keeps a copy of every target's weights after each stage."""

    def __init__(self):
        self.states = []

    def __call__(self, report, hybrid):
        self.states.append({k: copy.deepcopy(m.state_dict()) for k, m in hybrid.targets.items()})


def _same(a, b):
    return all(torch.equal(a[n], b[n]) for n in a)


@pytest.mark.parametrize("schedule, n_stages", [("progressive", 3), ("sequential", 3), ("independent", 3),
                                                ("joint", 1)])
def test_schedules_stage_counts_and_equal_budgets(schedule, n_stages):
    cand = Candidate((MLP8, MLP8, MLP8))
    cfg = fast(schedule)
    assert len(plan_stages(cand, cfg)) == n_stages
    assert budget_steps(cand, cfg) == 18


def test_progressive_trains_earlier_targets_sequential_freezes_them(small_data):
    guide = tiny_guide("conv1d")
    cand = Candidate((MLP8, MLP8, MLP8))
    for schedule, earlier_change in (("progressive", True), ("sequential", False), ("independent", False)):
        snaps = _Snapshots()
        convert(guide, cand, small_data, fast(schedule), on_stage=snaps, progress=False)
        changed = not _same(snaps.states[0]["0"], snaps.states[1]["0"])
        assert changed == earlier_change, schedule


def test_independent_targets_read_the_guide_input(small_data, monkeypatch):
    guide = tiny_guide("conv1d")
    seen = []
    original = stages_module._forward_outputs

    def spy(hybrid, stage, x, acts):
        seen.append(stage.isolated)
        return original(hybrid, stage, x, acts)

    monkeypatch.setattr(stages_module, "_forward_outputs", spy)
    result = convert(guide, Candidate((MLP8, MLP8, MLP8)), small_data, fast("independent"), progress=False)
    assert seen and all(seen)
    assert len(result.stages) == 3


def test_conversion_is_deterministic_and_reports_every_stage(small_data):
    guide = tiny_guide("conv1d")
    cand = Candidate((MLP8, None, BlockSpec.of("conv1d", channels=3)), order=(2, 0))
    from nas_theseus.training import evaluate

    hybrid_acc = []
    a = convert(guide, cand, small_data, fast(), progress=False,
                on_stage=lambda r, h: hybrid_acc.append(evaluate(h, small_data.val)[0]))
    b = convert(guide, cand, small_data, fast(), progress=False)
    assert [s.parts for s in a.stages] == [["3"], ["1"]]
    assert a.stages[-1].swapped == ["3", "1"]
    assert [s.hybrid_val_accuracy for s in a.stages] == hybrid_acc  # the half-converted network's own accuracy
    for s in a.stages:
        assert s.loss_curve and s.wall_s > 0
        assert set(s.alignment) == set(s.swapped)
    assert [s.loss_curve for s in a.stages] == [s.loss_curve for s in b.stages]
    x = small_data.test.x[:20]
    assert torch.equal(a.model(x), b.model(x))
    c = convert(guide, cand, small_data, fast(seed=1), progress=False)
    assert not torch.equal(a.model(x), c.model(x))


def test_resume_from_checkpoints_gives_the_same_result(small_data, tmp_path):
    guide = tiny_guide("conv1d")
    cand = Candidate((MLP8, MLP8, MLP8))
    full = convert(guide, cand, small_data, fast(), progress=False)

    class Stop(Exception):
        pass

    def stop_after_two(report, hybrid):
        if report.index == 1:
            raise Stop

    with pytest.raises(Stop):
        convert(guide, cand, small_data, fast(), checkpoint_dir=tmp_path, on_stage=stop_after_two, progress=False)
    assert len(list(tmp_path.glob("*.ckpt"))) == 2
    resumed = convert(guide, cand, small_data, fast(), checkpoint_dir=tmp_path, progress=False)
    assert [s.resumed for s in resumed.stages] == [True, True, False]
    assert not resumed.finetune_resumed
    x = small_data.test.x[:20]
    assert torch.equal(full.model(x), resumed.model(x))
    again = convert(guide, cand, small_data, fast(), checkpoint_dir=tmp_path, progress=False)
    assert all(s.resumed for s in again.stages) and again.finetune_resumed
    assert torch.equal(full.model(x), again.model(x))
    assert again.stages[0].alignment == full.stages[0].alignment


def test_a_new_candidate_reuses_a_shared_prefix_of_stages(small_data, tmp_path):
    guide = tiny_guide("conv1d")
    convert(guide, Candidate((MLP8, MLP8, MLP8)), small_data, fast(), checkpoint_dir=tmp_path, progress=False)
    other = convert(guide, Candidate((MLP8, MLP8, BlockSpec.of("mlp", width=4))), small_data, fast(),
                    checkpoint_dir=tmp_path, progress=False)
    assert [s.resumed for s in other.stages] == [True, True, False]


def test_corrupt_checkpoint_is_one_warning_and_recomputed(small_data, tmp_path):
    guide = tiny_guide("conv1d")
    cand = Candidate((MLP8, MLP8, MLP8))
    first = convert(guide, cand, small_data, fast(), checkpoint_dir=tmp_path, progress=False)
    files = sorted(tmp_path.glob("*.ckpt"), key=lambda p: p.stat().st_mtime_ns)
    data = bytearray(files[0].read_bytes())
    data[100] ^= 0xFF
    files[0].write_bytes(bytes(data))
    files[1].write_bytes(b"")
    with pytest.warns(UserWarning, match="unreadable") as record:
        second = convert(guide, cand, small_data, fast(), checkpoint_dir=tmp_path, progress=False)
    assert len([w for w in record if "unreadable" in str(w.message)]) == 2
    x = small_data.test.x[:20]
    assert torch.equal(first.model(x), second.model(x))


def test_no_temp_files_left_and_checkpoints_load_weights_only(small_data, tmp_path):
    guide = tiny_guide("conv1d")
    convert(guide, Candidate((MLP8, None, None)), small_data, fast(), checkpoint_dir=tmp_path, progress=False)
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    assert len(list(tmp_path.glob("*.ckpt"))) == 2  # one stage + fine-tuning


class _BNGuide(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Linear(40, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.b = nn.Sequential(nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.b(self.a(x)))


def test_conversion_never_changes_the_guide(small_data):
    torch.manual_seed(0)
    net = _BNGuide()
    with torch.no_grad():
        net(torch.randn(64, 40))  # non-trivial running statistics
    guide = Guide.from_module(net, ["a", "b"], sample_shape=(40,), head="head")
    before = module_fingerprint(guide.module)
    cand = Candidate((BlockSpec.of("mlp", width=8, norm="batch"), None), head="guide")
    convert(guide, cand, small_data, fast(bridge="stitch"), progress=False)
    assert module_fingerprint(guide.module) == before
    assert not guide.module.training and not any(p.requires_grad for p in guide.module.parameters())


def test_non_finite_loss_fails_with_the_reason(small_data, monkeypatch):
    class NaNLoss(nn.Module):
        def forward(self, h, a):
            return h.sum() * float("nan")

    monkeypatch.setattr(engine_module, "make_alignment", lambda *a, **k: NaNLoss())
    with pytest.raises(ConversionError, match="non-finite alignment loss.*stage 1, step 0"):
        convert(tiny_guide("conv1d"), Candidate((MLP8, MLP8, MLP8)), small_data, fast(), progress=False)


@pytest.mark.parametrize("first_bad, steps", [(37, 100), (98, 99)])
def test_a_non_finite_loss_is_found_at_its_step_without_a_sync_per_step(small_data, monkeypatch, first_bad, steps):
    """Losses are read once per curve window (no host sync per step on a GPU): a NaN still fails the stage
    with the step it appeared at, also in the last, partial window."""
    from nas_theseus.align import make_alignment

    calls = []

    class LateNaN(nn.Module):
        def __init__(self, real):
            super().__init__()
            self.real = real

        def forward(self, h, a):
            calls.append(1)
            loss = self.real(h, a)
            return loss * float("nan") if len(calls) > first_bad else loss

    monkeypatch.setattr(engine_module, "make_alignment", lambda *a, **k: LateNaN(make_alignment(*a, **k)))
    cfg = replace_cfg(fast(stage_stop="fixed"), steps_per_stage=steps)
    with pytest.raises(ConversionError, match=f"stage 1, step {first_bad} "):
        convert(tiny_guide("conv1d"), Candidate((MLP8, None, None)), small_data, cfg, progress=False)


def test_bf16_autocast_and_compile_are_opt_in(small_data, monkeypatch):
    cand = Candidate((MLP8, None, MLP8))
    plain = convert(tiny_guide("conv1d"), cand, small_data, fast(), progress=False)
    half = convert(tiny_guide("conv1d"), cand, small_data, fast(autocast="bf16"), progress=False)
    assert [s.loss_curve for s in half.stages] != [s.loss_curve for s in plain.stages]  # it did run in bf16
    for s, t in zip(half.stages, plain.stages):  # (its own stage keys and seeds) and aligns about as far
        assert all(abs(s.alignment[p] - t.alignment[p]) < 0.05 for p in t.alignment), (s.alignment, t.alignment)
    for mode, kwargs in ((True, {}), ("reduce-overhead", {"mode": "reduce-overhead"})):
        wrapped = []
        monkeypatch.setattr(torch, "compile", lambda m, *a, seen=wrapped, **k: seen.append(
            (getattr(m, "__self__", m).__class__.__name__, getattr(m, "__name__", "module"), k)) or m)
        convert(tiny_guide("conv1d"), cand, small_data, fast(compile=mode, seed=5), progress=False)
        # the trained targets, in place (their call, as nn.Module.compile does), in the mode; then fine-tuning's
        # forward (a deep copy of a compiled module is not compiled)
        assert len(wrapped) > 1 and all(w[1:] == ("_call_impl", kwargs) for w in wrapped[:-1])
        assert wrapped[-1] == ("DeployModel", "module", kwargs)
    with pytest.raises(UserError, match="autocast must be None or 'bf16'"):
        ConvertConfig(autocast="fp16")
    with pytest.raises(UserError, match="compile must be true, false or one of 'default', 'reduce-overhead'"):
        ConvertConfig(compile="cudagraphs")


@pytest.mark.parametrize("alignment", ["cka_unbiased", "dmnn", "mse"])
def test_every_alignment_loss_converts(small_data, alignment):
    from dataclasses import replace

    result = convert(load_guide_random(small_data), Candidate((MLP8, MLP8, MLP8)), small_data,
                     replace(fast(alignment=alignment), steps_per_stage=40), progress=False)
    for s in result.stages:  # the loss trains: its last 5 steps average below its first 5 (40 one-step windows)
        c = s.loss_curve
        assert len(c) == 40 and sum(c[-5:]) < sum(c[:5]), (s.parts, c)


def test_conv2d_guide_converts(digits):
    guide = tiny_guide("conv2d")
    cand = Candidate((BlockSpec.of("conv2d", channels=2), BlockSpec.of("mlp", width=6)))
    result = convert(guide, cand, digits, fast(bridge="stitch"), progress=False)
    assert result.model(digits.test.x[:4]).shape == (4, 10)


def test_activations_beyond_the_memory_budget_are_memory_mapped_float16(small_data, tmp_path, monkeypatch):
    from nas_theseus.convert.activations import GuideActivations

    guide = tiny_guide("conv1d")
    x = small_data.train.x
    in_memory = GuideActivations.compute(guide, x, data_key="d", progress=False, mmap_dir=tmp_path / "acts")
    assert not in_memory.mapped and not (tmp_path / "acts").exists()
    monkeypatch.setenv("NAS_THESEUS_ACTIVATION_MEMORY", "0")
    mapped = GuideActivations.compute(guide, x, data_key="d", batch_size=7, progress=False,
                                      mmap_dir=tmp_path / "acts")
    assert mapped.mapped and (tmp_path / "acts" / "complete").is_file() and mapped.key == in_memory.key
    assert all(a.dtype == "float16" for a in mapped.acts)
    idx = torch.tensor([5, 1, 9, 2])
    for a, b in zip(mapped.batch(idx), in_memory.batch(idx)):
        assert a.dtype == torch.float32 and torch.allclose(a, b.half().float())
    reopened = GuideActivations.open_mapped(tmp_path / "acts", len(mapped.acts))
    assert torch.equal(reopened.batch(idx)[1], mapped.batch(idx)[1])
    cand = Candidate((MLP8,) * len(guide.parts))
    from_memory = convert(guide, cand, small_data, fast(), activations=in_memory, progress=False)
    from_half = convert(guide, cand, small_data, fast(), activations=mapped, progress=False)
    assert all(abs(h.alignment[p] - m.alignment[p]) < 0.02 for h, m in zip(from_half.stages, from_memory.stages)
               for p in m.alignment)  # float16 targets: the same conversion within rounding
    monkeypatch.setenv("NAS_THESEUS_ACTIVATION_DTYPE", "float32")
    full = GuideActivations.compute(guide, x, data_key="d", progress=False, mmap_dir=tmp_path / "acts32")
    assert full.mapped
    from_disk = convert(guide, cand, small_data, fast(), activations=full, progress=False)
    assert [s.loss_curve for s in from_disk.stages] == [s.loss_curve for s in from_memory.stages]
    assert torch.equal(from_disk.model(x[:8]), from_memory.model(x[:8]))


M32, M16 = BlockSpec.of("mlp", width=32), BlockSpec.of("mlp", width=16)
SHORTENED_CASES = [
    ("progressive", Candidate((M32, M16, M32), order=(2, 0, 1)), {}),
    ("progressive", Candidate((M32, None, M32), order=(0, 2)), {"bridge": "stitch"}),
    ("sequential", Candidate((M32, M16, M32), order=(1, 2, 0)), {}),
    ("joint", Candidate((M32, M16, M32)), {}),
    ("progressive", Candidate((M32, M16, None), head="guide", stem="relearn"), {}),
    ("progressive", Candidate((None, M16, M32), order=(2, 1)), {"alignment": "dmnn"}),
]


@pytest.mark.parametrize("schedule, cand, kw", SHORTENED_CASES, ids=lambda v: v if isinstance(v, str) else None)
def test_the_shortened_stage_forward_is_bit_identical_to_the_whole_hybrid(small_data, monkeypatch, schedule, cand,
                                                                          kw):
    """A step runs only from the first swapped part's cached input to the last part in the loss, gathers only
    the levels it reads and refits only adapters the loss reads through; the reference runs the whole hybrid
    from the stem, gathers every level and refits everything, as the stage loop did before."""
    from dataclasses import replace

    from nas_theseus.convert.hybrid import Hybrid

    guide = load_guide_random(small_data)
    cfg = replace(fast(schedule, **kw), steps_per_stage=30, refit_every=7, batch_size=64, probe_size=128)
    short = convert(guide, cand, small_data, cfg, progress=False)
    real_refit = Hybrid.refit
    monkeypatch.setattr(stages_module, "_levels", lambda hybrid, stage: range(len(guide.parts) + 2))
    monkeypatch.setattr(stages_module, "_needs_x", lambda hybrid, stage: True)
    monkeypatch.setattr(stages_module, "_forward_outputs",
                        lambda hybrid, stage, x, acts: hybrid(x, collect=True)[1])
    monkeypatch.setattr(Hybrid, "reads_through_adapter", lambda self, stop: True)
    monkeypatch.setattr(Hybrid, "refit", lambda self, x, acts, stop=None: real_refit(self, x, acts))
    whole = convert(guide, cand, small_data, cfg, progress=False)
    assert [s.loss_curve for s in short.stages] == [s.loss_curve for s in whole.stages]
    assert [s.alignment for s in short.stages] == [s.alignment for s in whole.stages]
    x = small_data.test.x[:8]
    assert torch.equal(short.model(x), whole.model(x))


def load_guide_random(data):
    from nas_theseus.guides import load_guide

    return load_guide("builtin:mnist1d_cnn", data, weights="random", seed=3)


def test_a_stage_stops_once_heldout_alignment_has_converged_and_not_before(small_data, monkeypatch):
    """The plateau rule: held-out 1 − CKA evaluated every `eval_every` steps; a stage that has converged ends
    early (`stopped = "plateau"`), one that is still improving runs to its maximum; the best evaluated state
    is the one kept, and the reported alignment is held-out (validation rows), not training rows."""
    guide = load_guide_random(small_data)
    cand = Candidate((BlockSpec.of("mlp", width=64), None, None))
    cfg = ConvertConfig(steps_per_stage=3000, eval_every=20, stop_patience=3, min_steps=40, batch_size=64,
                        probe_size=128, finetune=FAST_FT)
    scores = []
    real = stages_module._heldout_score
    monkeypatch.setattr(stages_module, "_heldout_score", lambda *a: scores.append(real(*a)) or scores[-1])
    converged = convert(guide, cand, small_data, cfg, progress=False).stages[0]
    assert converged.stopped == "plateau" and 40 <= converged.steps < 3000 and converged.max_steps == 3000
    assert len(scores) == converged.steps // 20
    best, kept, bad = float("inf"), None, 0  # the rule: an improvement counts when it beats the best by > tol
    for i, score in enumerate(scores):
        best, kept, bad = (score, i, 0) if score < best - cfg.stop_tolerance else (best, kept, bad + 1)
    assert bad == 3 and kept == len(scores) - 4  # it stopped at the 3rd evaluation without an improvement
    assert converged.alignment["conv1"] == pytest.approx(1 - best, abs=1e-9)  # that state, on held-out rows
    assert converged.alignment_train["conv1"] != converged.alignment["conv1"]
    scores.clear()
    short = convert(guide, cand, small_data, replace_cfg(cfg, steps_per_stage=100), progress=False).stages[0]
    assert short.stopped == "max_steps" and short.steps == 100  # still improving when its budget ran out
    fixed = convert(guide, cand, small_data, replace_cfg(cfg, stage_stop="fixed", steps_per_stage=120),
                    progress=False).stages[0]
    assert fixed.stopped == "fixed" and fixed.steps == 120


def replace_cfg(cfg, **kw):
    from dataclasses import replace

    return replace(cfg, **kw)


def test_a_studys_cache_is_one_memory_mapped_copy_per_machine(small_data, tmp_path):
    """The in-memory cache of a study is stored as float32 .npy files and opened as tensors over read-only
    memory maps: workers read the OS's one cached copy, and the values are the computed ones exactly."""
    from pathlib import Path

    from nas_theseus.convert.activations import GuideActivations

    guide = tiny_guide("conv1d")
    acts = GuideActivations.compute(guide, small_data.train.x, data_key="d", progress=False)
    acts.save_shared(tmp_path / "acts.f32")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # written whole, then moved
    shared = GuideActivations.open_shared(tmp_path / "acts.f32", len(acts.acts))
    assert shared.key == acts.key and not shared.mapped
    assert all(torch.equal(a, b) for a, b in zip(acts.acts, shared.acts))
    maps = Path("/proc/self/maps").read_text()  # the files are mapped into this process, not copied into it
    assert all(str(tmp_path / "acts.f32" / f"a{i}.npy") in maps for i in range(len(acts.acts)))
    idx = torch.tensor([4, 0, 7])
    assert all(torch.equal(x, y) for x, y in zip(shared.batch(idx), acts.batch(idx)))
    acts.save_shared(tmp_path / "acts.f32")  # an earlier cache of ours at that name is replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's file")
    with pytest.raises(UserError, match="holds notes.txt, which an activation cache does not write"):
        acts.save_shared(mine)  # a folder of someone else's is refused, never deleted
    assert (mine / "notes.txt").read_text() == "a user's file"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_non_cka_stage_stops_on_its_own_loss_on_heldout_rows(small_data, monkeypatch):
    from nas_theseus.align import make_alignment

    calls = []

    class Spy(nn.Module):
        def __init__(self, real):
            super().__init__()
            self.real = real

        def forward(self, h, a):
            calls.append((self.training, len(h)))
            return self.real(h, a)

    monkeypatch.setattr(engine_module, "make_alignment", lambda *a, **k: Spy(make_alignment(*a, **k)))
    cfg = ConvertConfig(alignment="dmnn", steps_per_stage=100, eval_every=20, batch_size=32, probe_size=64,
                        heldout_size=50, finetune=FAST_FT)
    convert(tiny_guide("conv1d"), Candidate((MLP8, None, None)), small_data, cfg, progress=False)
    rows = min(50, len(small_data.val))
    assert calls.count((True, 32)) == 100  # training steps
    assert calls.count((False, rows)) == 100 // 20  # the D-MNN loss on the held-out rows, every 20 steps
