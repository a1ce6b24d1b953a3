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
    python benchmarks/step_overhead.py --before /tmp/before --pairs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, claim, provenance, run_meta, save_table  # noqa: E402

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
    cfg = dataclasses.replace(cfg, batch_size=8, steps_per_stage=600, min_steps=600,
                              finetune=FitConfig(max_epochs=1, patience=1))
t0, c0 = time.perf_counter(), time.process_time()
r = convert(ctx.guide, candidate, ctx.data, cfg, device="cpu", progress=False)
s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"s": s, "cpu_s": cpu_s, "align_s": r.timings["align_s"], "steps": [x.steps for x in r.stages],
                  "test_accuracy": r.test_accuracy, "weights": module_fingerprint(r.model.cpu())}))
"""
STUDY = ROOT / "studies" / "mnist1d_deploy.toml"


def run(tree: Path, cache: str, workload: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "NAS_THESEUS_CACHE": cache, "NAS_THESEUS_PROGRESS": "0",
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", WORKLOAD, str(STUDY), workload], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="a checkout of the older commit (git worktree add)")
    ap.add_argument("--pairs", type=int, default=3, help="pairs of the trial workload")
    ap.add_argument("--stage-pairs", type=int, default=10, help="pairs of the batch-8 workload")
    ap.add_argument("--out", default="step_overhead")
    args = ap.parse_args()
    before = Path(args.before).resolve()
    old = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=before, capture_output=True,
                         text=True).stdout.strip()
    meta = run_meta(before=old)
    trees = {"before": before, "after": ROOT}
    records: dict[str, dict[str, list]] = {w: {t: [] for t in trees} for w in ("stage_bs8", "trial")}
    with tempfile.TemporaryDirectory() as cache:
        run(ROOT, cache, "stage_bs8")  # the guide trained once, into the cache both trees read
        for i in range(max(args.pairs, args.stage_pairs)):
            for workload, by_tree in records.items():
                if i >= (args.stage_pairs if workload == "stage_bs8" else args.pairs):
                    continue
                for name, tree in (trees.items() if i % 2 == 0 else reversed(trees.items())):
                    by_tree[name].append(run(tree, cache, workload))
                    print(workload, name, by_tree[name][-1], flush=True)
    stage = {t: [sum(r["steps"]) / r["align_s"] for r in rs] for t, rs in records["stage_bs8"].items()}
    stage_cpu = {t: [r["cpu_s"] for r in rs] for t, rs in records["stage_bs8"].items()}
    ratio_cpu = statistics.median(a / b for a, b in zip(stage_cpu["after"], stage_cpu["before"]))
    trial = {t: [r["s"] for r in rs] for t, rs in records["trial"].items()}
    ratio_stage = statistics.median(a / b for a, b in zip(stage["after"], stage["before"]))
    ratio_trial = statistics.median(a / b for a, b in zip(trial["after"], trial["before"]))
    timed = ("s", "cpu_s", "align_s")
    same = all(json.dumps({k: v for k, v in a.items() if k not in timed}, sort_keys=True)
               == json.dumps({k: v for k, v in b.items() if k not in timed}, sort_keys=True)
               for w in records for a, b in zip(records[w]["after"], records[w]["before"]))
    text = "\n".join([
        f"# A step beyond its arithmetic: this tree ÷ {old} (the README's study, 1 CPU thread)", "",
        "| workload | before | after | after ÷ before (median of pairs) |", "|---|---|---|---|",
        f"| stage at batch 8: alignment steps/s | {statistics.median(stage['before']):.0f} | "
        f"{statistics.median(stage['after']):.0f} | {ratio_stage:.3f} |",
        f"| stage at batch 8: the conversion's CPU s | {statistics.median(stage_cpu['before']):.2f} | "
        f"{statistics.median(stage_cpu['after']):.2f} | {ratio_cpu:.3f} |",
        f"| the study's first trial: conversion s | {statistics.median(trial['before']):.1f} | "
        f"{statistics.median(trial['after']):.1f} | {ratio_trial:.3f} |", "",
        f"Pairs: {args.stage_pairs} (batch 8) and {args.pairs} (trial), interleaved A/B, each run a fresh "
        f"process. Per pair, stage steps/s before {[round(v) for v in stage['before']]}, after "
        f"{[round(v) for v in stage['after']]}; CPU s before {[round(v, 2) for v in stage_cpu['before']]}, after "
        f"{[round(v, 2) for v in stage_cpu['after']]}; trial s before {[round(v, 1) for v in trial['before']]}, "
        f"after {[round(v, 1) for v in trial['after']]}.",
        claim("the same result on both trees (steps, test accuracy, the trained weights' fingerprint)", same),
        "", provenance(meta)])
    save_table(args.out, text)
    (ROOT / "benchmarks" / "results" / f"{args.out}.json").write_text(json.dumps(
        {"meta": meta, "records": records}, indent=1))


if __name__ == "__main__":
    main()
