"""Latency timed aside (``[latency] cores``): on cores set apart for it, in a measurer process of its own, while the
trial trains (nas_theseus/utils/cores.py, nas_theseus/study/latency_aside.py)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import nas_theseus
from nas_theseus.errors import UserError
from nas_theseus.study import objective as objective_mod
from nas_theseus.study.config import LatencySection
from nas_theseus.study.latency_aside import Aside, AsideLost, layout_for
from nas_theseus.study.objectives import OBJECTIVES, Probe
from nas_theseus.utils import cores

REPO = Path(__file__).resolve().parent.parent
pinnable = pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(cores.allowed()) < 2,
                              reason="needs 2 cores and a platform that pins processes to cores")


def _machine(monkeypatch, n: int, smt: bool):
    """This process seen as a machine of ``n`` logical cores; with ``smt``, core i's sibling is i + n/2."""
    half = n // 2
    monkeypatch.setattr(cores, "allowed", lambda: list(range(n)))
    monkeypatch.setattr(cores, "siblings", lambda c: {c % half, c % half + half} if smt else {c})


def test_the_highest_physical_cores_are_reserved_with_their_siblings_one_slot_per_8_cores(monkeypatch):
    _machine(monkeypatch, 32, smt=True)
    layout = cores.layout(1)
    assert layout.slots == ((15, 31), (14, 30), (13, 29), (12, 28))  # whole physical cores, never half of one
    assert set(layout.rest) == set(range(32)) - {12, 13, 14, 15, 28, 29, 30, 31}
    assert os.environ[cores.ENV] == "15,31;14,30;13,29;12,28"  # the workers started from here reserve the same
    _machine(monkeypatch, 16, smt=False)
    assert cores.layout(1).slots == ((15, 31), (14, 30), (13, 29), (12, 28))  # read back, not laid out again


def test_a_small_machine_reserves_only_when_asked_and_keeps_a_core_for_training(monkeypatch):
    _machine(monkeypatch, 2, smt=False)
    assert cores.layout(1) is None  # auto: the trainers would keep fewer than 2 cores
    assert cores.layout(1, required=True) == cores.Layout(((1,),), (0,))
    monkeypatch.delenv(cores.ENV)
    with pytest.raises(ValueError, match="1 usable core"):
        _machine(monkeypatch, 1, smt=False)
        cores.layout(1, required=True)
    _machine(monkeypatch, 16, smt=False)
    assert cores.layout(4).slots == ((12, 13, 14, 15), (8, 9, 10, 11))  # slots of latency.threads cores
    monkeypatch.setenv(cores.ENV, "3;2")
    assert cores.layout(1) == cores.Layout(((3,), (2,)), (0, 1, *range(4, 16)))  # named by the user
    monkeypatch.setenv(cores.ENV, "three")
    with pytest.raises(ValueError, match="NAS_THESEUS_LATENCY_CORES='three'"):
        cores.layout(1)


def _config(objectives=("accuracy", "latency_ms"), **latency):
    return SimpleNamespace(latency=LatencySection(**latency), objectives=dict.fromkeys(objectives), constraints={})


@pytest.mark.parametrize(("setting", "device", "aside"), [
    ("auto", "cuda:0", True), ("auto", "cpu", False), ("shared", "cuda:0", False), ("reserved", "cpu", True),
    ("reserved", "meta", False)])  # a meta network (the dry runs of tests) has no data to send a measurer
def test_auto_times_aside_where_the_trainers_run_on_a_gpu(monkeypatch, setting, device, aside):
    _machine(monkeypatch, 16, smt=False)
    assert (layout_for(_config(cores=setting), device) is not None) == aside
    assert layout_for(_config(cores=setting, device="cuda"), device) is None  # timed on a GPU: no cores
    assert layout_for(_config(("accuracy", "flops"), cores=setting), device) is None  # nothing to time


def test_reserved_cores_on_a_machine_without_any_to_spare_are_refused_in_one_line(monkeypatch):
    _machine(monkeypatch, 1, smt=False)
    with pytest.raises(UserError, match='latency.cores = "reserved": 1 usable core.*use "shared"'):
        layout_for(_config(cores="reserved"), "cpu")


def _probe(**latency) -> Probe:
    return Probe((40,), torch.randn(4, 40), False, LatencySection(repeats=5, **latency), {("eager", 1): 0.05}, None)


def _net(width: int = 64) -> nn.Module:
    return nn.Sequential(nn.Linear(40, width), nn.ReLU(), nn.Linear(width, 10))


NAMES = ["flops", "params", "latency_ms"]


@pytest.fixture
def aside():
    a = Aside(cores.layout(1, required=True))
    yield a
    a.close()


@pinnable
def test_the_measurer_answers_what_the_worker_would_pinned_to_its_slot(aside):
    net, guide = _net(), _net(256)
    values, attrs = aside.submit(net, _probe(), NAMES, guide=lambda: guide).result()
    here = {name: OBJECTIVES[name].measure(net, _probe()) for name in ("flops", "params")}
    assert values["flops"] == here["flops"][0] and values["params"] == here["params"][0]
    assert attrs["flops_convention"] == here["flops"][1]["flops_convention"]
    assert attrs["latency"]["relative"] > 0 and attrs["latency"]["threads"] == 1  # timed beside the guide
    assert values["latency_ms"] == pytest.approx(attrs["latency"]["relative"] * 0.05)
    assert attrs["latency_aside"]["cores"] == list(aside.layout.slots[0])  # its affinity while it timed
    assert aside.submit(guide, _probe(), ["params"]).result()[0] == {"params": OBJECTIVES["params"].measure(
        guide, _probe())[0]}  # one measurer for the process, answering in turn


