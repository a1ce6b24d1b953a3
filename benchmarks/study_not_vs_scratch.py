"""Study benchmark: the default study run three times with one trial budget and seed — NoT targets, the same
targets trained from scratch, and distilled from the guide (``method = "kd"``, function matching), each with
its own rule — with the Pareto fronts, their hypervolumes (same reference point; latency as the ratio to the
guide, ``_study_fronts.py``) and ratios; the best front point against the guide; the study's wall time; and the
per-trial time of a conversion through the study (less the objectives' measurement, reported beside it) vs the
same conversion called directly.

    python benchmarks/study_not_vs_scratch.py               # ~15 min on 2 CPU cores
    python benchmarks/study_not_vs_scratch.py --overhead-trials 3

Results: benchmarks/results/study_not_vs_scratch.{json,md} and the docs block. Work directories go to
benchmarks/out/ (ignored); delete them to run from scratch, keep them to reuse finished studies.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ROOT, claim, provenance, publish, run_meta  # noqa: E402
from _study_fronts import comparable_hypervolume, comparable_values, dominates, reference  # noqa: E402

from nas_theseus.convert import Candidate, ConvertConfig, convert  # noqa: E402
from nas_theseus.study.config import load_study_config  # noqa: E402
from nas_theseus.study.context import build_context  # noqa: E402
from nas_theseus.study.pareto import front  # noqa: E402
from nas_theseus.study.runner import run_study  # noqa: E402
from nas_theseus.training import evaluate  # noqa: E402

STUDY = ROOT / "studies" / "mnist1d_cnn_to_mlp.toml"
METHODS = ("not", "scratch", "kd")


def run(method: str, out: Path, n_trials: int):
    """Run (or, when its work directory holds it, reuse) one study; its wall time is that of its trials, from
    the first trial's start to the last one's end, so a reused study reports the time it took when it ran."""
    config = load_study_config(STUDY, [f'study.method="{method}"', f"study.n_trials={n_trials}"])
    study = run_study(config, out / method, progress=False)
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    wall = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    return config, study, wall



def _key(name: str) -> str:
    """The record's key for an objective: latency is stored as the ratio to the guide, and named so."""
    return "latency_ratio_to_guide" if name == "latency_ms" else name

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-trials", type=int, default=12)
    ap.add_argument("--overhead-trials", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = ROOT / "benchmarks" / "out" / "study_not_vs_scratch"
    results = {**run_meta(), "n_trials": args.n_trials}
    pts = {}
    for method in METHODS:
        config, study, wall = run(method, out, args.n_trials)
        names, directions = list(config.objectives), list(config.objectives.values())
        df = front(study, names, directions, config.hypervolume_reference)[0]
        done = [t for t in study.get_trials(deepcopy=False)
                if t.state.name == "COMPLETE" and "repeat_of" not in t.user_attrs]
        by_number = {t.number: t for t in done}
        on_front = [by_number[int(n)] for n in df["trial"]]
        pts[method] = comparable_values(on_front, names)
        results[method] = {"hypervolume": comparable_hypervolume(done, config), "reference": reference(config),
                           "wall_s": wall,
                           "front": [{"trial": t.number, **dict(zip(map(_key, names), map(float, v))),
                                      "test_accuracy": t.user_attrs["test_accuracy"],
                                      "candidate": t.user_attrs["candidate"]} for t, v in zip(on_front, pts[method])]}
    ref_point = results["not"]["reference"]
    assert all(results[m]["reference"] == ref_point for m in METHODS), "the studies must share the reference"
    for m in METHODS[1:]:
        results[f"hypervolume_ratio_{m}"] = results["not"]["hypervolume"] / results[m]["hypervolume"]
        results[f"not_front_dominates_{m}_front"] = dominates(pts["not"], pts[m], directions)

    # overhead: the study's recorded trial time vs the same conversion called directly (no checkpoints)
    config = load_study_config(STUDY)
    ctx = build_context(config, progress=False)
    results["guide_test_accuracy"] = evaluate(ctx.guide.module, ctx.data.test)[0]
    wd = out / "not"
    import optuna

    study = optuna.load_study(study_name=config.study.name, storage=f"sqlite:///{(wd / 'study.db').resolve()}")
    fresh = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"
             and not any(s["resumed"] for s in t.user_attrs.get("stages", []))][: args.overhead_trials]
    ratios = []
    for t in fresh:
        metrics = json.loads((wd / "trials" / str(t.number) / "metrics.json").read_text())
        cand = Candidate.from_dict(json.loads((wd / "trials" / str(t.number) / "arch.json").read_text())["candidate"])
        cfg_dict = json.loads((wd / "trials" / str(t.number) / "arch.json").read_text())["convert"]
        cfg = ConvertConfig(**{**cfg_dict, "finetune": config.convert.finetune})
        t0 = time.perf_counter()
        convert(ctx.guide, cand, ctx.data, cfg, progress=False)
        direct = time.perf_counter() - t0
        study_s = metrics["trial_wall_s"] - metrics["measure_s"]  # the objectives' measurement is the study's work
        ratios.append({"trial": t.number, "study_s": study_s, "measure_s": metrics["measure_s"], "direct_s": direct,
                       "ratio": study_s / direct})
    results["overhead"] = {"trials": ratios,
                           "median_ratio": statistics.median(r["ratio"] for r in ratios) if ratios else None,
                           "median_measure_s": statistics.median(r["measure_s"] for r in ratios) if ratios else None}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "study_not_vs_scratch.json").write_text(json.dumps(results, indent=1))

    def rows(method):
        return "\n".join(f"| {method} | {r['trial']} | {100 * r['accuracy']:.1f} | {100 * r['test_accuracy']:.1f} | "
                         f"{r['flops']:.0f} | {r['latency_ratio_to_guide']:.3f} | {r['candidate'].split('; head')[0]} |"
                         for r in results[method]["front"])

    ov = results["overhead"]
    best = max(results["not"]["front"], key=lambda r: r["accuracy"])  # the front's accuracy end (by validation)
    guide = results["guide_test_accuracy"]
    text = (f"Default study (`studies/mnist1d_cnn_to_mlp.toml`), {args.n_trials} trials each, seed 0, same budget "
            f"in optimizer steps, each method its own rule; hypervolume of (validation accuracy ↑, FLOPs ↓, "
            f"latency ↓ as the ratio to the guide, eager, batch 1) w.r.t. reference {ref_point}; guide test accuracy "
            f"{100 * guide:.1f} %.\n\n"
            "| method | trial | val acc % | test acc % | FLOPs | latency × guide | candidate |\n"
            "|---|---|---|---|---|---|---|\n"
            + "\n".join(rows(m) for m in METHODS) + "\n\n"
            + "- hypervolume: " + ", ".join(f"{m} {results[m]['hypervolume']:.1f}" for m in METHODS)
            + "; NoT ÷ " + ", ".join(f"{m} {results[f'hypervolume_ratio_{m}']:.3f}" for m in METHODS[1:])
            + "; NoT front dominates the " + ", ".join(
                f"{m} front: {'yes' if results[f'not_front_dominates_{m}_front'] else '**no**'}" for m in METHODS[1:])
            + "\n"
            + claim(f"the best NoT front point (trial {best['trial']}, by validation) within 2 points of the guide "
                    f"on test ({100 * best['test_accuracy']:.1f} vs {100 * guide:.1f})",
                    best["test_accuracy"] >= guide - 0.02) + "\n"
            + claim(f"the NoT study's {args.n_trials} trials in ≤ 5 minutes ({results['not']['wall_s']:.0f} s from "
                    f"the first trial's start to the last one's end, the guide already trained)",
                    results["not"]["wall_s"] <= 300) + "\n"
            + "- study wall time (trials): " + ", ".join(f"{m} {results[m]['wall_s']:.0f} s" for m in METHODS) + "\n"
            f"- overhead (trial through the study, less measuring its objectives, ÷ the same `convert()` called "
            f"directly, median of {len(ov['trials'])} trials without reused stages): "
            + (f"{ov['median_ratio']:.3f}" if ov["median_ratio"] else "n/a")
            + f" ({'≤' if ov['median_ratio'] and ov['median_ratio'] <= 1.15 else '**>**'} 1.15); measuring the "
            f"objectives (FLOPs, parameters, latency) took a median "
            + (f"{ov['median_measure_s']:.1f} s" if ov["median_measure_s"] is not None else "n/a") + " a trial\n\n"
            + provenance(results))
    publish("study_not_vs_scratch", text)


if __name__ == "__main__":
    main()
