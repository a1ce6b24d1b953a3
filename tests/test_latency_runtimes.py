"""Latency where the network is deployed: eager PyTorch, torch.compile, ONNX Runtime; batch sizes as a list; the
guide measured the same way once per study."""

from __future__ import annotations

import pytest
import torch
from test_study_cli import load, write_study

from nas_theseus.cli import main
from nas_theseus.errors import UserError
from nas_theseus.export_onnx import missing_packages
from nas_theseus.measure import measure_latency
from nas_theseus.measure.runtimes import RUNTIMES


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(40, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def _needs(runtime: str) -> None:
    if runtime == "onnxruntime" and missing_packages():
        pytest.skip(f"the onnx extra is not installed (missing: {', '.join(missing_packages())})")


@pytest.mark.parametrize("runtime", ["eager", "onnxruntime", pytest.param("compile", marks=pytest.mark.slow)])
def test_each_runtime_times_the_network(runtime):
    _needs(runtime)
    lat = measure_latency(_net(), (1, 40), batch_size=4, repeats=5, warmup=2, threads=1, runtime=runtime)
    assert lat.runtime == runtime and lat.batch_size == 4 and lat.threads == 1
    assert 0 < lat.median_ms <= lat.p90_ms
    if runtime == "onnxruntime":  # the exported graph was checked against PyTorch before it was timed
        assert lat.prepared["onnx_max_abs_diff"] <= 1e-4 and lat.prepared["export_s"] > 0
    if runtime == "compile":
        assert lat.prepared["compile_s"] > 0


def test_runtime_mistakes_are_one_line():
    with pytest.raises(UserError, match="unknown latency runtime 'onnx'.*valid: compile, eager, onnxruntime"):
        measure_latency(_net(), (1, 40), runtime="onnx")
    with pytest.raises(UserError, match="runs on the CPU only"):
        measure_latency(_net(), (1, 40), runtime="onnxruntime", device="meta")
    assert set(RUNTIMES) == {"eager", "compile", "onnxruntime"}


def test_study_file_runtime_and_batch_sizes_are_checked(tmp_path, capsys):
    study_file = write_study(tmp_path)
    for value, says in [('"onxruntime"', "unknown latency.runtime 'onxruntime' (did you mean 'onnxruntime'?)"),
                        ("[1, 0]", "latency.batch_size must be a positive integer or a list of them")]:
        key = "runtime" if "runtime" in says else "batch_size"
        assert main(["run", str(study_file), "--workdir", str(tmp_path / "wd"), "--no-progress",
                     "--set", f"latency.{key}={value}"]) == 2
        assert says in capsys.readouterr().err
    assert not (tmp_path / "wd").exists()


@pytest.mark.slow
def test_a_study_records_every_runtime_and_batch_size_and_the_guide(tmp_path, capsys):
    _needs("onnxruntime")
    study_file, wd = write_study(tmp_path, n_trials=1), tmp_path / "wd"
    assert main(["run", str(study_file), "--workdir", str(wd), "--no-progress", "--set",
                 'latency.runtime=["eager", "onnxruntime"]', "--set", "latency.batch_size=[1, 8]"]) == 0
    out = capsys.readouterr().out
    study = load(wd)
    trial = study.trials[0]
    table = trial.user_attrs["latency_table"]
    assert [(r["runtime"], r["batch_size"]) for r in table] == [("eager", 1), ("eager", 8), ("onnxruntime", 1),
                                                                 ("onnxruntime", 8)]
    ref = study.user_attrs["guide_reference"]
    assert 0 <= ref["accuracy"] <= 1 and ref["flops"] > 0 and ref["latency_ms"] > 0  # how good: test_guides
    assert [(r["runtime"], r["batch_size"]) for r in ref["latency_table"]] == [(r["runtime"], r["batch_size"])
                                                                               for r in table]
    # every figure: the network's ratio to the guide, timed side by side, times the guide's own figure
    for row, guide_row in zip(table, ref["latency_table"]):
        assert row["relative"] > 0 and row["reference_ms"] > 0
        assert row["figure_ms"] == pytest.approx(row["relative"] * guide_row["median_ms"])
    assert trial.values[2] == table[0]["figure_ms"] == trial.user_attrs["latency"]["figure_ms"]  # the objective
    assert trial.user_attrs["latency_basis"].startswith("relative to the guide")
    assert trial.user_attrs["latency"]["device"] == "cpu" and trial.user_attrs["device"] == "cpu"
    assert set(trial.user_attrs["timings"]) == {"align_s", "finetune_s", "checkpoint_s", "measure_s", "save_s"}
    assert trial.user_attrs["versions"]["torch"] == torch.__version__ and "gpu_memory" not in trial.user_attrs
    assert "guide (reference): accuracy" in out and "latency_ms" in out


def test_latency_device_is_checked_at_load_and_onnxruntime_stays_on_the_cpu(tmp_path, capsys):
    study_file = write_study(tmp_path)
    for sets, says in [(['latency.device="cuda"', 'latency.runtime="onnxruntime"'],
                        "latency.runtime 'onnxruntime' runs on the CPU only, but latency.device is 'cuda'"),
                       (['latency.device="gpu"'], "latency.device must be cpu, cuda or cuda:i, got 'gpu'")]:
        args = [a for kv in sets for a in ("--set", kv)]
        assert main(["run", str(study_file), "--workdir", str(tmp_path / "wd"), "--no-progress", *args]) == 2
        assert says in capsys.readouterr().err
    assert not (tmp_path / "wd").exists()


def test_a_failed_guide_measurement_is_retried_once_then_stops_the_run(monkeypatch):
    """Never stored: with no reference, every later trial's latency would silently become an absolute figure."""
    import optuna

    from nas_theseus.study import guide_reference as module

    calls = []

    def flaky(ctx):
        calls.append(1)
        if len(calls) < 2:
            raise RuntimeError("Input type (torch.cuda.FloatTensor) and weight type (torch.FloatTensor) differ")
        return {"accuracy": 0.9}

    class Ctx:
        guide_figures = None

    study, ctx = optuna.create_study(), Ctx()
    study.set_user_attr(module.ATTR, {"error": "stored by an earlier version"})  # measured again
    monkeypatch.setattr(module, "guide_reference", flaky)
    module.record_guide_reference(study, ctx)
    assert len(calls) == 2 and study.user_attrs[module.ATTR] == ctx.guide_figures == {"accuracy": 0.9}

    def broken(ctx):
        raise RuntimeError("no luck\ntraceback lines")

    monkeypatch.setattr(module, "guide_reference", broken)
    fresh = optuna.create_study()
    with pytest.raises(UserError, match=r"the guide could not be measured as the study's reference \(RuntimeError: "
                                        r"no luck\); .* so the study stops here"):
        module.record_guide_reference(fresh, Ctx())
    assert module.ATTR not in fresh.user_attrs