@pinnable
def test_an_answer_for_an_interrupted_trial_is_dropped_not_mistaken_for_the_next(aside):
    first = aside.submit(_net(), _probe(), ["params"])
    second = aside.submit(_net(32), _probe(), ["params"])
    assert second.result()[0] == {"params": 32 * 40 + 32 + 32 * 10 + 10}
    with pytest.raises(AsideLost, match="dropped"):
        first.result()


@pinnable
def test_a_failed_measurement_fails_the_trial_as_in_the_worker(aside):
    uncounted = nn.Sequential(nn.Linear(40, 8), nn.Softplus())
    with pytest.raises(UserError, match="aten::softplus"):
        aside.submit(uncounted, _probe(), NAMES).result()


@pinnable
def test_a_lost_measurer_or_a_network_it_cannot_load_is_measured_in_the_worker(aside, monkeypatch):
    class Local(nn.Module):  # only this process can build it: not sent
        def forward(self, x):
            return x

    with pytest.warns(UserWarning, match="quiet slot from now on"):
        with pytest.raises(AsideLost):
            aside.submit(Local(), _probe(), ["params"])
    with pytest.raises(AsideLost):  # said once, then the worker measures
        aside.submit(_net(), _probe(), ["params"])

    again = Aside(aside.layout)
    pending = again.submit(_net(), _probe(), ["params"])
    again._proc.kill()
    ctx = _Ctx(again)
    with pytest.warns(UserWarning, match="stopped answering"):
        measured = objective_mod.measure(_net(), ctx, {"params"}, pending=pending)
    assert measured.values == {"params": OBJECTIVES["params"].measure(_net(), _probe())[0]}
    assert "latency_aside" not in measured.attrs


class _Ctx:
    """What ``objective.measure`` reads of a study's context."""

    def __init__(self, aside):
        self._a = aside
        self.guide = SimpleNamespace(causal=False, tokens=False)
        self.data = SimpleNamespace(sample_shape=(40,), test=SimpleNamespace(head=lambda n: (torch.randn(n, 40),)))
        self.config = SimpleNamespace(latency=LatencySection(repeats=5))
        self.guide_figures, self.guide_runner = None, None

    def aside(self):
        return self._a


STUDY = """
[study]
name = "aside"
search_space = "{space}"
n_trials = 1
sampler = "random"
threads = 1

[objectives]
accuracy = "maximize"
latency_ms = "minimize"

[latency]
repeats = 5
cores = "{cores}"
"""


@pinnable
@pytest.mark.slow
def test_a_trial_is_timed_aside_while_it_trains_and_trains_the_same(tmp_path, monkeypatch):
    from studyfiles import tiny_training

    sent_before_training = []
    train = objective_mod.train

    def spy(ctx, *args, **kwargs):
        aside = ctx.aside()
        sent_before_training.append(aside is not None and aside._sent)
        if aside is not None:
            assert sorted(os.sched_getaffinity(0)) == list(aside.layout.rest)  # the trainer, off the reserved
        return train(ctx, *args, **kwargs)

    monkeypatch.setattr(objective_mod, "train", spy)
    runs = {}
    for setting in ("reserved", "shared"):
        study_file = tmp_path / f"{setting}.toml"
        study_file.write_text(STUDY.format(space=REPO / "search_spaces" / "mnist1d_cnn_to_mlp.py", cores=setting)
                              + tiny_training(steps_per_stage=4))
        before = cores.allowed()
        runs[setting] = nas_theseus.run_study(study_file, tmp_path / setting, progress=False).trials[0]
        assert cores.allowed() == before  # the caller's cores given back
    reserved, shared = runs["reserved"], runs["shared"]
    assert sent_before_training == [2, False]  # the guide's reference, then the trial's network: before training
    timed = reserved.user_attrs["latency_aside"]
    assert timed["cores"] == [cores.allowed()[-1]] and timed["measure_s"] > 0
    assert reserved.user_attrs["latency"]["relative"] > 0  # beside the guide, there too
    assert "latency_aside" not in shared.user_attrs
    # where latency is timed changes nothing that is trained
    assert reserved.values[0] == shared.values[0]
    assert [s["loss_curve"] for s in reserved.user_attrs["stages"]] == \
        [s["loss_curve"] for s in shared.user_attrs["stages"]]


@pinnable
def test_workers_split_only_the_cores_the_trainers_keep(tmp_path, monkeypatch, capsys):
    from workers import write_study

    from nas_theseus.cli import main
    from nas_theseus.study import autoworkers
    from nas_theseus.study.autoworkers import Choice

    seen = {}

    def measured(workdir, device, *, cores, **kw):
        seen.update(cores=cores, affinity=sorted(os.sched_getaffinity(0)))
        return Choice(1, {1: 10.0}, "cpu")

    monkeypatch.setattr(autoworkers, "choose", measured)
    monkeypatch.setattr("nas_theseus.study.launcher.launch",
                        lambda args, devices, threads: seen.setdefault("threads", threads) and 0)
    assert main(["run", str(write_study(tmp_path, 2)), "--workdir", str(tmp_path / "wd"), "--workers", "auto",
                 "--devices", "cpu", "--no-progress", "--set", 'latency.cores="reserved"',
                 "--set", 'objectives.latency_ms="minimize"']) == 0
    rest = cores.allowed()[:-1]  # the last core reserved: --workers auto measured, and the workers split, the rest
    assert seen == {"cores": len(rest), "affinity": rest, "threads": len(rest)}
