"""Speed benchmark: what a step costs beyond its arithmetic, this tree ÷ an older checkout (not a test).

On a GPU the default study's small networks are launch-bound: a step's Python and host work, not its
arithmetic, set the pace (an H200 ran its stages at 425-476 steps/s, 12-04). The CPU stands in here. Both trees
run in one process, 1 thread, the older one imported under another name (``nas_theseus_before``: the package's
own imports are relative), the two alternating A/B, B/A, ... so that a shared machine's slow drifts fall on both
alike (separate processes per run were tried first: on this 2-core VM their times moved ±20 % from run to run,
more than the effect). Workloads, on the README's study's first trial (its enqueued candidate: conv1 kept, conv2
and conv3 as 32-channel convs):

* ``bs8``: its first stage at batch 8, 300 steps (the plateau rule on, no early stop): steps/s;
* ``bs256``: the same at the study's batch size, 256;
* ``trial``: its whole conversion with the study's settings (both stages, fine-tuning): 1 / seconds.

Each reports the median over the rounds of after ÷ before (> 1: this tree is faster), and whether every run of
both trees gave the same loss curves (and, for the trial, fine-tuning losses, test accuracy and weights).

    git worktree add /tmp/before <commit>
    python benchmarks/step_overhead.py --before /tmp/before      # ~15 min on 2 cores
    python benchmarks/step_overhead.py --publish                 # the table again, from the results file
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

STUDY = ROOT / "studies" / "mnist1d_deploy.toml"
WORKLOADS = {"bs8": (8, 300, 30), "bs256": (256, 300, 12), "trial": (None, 0, 4)}  # batch, steps, rounds
LABELS = {"bs8": "first stage at batch 8: steps/s", "bs256": "first stage at batch 256: steps/s",
          "trial": "the whole first trial's conversion: 1 / s"}

SIDE_BY_SIDE = r"""
import dataclasses, importlib, json, sys, time, torch
torch.set_num_threads(1)
import optuna
batch, steps, rounds = (None if sys.argv[2] == "None" else int(sys.argv[2])), int(sys.argv[3]), int(sys.argv[4])
runs = {}
for name, pkg in (("after", "nas_theseus"), ("before", "nas_theseus_before")):
    mod = lambda sub, pkg=pkg: importlib.import_module(f"{pkg}.{sub}")  # noqa: E731
    config = mod("study.config").load_study_config(sys.argv[1], ['study.device="cpu"'])
    ctx = mod("study.context").build_context(config, progress=False)
    if name == "after":  # the search space builds the newer tree's objects: the older tree gets them as data
        cand, cfg = ctx.candidate(optuna.trial.FixedTrial(config.study.enqueue[0]))
        spec = (cand.to_dict(), dataclasses.asdict(cfg))
    cand = mod("convert.config").Candidate.from_dict(spec[0])
    settings = {**spec[1], "finetune": mod("training").FitConfig(**spec[1]["finetune"])}
    if steps:  # the first stage alone, at that many steps; else the whole trial's conversion
        settings.update(batch_size=batch, steps_per_stage=steps, min_steps=steps)
    fingerprint = mod("utils.hashing").module_fingerprint
    runs[name] = (mod("convert.engine"), ctx, cand, mod("convert.config").ConvertConfig.from_dict(settings),
                  fingerprint)

class Done(Exception):
    pass

def once(name):
    # steps/s of the first stage and its loss curve; with steps 0: 1 / s of the whole conversion and its record
    engine, ctx, cand, cfg, fingerprint = runs[name]
    got = []
    def stop(report, hybrid):
        got.append(report)
        raise Done()
    t0 = time.perf_counter()
    try:
        r = engine.convert(ctx.guide, cand, ctx.data, cfg, device="cpu", progress=False,
                           on_stage=stop if steps else None)
    except Done:
        return got[0].steps / got[0].wall_s, got[0].loss_curve
    rate = 1 / (time.perf_counter() - t0)
    return rate, [[s.loss_curve for s in r.stages], r.finetune.train_loss, r.test_accuracy, fingerprint(r.model)]

once("before"), once("after")  # warm-up
rates = {"before": [], "after": []}
records = set()
for i in range(rounds):
    for name in (("before", "after") if i % 2 == 0 else ("after", "before")):
        rate, record = once(name)
        rates[name].append(rate)
        records.add(json.dumps(record))
print(json.dumps({"rates": rates, "same": len(records) == 1}))
"""


def side_by_side(before: Path, workload: str, cache: str) -> dict:
    """One workload, both trees in one process, alternating (see the module docstring); ``cache``: the guide
    cache both read (the guide trained once)."""
    batch, steps, rounds = WORKLOADS[workload]
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(before / "nas_theseus", Path(tmp) / "nas_theseus_before")
        env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{ROOT}", "NAS_THESEUS_CACHE": cache,
               "NAS_THESEUS_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, "-c", SIDE_BY_SIDE, str(STUDY), str(batch), str(steps), str(rounds)],
                             env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{workload} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(results: dict, meta: dict) -> str:
    med = statistics.median
    lines = [f"A step beyond its arithmetic: this tree ÷ {meta['before']}, both in one process, alternating "
             "(the README's study's first trial, 1 CPU thread).", "",
             "| workload | rounds | before | after | after ÷ before (median of rounds) |", "|---|---|---|---|---|"]
    for w, r in results.items():
        before, after = r["rates"]["before"], r["rates"]["after"]
        ratio = med(a / b for a, b in zip(after, before))
        scale = (lambda v: f"{1 / v:.1f} s") if w == "trial" else (lambda v: f"{v:.0f}")
        lines.append(f"| {LABELS[w]} | {len(after)} | {scale(med(before))} | {scale(med(after))} | {ratio:.3f} |")
    lines += ["", "The trial's row shows seconds (the ratio is of speeds: > 1 is faster).", "",
              claim("the same results from both trees in every run (loss curves; for the trial also the "
                    "fine-tuning losses, test accuracy and trained weights)",
                    all(r["same"] for r in results.values())), "", provenance(meta)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", help="a checkout of the older commit (git worktree add)")
    ap.add_argument("--out", default="step_overhead")
    ap.add_argument("--publish", action="store_true", help="only rewrite the table from the stored results")
    args = ap.parse_args()
    path = ROOT / "benchmarks" / "results" / f"{args.out}.json"
    if args.publish:
        stored = json.loads(path.read_text())
        publish(args.out, table(stored["results"], stored["meta"]))
        return
    if not args.before:
        ap.error("--before is required to measure")
    before = Path(args.before).resolve()
    old = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=before, capture_output=True,
                         text=True).stdout.strip()
    meta = run_meta(before=old)
    results = {}
    with tempfile.TemporaryDirectory() as cache:
        for workload in WORKLOADS:
            print(f"== {workload}", flush=True)
            results[workload] = side_by_side(before, workload, cache)
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    publish(args.out, table(results, meta))


if __name__ == "__main__":
    main()
