"""Helpers for the multi-worker and fault tests: a tiny study file, worker subprocesses, study inspection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState
from studyfiles import tiny_training

REPO = Path(__file__).resolve().parent.parent

# small and quick: 3 parts x 12 steps of alignment, 2 fine-tuning epochs, one thread per worker
STUDY = """
[study]
name = "workers"
search_space = "{space}"
n_trials = {n_trials}
sampler = "random"
seed = 0
threads = 1
heartbeat_interval = 1
grace_period = 3
max_retry = 10
storage_retry = 120

[objectives]
accuracy = "maximize"
flops = "minimize"
"""

STEPS_PER_STAGE = 12


def write_study(folder: Path, n_trials: int) -> Path:
    path = folder / "workers.toml"
    path.write_text(STUDY.format(space=REPO / "tests" / "spaces" / "wide_mlp.py", n_trials=n_trials)
                    + tiny_training(STEPS_PER_STAGE))
    return path


def worker_env(**extra: str) -> dict:
    env = {**os.environ, "NAS_THESEUS_PROGRESS": "0", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("NAS_THESEUS_TEST_HOOK", None)
    env.update(extra)
    return env


def start_worker(study: Path, workdir: Path, *args: str, **env: str) -> subprocess.Popen:
    """``nas-theseus run`` in a process of its own, Ctrl-C (SIGINT) handled as in a terminal even where the tests
    run with it ignored (a background job of a script), which the worker would inherit."""
    cmd = [sys.executable, "-m", "nas_theseus", "run", str(study), "--workdir", str(workdir), "--no-progress",
           *args]
    return subprocess.Popen(cmd, env=worker_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def run_worker(study: Path, workdir: Path, *args: str, timeout: float = 600, **env: str):
    p = start_worker(study, workdir, *args, **env)
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def load_study(workdir: Path) -> optuna.Study:
    meta = json.loads((workdir / "study.json").read_text())
    return optuna.load_study(study_name=meta["study_name"], storage=meta["storage"])


def finished(study: optuna.Study) -> list:
    return [t for t in study.get_trials() if t.state == TrialState.COMPLETE]


def linked(trial) -> bool:
    """A trial whose parameters repeat an earlier one on purpose: a heartbeat retry or a re-enqueued trial."""
    return "failed_trial" in trial.system_attrs or "resumes_trial" in trial.user_attrs


def unexplained_duplicates(study: optuna.Study) -> list:
    """Parameter sets that appear more than once where no retry links the repeats."""
    seen = Counter(json.dumps(t.params, sort_keys=True) for t in study.get_trials() if not linked(t) and t.params)
    return [p for p, n in seen.items() if n > 1]
