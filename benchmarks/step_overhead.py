"""Speed benchmark: what a step costs beyond its arithmetic, this tree ÷ an older checkout (not a test).

On a GPU the default study's small networks are launch-bound: a step's Python and host work, not its
arithmetic, set the pace (an H200 ran its stages at 425-476 steps/s, 12-04). The CPU stands in here, at a batch
where the arithmetic is small. Two workloads, each in a fresh process on 1 thread, the two trees alternating
A/B/A/B, median over the pairs:

* ``stage_bs8``: the README's study's first trial (its enqueued candidate: conv1 kept, conv2 and conv3 as
  32-channel convs) converted at batch 8 (2 stages of 600 steps under the study's plateau rule, no early stop
  before them, 1 fine-tuning epoch): alignment steps per second of the stages' wall time, and the conversion's
  CPU seconds (the process's own time: less moved by a busy neighbour on a shared VM than wall time);
* ``trial``: the same candidate converted with the study's own settings, as its trial does (stages, fine-tuning):
  seconds, and whether the two trees give the same result (steps, accuracy, weights fingerprint).

    git worktree add /tmp/before <commit>
    python benchmarks/step_overhead.py --before /tmp/before --pairs 3   # ~15 min on 2 cores
    python benchmarks/step_overhead.py --publish                        # the table again, from the results file
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, claim, provenance, publish, run_meta  # noqa: E402

WORKLOAD = r"""
import dataclasses, json, sys, time, torch
torch.set_num_threads(1)
import optuna
from nas_theseus.convert import convert
from nas_theseus.study.config import load_study_config
from nas_theseus.study.context import build_context
from nas_theseus.training import FitConfig
from nas_theseus.utils.hashing import module_fingerprint
config = load_study_config(sys.argv[1], ['study.device="cpu"'])
ctx = build_context(config, progress=False)
candidate, cfg = ctx.candidate(optuna.trial.FixedTrial(config.study.enqueue[0]))
if sys.argv[2] == "stage_bs8":
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 600
    cfg = dataclasses.replace(cfg, batch_size=8, steps_per_stage=steps, min_steps=steps,
                              finetune=FitConfig(max_epochs=1, patience=1))
t0, c0 = time.perf_counter(), time.process_time()
r = convert(ctx.guide, candidate, ctx.data, cfg, device="cpu", progress=False)
s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"s": s, "cpu_s": cpu_s, "align_s": r.timings["align_s"], "steps": [x.steps for x in r.stages],
                  "test_accuracy": r.test_accuracy, "weights": module_fingerprint(r.model.cpu())}))
"""
STUDY = ROOT / "studies" / "mnist1d_deploy.toml"


def _env(tree: Path, cache: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(tree), "NAS_THESEUS_CACHE": cache, "NAS_THESEUS_PROGRESS": "0",
            "OMP_NUM_THREADS": "1"}


def run(tree: Path, cache: str, workload: str) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKLOAD, str(STUDY), workload], env=_env(tree, cache),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


SIDE_BY_SIDE = r"""
import dataclasses, importlib, json, sys, time, torch
torch.set_num_threads(1)
import optuna
rounds, steps = int(sys.argv[2]), int(sys.argv[3])
runs = {}
for name, pkg in (("after", "nas_theseus"), ("before", "nas_theseus_before")):
    mod = lambda sub, pkg=pkg: importlib.import_module(f"{pkg}.{sub}")  # noqa: E731
    config = mod("study.config").load_study_config(sys.argv[1], ['study.device="cpu"'])
    ctx = mod("study.context").build_context(config, progress=False)
    if name == "after":  # the search space builds the newer tree's objects: the older tree gets them as data
        cand, cfg = ctx.candidate(optuna.trial.FixedTrial(config.study.enqueue[0]))
        spec = (cand.to_dict(), dataclasses.asdict(cfg))
    cand = mod("convert.config").Candidate.from_dict(spec[0])
    settings = {**spec[1], "batch_size": 8, "steps_per_stage": steps, "min_steps": steps,
                "finetune": mod("training").FitConfig(max_epochs=1, patience=1)}
    runs[name] = (mod("convert.engine"), ctx, cand, mod("convert.config").ConvertConfig.from_dict(settings))

class Done(Exception):
    pass

def first_stage(name):
    engine, ctx, cand, cfg = runs[name]
    got = []
    def stop(report, hybrid):
        got.append(report)
        raise Done()
    try:
        engine.convert(ctx.guide, cand, ctx.data, cfg, device="cpu", progress=False, on_stage=stop)
    except Done:
        pass
    return got[0].steps / got[0].wall_s, got[0].loss_curve

first_stage("before"), first_stage("after")  # warm-up
rates = {"before": [], "after": []}
curves = set()
for i in range(rounds):
    for name in (("before", "after") if i % 2 == 0 else ("after", "before")):
        rate, curve = first_stage(name)
        rates[name].append(rate)
        curves.add(json.dumps(curve))
