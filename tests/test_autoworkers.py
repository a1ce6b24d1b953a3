"""``--workers auto`` (nas_theseus/study/autoworkers.py): a count per device measured once (1, 2, 4, 8 workers
running the study's first stage at once), the fewest within 5 % of the best, cached, printed; and each worker
that shares a GPU takes its share of that GPU's memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from workers import write_study

from nas_theseus.cli import main
from nas_theseus.study import autoworkers
from nas_theseus.study.autoworkers import Choice, choose, pick
from nas_theseus.study.config import load_study_config
from nas_theseus.study.launcher import worker_env
from nas_theseus.study.runner import prepare_study


def test_the_fewest_workers_within_five_percent_of_the_best():
    assert pick({1: 100.0, 2: 190.0, 4: 200.0, 8: 205.0}) == 4
    assert pick({1: 100.0, 2: 99.0}) == 1
    assert pick({1: 100.0, 2: 300.0, 4: 290.0}) == 2


def test_counts_stop_once_they_gain_nothing_and_the_choice_is_cached(tmp_path, monkeypatch):
    rates = {1: 100.0, 2: 190.0, 4: 196.0, 8: 400.0}  # 4 gains under 5 % on 2: 8 is never tried
    tried = []
    monkeypatch.setattr(autoworkers, "measure", lambda wd, device, n, **kw: tried.append(n) or
                        {"steps_per_s": rates[n]})
    first = choose(tmp_path, "cpu", identity="s", cores=2)
    assert tried == [1, 2, 4] and first.per_device == 2 and not first.cached
    assert "--workers auto: 2 per device (measured on cpu: aggregate stage steps/s 1 → 100, 2 → 190, 4 → 196" \
        in first.describe()
    again = choose(tmp_path, "cpu", identity="s", cores=2)
    assert tried == [1, 2, 4] and again.cached and again.per_device == 2 and "cached" in again.describe()
    choose(tmp_path, "cpu", identity="another study", cores=2)
    assert tried == [1, 2, 4, 1, 2, 4]  # measured per study


def test_a_worker_sharing_a_gpu_takes_its_share_of_its_memory():
    assert worker_env(0, 4, "cuda:0")["NAS_THESEUS_GPU_MEMORY_FRACTION"] == "0.250000"
    assert "NAS_THESEUS_GPU_MEMORY_FRACTION" not in worker_env(0, 1, "cuda:0")
    assert "NAS_THESEUS_GPU_MEMORY_FRACTION" not in worker_env(0, 2, "cpu")


def test_workers_auto_starts_the_measured_count_on_every_listed_device(tmp_path, monkeypatch, capsys):
    study_file, wd = write_study(tmp_path, 2), tmp_path / "wd"
    seen = {}

    def measured(workdir, device, **kw):
        seen["device"] = device
        return Choice(3, {1: 10.0, 2: 19.0, 4: 30.0}, "cpu")

    monkeypatch.setattr(autoworkers, "choose", measured)
    monkeypatch.setattr("nas_theseus.study.launcher.launch",
                        lambda args, devices, threads: seen.setdefault("devices", devices) and 0)
    assert main(["run", str(study_file), "--workdir", str(wd), "--workers", "auto", "--devices", "cpu",
                 "--no-progress"]) == 0
    assert seen["device"] == "cpu" and seen["devices"] == ["cpu"] * 3
    assert "--workers auto: 3 per device" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: a count or auto
        main(["run", str(study_file), "--workers", "none"])
    assert "--workers takes a count or auto, got 'none'" in capsys.readouterr().err


@pytest.mark.slow
def test_the_measurement_runs_real_workers_on_the_study_first_stage(tmp_path):
    study_file, wd = write_study(tmp_path, 2), tmp_path / "wd"
    study = prepare_study(load_study_config(study_file), wd, progress=False)
    choice = choose(Path(wd), "cpu", identity=study.user_attrs["identity"], cores=2, steps=10, counts=(1, 2))
    assert set(choice.steps_per_s) <= {1, 2} and 1 in choice.steps_per_s and choice.steps_per_s[1] > 0
    assert choice.per_device in choice.steps_per_s
