"""The CUDA path (marked `cuda`: skipped without a GPU; benchmarks/gpu_check.sh runs them on one)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nas_theseus.convert import Candidate, ConvertConfig, GuideActivations, convert
from nas_theseus.measure import measure_latency
from nas_theseus.targets import BlockSpec
from nas_theseus.testing import tiny_guide
from nas_theseus.training import FitConfig

pytestmark = pytest.mark.cuda
MLP8 = BlockSpec.of("mlp", width=8)
FAST = dict(steps_per_stage=60, batch_size=32, probe_size=64, refit_every=3,
            finetune=FitConfig(max_epochs=2, patience=2))


@pytest.fixture(scope="module")
def small_data():
    from nas_theseus.data import load_mnist1d

    return load_mnist1d(num_samples=600)


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1)])
def test_a_conversion_runs_on_cuda_with_every_module_there_and_matches_the_cpu(small_data, order):
    cand = Candidate((MLP8, MLP8, MLP8), order=order, head="guide")
    seen = []

    def on_stage(report, hybrid):
        seen.append({t.device.type for t in [*hybrid.parameters(), *hybrid.buffers()]})

    gpu = convert(tiny_guide("conv1d"), cand, small_data, ConvertConfig(**FAST), device="cuda", progress=False,
                  on_stage=on_stage)
    cpu = convert(tiny_guide("conv1d"), cand, small_data, ConvertConfig(**FAST), progress=False)
    assert seen and all(s == {"cuda"} for s in seen)
    for g, c in zip(gpu.stages, cpu.stages):
        assert all(abs(g.alignment[p] - c.alignment[p]) < 0.05 for p in c.alignment), (g.alignment, c.alignment)


def test_stages_trained_on_cuda_resume_on_the_cpu(small_data, tmp_path):
    cand = Candidate((MLP8, None, MLP8))
    fp32 = ConvertConfig(**FAST, tf32=False)  # TF32 stages are keyed apart: they do not resume an fp32 run
    first = convert(tiny_guide("conv1d"), cand, small_data, fp32, device="cuda", checkpoint_dir=tmp_path,
                    progress=False)
    again = convert(tiny_guide("conv1d"), cand, small_data, fp32, device="cpu", checkpoint_dir=tmp_path,
                    progress=False)
    tf32 = convert(tiny_guide("conv1d"), cand, small_data, ConvertConfig(**FAST), device="cuda",
                   checkpoint_dir=tmp_path, progress=False)
    assert not any(s.resumed for s in tf32.stages)
    assert all(s.resumed for s in again.stages) and again.finetune_resumed
    x = small_data.test.x[:8]
    assert torch.allclose(first.model.cpu()(x), again.model(x), atol=1e-5)


def test_the_cache_is_copied_to_the_gpu_once_or_staged_through_pinned_buffers(small_data, monkeypatch):
    guide = tiny_guide("conv1d")
    acts = GuideActivations.compute(guide, small_data.train.x, data_key="d", progress=False)
    on = acts.on("cuda")
    assert {a.device.type for a in on.acts} == {"cuda"} and on is acts.on("cuda:0")  # one copy per device
    part = acts.select([0, 2, 3, 4]).on("cuda")  # a partition's levels share it
    assert part.acts[1].data_ptr() == on.acts[2].data_ptr()
    monkeypatch.setenv("NAS_THESEUS_DEVICE_CACHE", "0")
    staged = GuideActivations(acts.acts, acts.key).on("cuda")
    assert staged.stager is not None and all(a.device.type == "cpu" and not a.is_pinned() for a in staged.acts)
    for idx in (torch.tensor([3, 1, 2]), torch.tensor([5, 0]), torch.tensor([7, 7, 1])):  # both buffers, reused
        got = staged.batch(idx, "cuda")
        assert all(b.device.type == "cuda" for b in got)
        assert all(torch.equal(b.cpu(), a[idx]) for a, b in zip(acts.acts, got))
    staged_part = GuideActivations(acts.acts, acts.key).select([0, 2, 3, 4]).on("cuda")  # a partition: staged too
    assert staged_part.stager is not None
    assert torch.equal(staged_part.batch(torch.tensor([4, 2]), "cuda")[1].cpu(), acts.acts[2][[4, 2]])


def test_a_one_trial_study_runs_on_cuda(tmp_path):
    """The study path on the GPU (guide on the device from the start, latency timed on a CPU copy)."""
    import json

    from studyfiles import tiny_training

    from nas_theseus.cli import main

    study = tmp_path / "s.toml"
    space = Path(__file__).resolve().parent.parent / "search_spaces" / "mnist1d_cnn_to_mlp.py"
    study.write_text(f'''[study]
name = "cuda"
search_space = "{space}"
n_trials = 1
device = "cuda"

[objectives]
accuracy = "maximize"
flops = "minimize"
latency_ms = "minimize"
{tiny_training(60)}''')
    assert main(["run", str(study), "--workdir", str(tmp_path / "w"), "--no-progress"]) == 0
    metrics = json.loads(next((tmp_path / "w" / "trials").glob("*/metrics.json")).read_text())
    assert metrics["latency"]["device"] == "cpu" and metrics["timings"]["align_s"] > 0


def test_bf16_autocast_converts_on_cuda(small_data):
    cand = Candidate((MLP8, None, MLP8))
    r = convert(tiny_guide("conv1d"), cand, small_data, ConvertConfig(autocast="bf16", **FAST), device="cuda",
                progress=False)
    assert r.stages and all(0 < v <= 1 for s in r.stages for v in s.alignment.values())


def test_latency_on_a_given_cuda_device_is_measured_there():
    lat = measure_latency(torch.nn.Linear(8, 8), (8,), device="cuda:0", repeats=5, warmup=2)
    assert lat.device == "cuda:0" and lat.median_ms > 0


def test_the_readme_study_runs_on_cuda_with_its_partitioned_first_trial(tmp_path):
    """The README's first command's study (its first trial regroups the guide's parts: where it crashed on a GPU
    on 12-04), tiny, on CUDA: the enqueued candidate and a sampled one complete there."""
    import json

    from studyfiles import small_settings

    from nas_theseus.cli import main

    study = Path(__file__).resolve().parent.parent / "studies" / "mnist1d_deploy.toml"
    args = ["run", str(study), "--workdir", str(tmp_path / "w"), "--no-progress", "--device", "cuda"]
    for s in small_settings("mnist1d_deploy.toml", tmp_path):
        args += ["--set", s]
    assert main(args) == 0
    trials = [json.loads(p.read_text()) for p in (tmp_path / "w" / "trials").glob("*/metrics.json")]
    assert len(trials) == 2 and all(t["timings"]["align_s"] > 0 for t in trials)


MODEL_FILE = '''from torch import nn


def make_net(width=16):
    return nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(40, width), nn.ReLU()),
                         nn.Sequential(nn.Linear(width, width), nn.ReLU()),
                         nn.Sequential(nn.Linear(width, width), nn.ReLU()), nn.Linear(width, 10))
'''


def test_a_torch_guide_from_a_file_converts_twice_on_cuda_with_partitions(small_data, tmp_path):
    from nas_theseus.guides import load_guide

    (tmp_path / "mymodel.py").write_text(MODEL_FILE)
    guide = load_guide(f"torch:{tmp_path / 'mymodel.py'}:make_net", small_data, weights="random",
                       parts=["1", "2", "3"]).to("cuda")
    for cand in (Candidate((MLP8, MLP8), partition=(1, 2)), Candidate((None, MLP8), partition=(2, 1))):
        seen = []
        r = convert(guide, cand, small_data, ConvertConfig(**FAST), device="cuda", progress=False,
                    on_stage=lambda report, hybrid, seen=seen: seen.append({t.device.type
                                                                            for t in hybrid.parameters()}))
        assert seen and all(s == {"cuda"} for s in seen) and 0 <= r.test_accuracy <= 1