print(json.dumps({"rates": rates, "same_curve": len(curves) == 1}))
"""


def side_by_side(before: Path, rounds: int, steps: int) -> dict:
    """Both trees in one process (the older one imported as ``nas_theseus_before``: the package's own imports
    are relative), the first stage of the batch-8 workload alternating between them ``rounds`` times: slow
    drifts of a shared machine's speed fall on both alike."""
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as cache:
        shutil.copytree(before / "nas_theseus", Path(tmp) / "nas_theseus_before")
        env = {**_env(ROOT, cache), "PYTHONPATH": f"{tmp}{os.pathsep}{ROOT}"}
        run(ROOT, cache, "stage_bs8")  # the guide trained once, into the cache both trees read
        out = subprocess.run([sys.executable, "-c", SIDE_BY_SIDE, str(STUDY), str(rounds), str(steps)], env=env,
                             capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(before: Path, pairs: int, stage_pairs: int) -> dict[str, dict[str, list]]:
    """Every workload's records per tree, the two trees alternating (A/B, then B/A)."""
    trees = {"before": before, "after": ROOT}
    records: dict[str, dict[str, list]] = {w: {t: [] for t in trees} for w in ("stage_bs8", "trial")}
    with tempfile.TemporaryDirectory() as cache:
        run(ROOT, cache, "stage_bs8")  # the guide trained once, into the cache both trees read
        for i in range(max(pairs, stage_pairs)):
            for workload, by_tree in records.items():
                if i >= (stage_pairs if workload == "stage_bs8" else pairs):
                    continue
                for name, tree in (trees.items() if i % 2 == 0 else reversed(trees.items())):
                    by_tree[name].append(run(tree, cache, workload))
                    print(workload, name, by_tree[name][-1], flush=True)
    return records


def table(records: dict, meta: dict, paired: dict | None = None) -> str:
    stage = {t: [sum(r["steps"]) / r["align_s"] for r in rs] for t, rs in records["stage_bs8"].items()}
    stage_cpu = {t: [r["cpu_s"] for r in rs] for t, rs in records["stage_bs8"].items()}
    trial = {t: [r["s"] for r in rs] for t, rs in records["trial"].items()}

    def ratio(by_tree):
        return statistics.median(a / b for a, b in zip(by_tree["after"], by_tree["before"]))

    timed = ("s", "cpu_s", "align_s")
    same = all(json.dumps({k: v for k, v in a.items() if k not in timed}, sort_keys=True)
               == json.dumps({k: v for k, v in b.items() if k not in timed}, sort_keys=True)
               for w in records for a, b in zip(records[w]["after"], records[w]["before"]))
    med = statistics.median
    return "\n".join([
        f"A step beyond its arithmetic: this tree ÷ {meta['before']} (the README's study, 1 CPU thread).", "",
        "| workload | before | after | after ÷ before (median of pairs) |", "|---|---|---|---|",
        f"| stage at batch 8: alignment steps/s | {med(stage['before']):.0f} | {med(stage['after']):.0f} | "
        f"{ratio(stage):.3f} |",
        f"| stage at batch 8: the conversion's CPU s | {med(stage_cpu['before']):.2f} | "
        f"{med(stage_cpu['after']):.2f} | {ratio(stage_cpu):.3f} |",
        f"| the study's first trial: conversion s | {med(trial['before']):.1f} | {med(trial['after']):.1f} | "
        f"{ratio(trial):.3f} |",
        *([f"| stage at batch 8, both trees in one process, alternating: steps/s | "
           f"{med(paired['rates']['before']):.0f} | {med(paired['rates']['after']):.0f} | "
           f"{med(a / b for a, b in zip(paired['rates']['after'], paired['rates']['before'])):.3f} |"]
          if paired else []), "",
        f"Pairs: {len(stage['after'])} (batch 8) and {len(trial['after'])} (trial), interleaved A/B, each run a "
        f"fresh process. Per pair, stage steps/s before {[round(v) for v in stage['before']]}, after "
        f"{[round(v) for v in stage['after']]}; CPU s before {[round(v, 2) for v in stage_cpu['before']]}, after "
        f"{[round(v, 2) for v in stage_cpu['after']]}; trial s before {[round(v, 1) for v in trial['before']]}, "
        f"after {[round(v, 1) for v in trial['after']]}." + (
            f" In one process: {len(paired['rates']['after'])} first stages of each tree, alternating (the older "
            f"tree imported under another name), the same loss curve every time: {paired['same_curve']}."
            if paired else ""), "",
        claim("the same result on both trees (steps, test accuracy, the trained weights' fingerprint)", same),
        "", provenance(meta)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", help="a checkout of the older commit (git worktree add)")
    ap.add_argument("--pairs", type=int, default=3, help="pairs of the trial workload")
    ap.add_argument("--stage-pairs", type=int, default=10, help="pairs of the batch-8 workload")
    ap.add_argument("--out", default="step_overhead")
    ap.add_argument("--publish", action="store_true", help="only rewrite the table from the stored results")
    ap.add_argument("--rounds", type=int, default=20, help="alternations of the in-process comparison")
    args = ap.parse_args()
    path = ROOT / "benchmarks" / "results" / f"{args.out}.json"
    if args.publish:
        stored = json.loads(path.read_text())
        publish(args.out, table(stored["records"], stored["meta"], stored.get("side_by_side")))
        return
    if not args.before:
        ap.error("--before is required to measure")
    before = Path(args.before).resolve()
    old = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=before, capture_output=True,
                         text=True).stdout.strip()
    meta = run_meta(before=old)
    records = measure(before, args.pairs, args.stage_pairs)
    paired = side_by_side(before, args.rounds, 300)
    path.write_text(json.dumps({"meta": meta, "records": records, "side_by_side": paired}, indent=1))
    publish(args.out, table(records, meta, paired))


if __name__ == "__main__":
    main()
