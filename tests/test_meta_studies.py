"""Every shipped study, every guide kind and every enqueued candidate on the ``meta`` device (tests/meta_device.py):
the class of fault that crashed the README's first command on a GPU (a regrouped guide's example left on the CPU)
is caught here, on a CPU. Each run is asserted to stop where it should: at the stage loop's first read of its
loss (a trial), at the guide's reference accuracy (a study), or nowhere (a dry run reads no value)."""

from __future__ import annotations

import itertools
from pathlib import Path

import optuna
import pytest
from meta_device import META, device_guard, one_device, until_a_value_is_read
from studyfiles import SHIPPED, small_settings

from nas_theseus.convert import Candidate, ConvertConfig, Hybrid, convert
from nas_theseus.data import load_data, load_digits, load_mnist1d
from nas_theseus.guides import load_guide
from nas_theseus.study.config import load_study_config
from nas_theseus.study.context import build_context
from nas_theseus.study.objective import run_trial
from nas_theseus.study.runner import run_study
from nas_theseus.study.workdir import WorkDir
from nas_theseus.targets import BlockSpec

STUDIES = Path(__file__).resolve().parent.parent / "studies"
ON_META = ['study.device="meta"', 'guide.weights="random"']
# the stage loop reads its losses once per window (through the loss window): the first value a trial reads
LOSS_READ = "loss_window.py:read from stages.py:_window_sum"


def meta_config(study: str, tmp_path, *extra: str):
    return load_study_config(STUDIES / study, [*small_settings(study, tmp_path), *ON_META, *extra])


def test_every_shipped_study_is_checked_here():
    assert sorted(SHIPPED) == sorted(p.name for p in STUDIES.glob("*.toml"))


def trial_that_converts(ctx, config) -> optuna.Trial:
    """A trial of a fresh in-memory study with the study's first enqueued parameters (a partition, for the
    README's study), else the first sampled ones whose candidate swaps a part."""
    params = config.study.enqueue[0] if config.study.enqueue else None
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    while params is None:
        t = probe.ask()
        params = t.params if ctx.candidate(t)[0].swap_order else None
    study = optuna.create_study(directions=["maximize"] * len(config.objectives))
    study.enqueue_trial(params)
    return study.ask()


def candidates(ctx, n_sampled: int = 3):
    """Every enqueued candidate of the study, then ``n_sampled`` drawn by a seeded random sampler."""
    for params in ctx.config.study.enqueue:
        yield ctx.candidate(optuna.trial.FixedTrial(params))[0]
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(n_sampled):
        yield ctx.candidate(probe.ask())[0]


@pytest.mark.parametrize("study, feed", [(s, "the study's own") for s in SHIPPED]
                         + [("mnist1d_deploy.toml", "stream"),  # the README's study caches: both feeds
                            ("mnist1d_deploy.toml", "latency aside")])  # no meta network sent to a measurer
def test_a_study_dry_runs_and_trains_a_trial_on_meta_up_to_its_first_loss_read(study, feed, tmp_path):
    """The context is built there, the dry run reads no value, every enqueued (and a few sampled) candidate's
    hybrid and deploy network live there, and a trial's conversion gets to the stage loop's first loss read,
    its guide's activations read from a cache or streamed, as the study chooses (or streamed, forced), its
    latency to be timed where the study says (or on reserved cores, forced)."""
    overrides = {"stream": ['convert.activations="stream"'], "latency aside": ['latency.cores="reserved"']}
    config = meta_config(study, tmp_path, *overrides.get(feed, []))
    ctx = build_context(config, progress=False)
    assert ctx.device == "meta" and one_device(ctx.guide.module) == META
    with device_guard():
        assert until_a_value_is_read(ctx.dry_run) is None
        for cand in candidates(ctx):
            hybrid = Hybrid(ctx.guide, cand, ctx.config.convert)
            hybrid.swap_in(cand.swap_order)
            assert one_device(hybrid) == META and one_device(hybrid.deploy()) == META, cand
    activations = None
    if ctx.caches_activations():  # computed where values exist (a CPU twin of the guide), then read on the device
        twin = build_context(load_study_config(STUDIES / study, [*small_settings(study, tmp_path),
                                                                 'guide.weights="random"', 'study.device="cpu"']))
        activations = WorkDir(tmp_path / "cpu").activations(twin.guide, twin.data, device="cpu", progress=False)
    trial = trial_that_converts(ctx, config)
    with device_guard() as called:
        where = until_a_value_is_read(lambda: run_trial(trial, ctx, WorkDir(tmp_path / "wd"), activations,
                                                        progress=False))
    assert where == LOSS_READ, (where, trial.params)
    assert len(called) > 10  # the hybrid's modules ran there


@pytest.mark.parametrize("method", ["kd", "scratch"])
def test_the_baselines_train_on_meta_up_to_their_first_loss_read(method, tmp_path):
    config = meta_config("mnist1d_deploy.toml", tmp_path, f'study.method="{method}"')
    ctx = build_context(config, progress=False)
    trial = trial_that_converts(ctx, config)
    with device_guard():
        where = until_a_value_is_read(lambda: run_trial(trial, ctx, WorkDir(tmp_path / "wd"), None, progress=False))
    assert where == "loss_window.py:read from training.py:_summed"  # the training losses, read once per window of steps


