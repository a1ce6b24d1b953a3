"""The README's first command's study, end to end and timed, as a new user runs it: ``nas-theseus run
studies/mnist1d_deploy.toml`` in a fresh work directory with an empty guide cache (the guide is trained first).

    python benchmarks/readme_study.py                  # this machine (device auto), 1 run
    python benchmarks/readme_study.py --device cpu --runs 3
    python benchmarks/readme_study.py --device cuda --set 'latency.cores="shared"'   # latency in a quiet slot

Writes ``benchmarks/results/readme_study_<device type>.json`` (every run: the command's wall time, the guide's
training, each trial's wall time and where it went, where its latency was timed, the printed front) and ``.md``;
a run's ``--set`` settings are recorded with it. The GPU check's ``readme``
step runs the same function on CUDA and sets its figures beside this machine's CPU record.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ROOT, ResultStore, provenance, publish, run_meta  # noqa: E402

STUDY = ROOT / "studies" / "mnist1d_deploy.toml"
PARTS = ("align_s", "finetune_s", "checkpoint_s", "measure_s", "save_s")


def run_readme_study(device: str, *, settings: tuple[str, ...] = (), folder: Path | None = None) -> dict:
    """One run of the README's first study in a fresh folder on ``device`` (``auto``, ``cpu``, ``cuda``) with
    ``--set`` ``settings``; returns its figures (``ok`` False, with the output's tail, when it failed)."""
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "NAS_THESEUS_CACHE": str(tmp / "cache"), "NAS_THESEUS_PROGRESS": "0"}
        cmd = [sys.executable, "-m", "nas_theseus", "run", str(STUDY), "--workdir", str(tmp / "wd"),
               "--no-progress", "--device", device]
        for s in settings:
            cmd += ["--set", s]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"ok": False, "rc": proc.returncode, "tail": (proc.stdout + proc.stderr)[-3000:]}
        outcome = study_outcome(tmp / "wd", tmp / "cache", [sys.executable, "-m", "nas_theseus"], env)
    trial_s = sum(t["wall_s"] for t in outcome["trials"])
    return {"ok": bool(outcome["trials"]), "device": device, "wall_s": round(wall, 1), "trials_s": round(trial_s, 1),
            "per_trial_s": round(trial_s / max(1, len(outcome["trials"])), 2), "rest_s": round(wall - trial_s, 1),
            **outcome, "settings": list(settings)}


def study_outcome(workdir: Path, cache: Path, nas_theseus: list[str], env: dict) -> dict:
    """What a finished run of the study left: its guide (accuracy, epochs, training seconds, from the guide
    cache), each trial's figures and where its time went (``trials/*/metrics.json``), and the front as
    ``nas-theseus pareto --format json`` prints it (``nas_theseus``: the command that runs the package)."""
    front = json.loads(subprocess.run([*nas_theseus, "pareto", str(workdir), "--format", "json"], cwd=ROOT, env=env,
                                      capture_output=True, text=True, check=True).stdout)
    trials = []
    for path in sorted((workdir / "trials").glob("*/metrics.json"), key=lambda p: int(p.parent.name)):
        m = json.loads(path.read_text())
        trials.append({"trial": int(path.parent.name), "wall_s": round(m["trial_wall_s"], 2),
                       **{k: m["timings"].get(k) for k in PARTS}, "val_accuracy": m["val_accuracy"],
                       "test_accuracy": m["test_accuracy"], "flops": m.get("flops"),
                       "latency_ms": m.get("latency_ms"), "latency_relative": (m.get("latency") or {}).get("relative"),
                       "latency_aside": m.get("latency_aside")})
    guide = [json.loads(p.read_text()) for p in (cache / "guides").glob("*.json")]
    return {"guide_s": guide[0].get("wall_s") if guide else None,
            "guide": {k: guide[0].get(k) for k in ("val_accuracy", "test_accuracy", "epochs")} if guide else None,
            "trials": trials, "front": [{k: r.get(k) for k in ("trial", "accuracy", "test_accuracy", "flops",
                                                                 "latency_ms", "deploy_win")} for r in front]}


def table(runs: dict, meta: dict) -> str:
    done = [r for r in runs.values() if r.get("ok")]
    lines = [f"# The README's first study end to end ({meta['device']})", "",
             "| run | wall s | guide s | trials s | per trial s | align | fine-tune | checkpoints | measure | save | "
             "front |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in runs.items():
        if not r.get("ok"):
            lines.append(f"| {key} | failed (rc {r.get('rc')}) | | | | | | | | | |")
            continue
        parts = [sum(t[k] or 0 for t in r["trials"]) for k in PARTS]
        named = f"{key} ({', '.join(r['settings'])})" if r.get("settings") else key
        lines.append(f"| {named} | {r['wall_s']} | {r['guide_s']} | {r['trials_s']} | {r['per_trial_s']} | "
                     + " | ".join(f"{v:.1f}" for v in parts) + f" | {len(r['front'])} points |")
    if done:
        lines += ["", f"Median wall time {statistics.median(r['wall_s'] for r in done):.1f} s, median time a trial "
                      f"{statistics.median(r['per_trial_s'] for r in done):.2f} s over {len(done)} run(s). "
                      "Columns align … save: seconds summed over the trials (metrics.json `timings`)."]
    return "\n".join(lines) + "\n\n" + provenance(meta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a study setting for every run, as `nas-theseus run --set` takes it")
    args = ap.parse_args()
    import torch

    from nas_theseus.utils.devices import resolve_device

    kind = torch.device(resolve_device(args.device)).type
    name = f"readme_study_{kind}"
    meta = run_meta(device=kind)
    store = ResultStore(RESULTS / f"{name}.json")
    for i in range(args.runs):
        print(f"== run {i + 1} of {args.runs}", flush=True)
        store.put(f"run{len(store.records)}", run_readme_study(args.device, settings=tuple(args.set)), meta)
    publish(name, table(store.records, store.provenance_meta(meta)))


if __name__ == "__main__":
    main()
