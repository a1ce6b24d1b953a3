"""``nas-theseus run STUDY --workers auto``: how many workers a device takes, measured once on this machine.

A study of small networks leaves a GPU idle most of each step: its steps are launch-bound (the README's study ran
its stages at 425-476 steps/s on an H200, 12-04, and four workers sharing that GPU trained 3.4× the samples of
one). So before the workers start, 1, 2, 4, then 8 processes at once run the first stage of the study's first
candidate on the first device (:data:`STEPS` steps each, from a common start signal, after a warm-up) and their
aggregate steps/s is compared; the count per device is the fewest workers within :data:`WITHIN` of the best
(more workers cost memory and split the CPU cores). A larger count is not tried once its workers would not fit
the device's memory, or once a count gains nothing on the one before. Each worker then gets an equal share of
its GPU's memory (``NAS_THESEUS_GPU_MEMORY_FRACTION``) and of the CPU cores. The choice is printed once and
cached per (study, device, torch, cores) under ``$NAS_THESEUS_CACHE/workers-auto``: a resumed study asks once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..utils.devices import MEMORY_FRACTION
from ..utils.files import atomic_write_text, cache_dir
from ..utils.hashing import stable_hash

COUNTS = (1, 2, 4, 8)
STEPS = 200  # timed steps of each worker's stage
WITHIN = 0.05  # the fewest workers whose aggregate steps/s is within this fraction of the best


@dataclasses.dataclass
class Choice:
    per_device: int
    steps_per_s: dict[int, float]  # aggregate, by worker count
    device: str
    cached: bool = False

    def describe(self) -> str:
        rates = ", ".join(f"{n} → {v:.0f}" for n, v in self.steps_per_s.items())
        return (f"--workers auto: {self.per_device} per device (measured on {self.device}: aggregate stage steps/s "
                f"{rates}; the fewest within {WITHIN:.0%} of the best{'; cached' if self.cached else ''})")


def pick(rates: dict[int, float]) -> int:
    """The fewest workers whose aggregate rate is within :data:`WITHIN` of the best."""
    best = max(rates.values())
    return min(n for n, v in rates.items() if v >= (1 - WITHIN) * best)


def choose(workdir: Path, device: str, *, identity: str, cores: int, steps: int | None = None,
           counts: tuple[int, ...] | None = None) -> Choice:
    """The workers per device for the study in ``workdir`` (prepared: its guide trained, its study made),
    measured on ``device`` unless this machine measured it before (``steps`` and ``counts``: default
    :data:`STEPS`, :data:`COUNTS`)."""
    import torch

    steps, counts = steps or STEPS, counts or COUNTS

    from ..utils.devices import describe_device

    name = describe_device(device)
    key = stable_hash({"study": identity, "device": name.split(" ", 1)[-1], "torch": torch.__version__,
                       "cores": cores, "steps": steps, "counts": list(counts)})
    path = cache_dir() / "workers-auto" / f"{key}.json"
    if path.exists():
        stored = json.loads(path.read_text())
        return Choice(stored["per_device"], {int(k): v for k, v in stored["steps_per_s"].items()}, name, True)
    rates: dict[int, float] = {}
    total = torch.cuda.get_device_properties(torch.device(device)).total_memory \
        if torch.device(device).type == "cuda" else None
    for n in counts:
        result = measure(workdir, device, n, threads=max(1, cores // n), steps=steps)
        rates[n] = result["steps_per_s"]
        peak = result.get("peak_reserved_bytes") or 0
        if total and 2 * n * peak > 0.9 * total:  # the next count would not fit the device
            break
        if len(rates) > 1 and rates[n] < (1 + WITHIN) * max(v for m, v in rates.items() if m < n):
            break  # no gain on the counts before: more workers only take memory and cores
    choice = Choice(pick(rates), rates, name)
    atomic_write_text(path, json.dumps({"per_device": choice.per_device, "steps_per_s": rates,
                                        "device": name}, indent=1))
    return choice


def measure(workdir: Path, device: str, n: int, *, threads: int, steps: int) -> dict:
    """``n`` processes at once, each the first stage of the study's first candidate on ``device``; their
    aggregate steps/s (and the largest GPU memory one reserved)."""
    with tempfile.TemporaryDirectory() as tmp:
        go = Path(tmp) / "go"
        env = {**os.environ, MEMORY_FRACTION: str(1.0 / n)}
        procs = [subprocess.Popen([sys.executable, "-m", "nas_theseus.study.autoworkers", str(workdir), "--device",
                                   device, "--threads", str(threads), "--steps", str(steps), "--ready",
                                   f"{tmp}/ready{i}", "--go", str(go)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env) for i in range(n)]
        while sum(Path(f"{tmp}/ready{i}").exists() for i in range(n)) < n:
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.05)
        go.touch()
        outputs = [(p.communicate(), p.returncode) for p in procs]
    bad = [(err, rc) for (_, err), rc in outputs if rc != 0]
    if bad:
        from ..errors import UserError

        err, rc = bad[0]
        last = err.strip().splitlines()[-1] if err.strip() else ""
        raise UserError(f"--workers auto: a measuring worker failed (exit code {rc}): {last}")
    each = [json.loads(out.strip().splitlines()[-1]) for (out, _), _ in outputs]
    return {"steps_per_s": sum(e["steps_per_s"] for e in each),
            "peak_reserved_bytes": max(e.get("peak_reserved_bytes", 0) for e in each)}


class _FirstStage(Exception):
    def __init__(self, report):
        super().__init__("first stage done")
        self.report = report


def _first_stage(ctx, candidate, cfg, activations, steps: int):
    """The candidate's first stage of ``steps`` fixed steps, converted as a trial converts it (no checkpoints)."""
    from ..convert import convert

    def stop(report, hybrid):
        raise _FirstStage(report)

    cfg = dataclasses.replace(cfg, steps_per_stage=steps, stage_stop="fixed")
    try:
        convert(ctx.guide, candidate, ctx.data, cfg, activations=activations, device=ctx.device, progress=False,
                on_stage=stop)
    except _FirstStage as done:
        return done.report
    raise RuntimeError("the candidate has no stage to time")


def _worker(argv: list[str]) -> None:
    import argparse

    import optuna
    import torch

    from .api import recorded_config
    from .context import build_context
    from .workdir import WorkDir

    ap = argparse.ArgumentParser()
    ap.add_argument("workdir")
    for flag in ("--device", "--ready", "--go"):
        ap.add_argument(flag, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = recorded_config(args.workdir, [f"study.device={json.dumps(args.device)}"])
    ctx = build_context(config, progress=False)
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=config.study.seed))
    params = [dict(p) for p in config.study.enqueue]
    candidate, cfg = None, None
    for trial in [optuna.trial.FixedTrial(p) for p in params] + [probe.ask() for _ in range(20)]:
        candidate, cfg = ctx.candidate(trial)
        if candidate.swap_order:
            break
    acts = WorkDir(Path(args.workdir)).activations(ctx.guide, ctx.data, device=ctx.device, progress=False) \
        if ctx.caches_activations() else None
    _first_stage(ctx, candidate, cfg, acts, 5)  # warm-up: first calls, kernels, caches
    Path(args.ready).touch()
    while not Path(args.go).exists():
        time.sleep(0.01)
    cuda = torch.device(ctx.device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
    report = _first_stage(ctx, candidate, cfg, acts, args.steps)
    print(json.dumps({"steps_per_s": report.steps / report.wall_s,
                      **({"peak_reserved_bytes": torch.cuda.max_memory_reserved(ctx.device)} if cuda else {})}))


if __name__ == "__main__":
    _worker(sys.argv[1:])