def test_the_readme_study_runs_on_meta_through_its_dry_run_to_the_guides_reference(tmp_path):
    """``nas-theseus run`` of the README's study: context, dry run (a partitioned candidate: where the first
    command crashed on a GPU), storage, then the guide's own accuracy, the first value it reads."""
    config = meta_config("mnist1d_deploy.toml", tmp_path)
    with device_guard():
        where = until_a_value_is_read(lambda: run_study(config, tmp_path / "wd", progress=False))
    assert where == "training.py:evaluate"
    assert (tmp_path / "wd" / "study.json").exists()  # it got past the dry run to the study


def test_two_conversions_from_python_regroup_a_guide_that_lives_on_meta(tmp_path):
    data = load_mnist1d(num_samples=400)
    guide = load_guide("builtin:mnist1d_cnn", data, weights="random").to(META)
    mlp = BlockSpec.of("mlp", width=8)
    config = ConvertConfig(steps_per_stage=2, batch_size=32, probe_size=32, activations="stream")
    for cand in (Candidate((mlp, mlp), partition=(1, 2)), Candidate((mlp, None), partition=(2, 1))):
        with device_guard():
            assert until_a_value_is_read(lambda c=cand: convert(guide, c, data, config, device="meta",
                                                                progress=False)) == LOSS_READ


def compositions(n: int):
    """Every partition of ``n`` parts into runs of consecutive parts."""
    for cuts in itertools.product([False, True], repeat=n - 1):
        runs, length = [], 1
        for cut in cuts:
            if cut:
                runs.append(length)
                length = 1
            else:
                length += 1
        yield (*runs, length)


MODEL_FILE = '''from torch import nn


def make_net(width=16):
    return nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(64, width), nn.ReLU()),
                         nn.Sequential(nn.Linear(width, width), nn.ReLU()),
                         nn.Sequential(nn.Linear(width, width), nn.ReLU()), nn.Linear(width, 10))
'''


def guides_of_every_kind(tmp_path):
    digits, mnist1d = load_digits(), load_mnist1d(num_samples=200)
    (tmp_path / "mymodel.py").write_text(MODEL_FILE)
    yield "builtin:mnist1d_cnn", load_guide("builtin:mnist1d_cnn", mnist1d, weights="random")
    yield "builtin:digits_cnn", load_guide("builtin:digits_cnn", digits, weights="random")
    yield "timm:resnet18", load_guide("timm:resnet18", digits, weights="random")
    yield "timm:vit", load_guide("timm:vit_tiny_patch16_224", digits, weights="random", img_size=8, patch_size=2,
                                 depth=3, embed_dim=32, num_heads=2)
    text = load_data("text", context=16, max_bytes=20_000)
    yield "hf:gpt2", load_guide("hf:gpt2", text, weights="random", n_embd=16, n_layer=3, n_head=2)
    yield "torch:file", load_guide(f"torch:{tmp_path / 'mymodel.py'}:make_net", digits, weights="random",
                                   parts=["1", "2", "3"])


def test_every_guide_kind_regroups_on_meta_for_every_partition_with_the_shapes_of_a_forward_pass(tmp_path):
    for kind, guide in guides_of_every_kind(tmp_path):
        x = guide.example_input(2)
        levels = [tuple(a.shape[1:]) for a in guide.activations(x)]  # on the CPU, where values exist
        guide.to(META)
        for partition in compositions(len(guide.parts)):
            grouped = guide.grouped(partition)
            ends = list(itertools.accumulate(partition))
            assert grouped.shapes == [levels[0], *(levels[e] for e in ends)], (kind, partition)
            with device_guard():
                acts = grouped.activations(grouped.example_input(2))
            assert acts[0].device == META and [tuple(a.shape[1:]) for a in acts[:-1]] == grouped.shapes
            assert grouped.identity  # from the base guide's weights, hashed before they left for meta


def test_the_block_library_trains_on_meta_up_to_its_first_loss_read(tmp_path):
    """The library's blocks are trained where the study's device is: its first block's stage gets to the loss read
    on ``meta`` (guide activations from a CPU twin, as a trial's)."""
    from nas_theseus.library.build import build_library

    study = "mnist1d_deep_deploy.toml"
    ctx = build_context(meta_config(study, tmp_path), progress=False)
    twin = build_context(load_study_config(STUDIES / study, [*small_settings(study, tmp_path),
                                                             'guide.weights="random"', 'study.device="cpu"']))
    activations = WorkDir(tmp_path / "cpu").activations(twin.guide, twin.data, device="cpu", progress=False)
    with device_guard() as called:
        where = until_a_value_is_read(lambda: build_library(
            ctx.guide, ctx.space, ctx.data, ctx.config.convert, ctx.config.library, folder=tmp_path / "library",
            device="meta", activations=activations, progress=False))
    assert where == LOSS_READ and len(called) > 5
