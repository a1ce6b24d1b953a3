"""Search benchmark: searchable partitions against fixed parts at equal trials (not a test).

The default study (``studies/mnist1d_cnn_to_mlp.toml``: one MLP layer per conv part) and its partitioned twin
(``studies/mnist1d_cnn_to_mlp_partitions.toml``: each MLP layer may replace a run of conv parts; the partition,
widths and order are searched) at the same 12-trial budget, 3 study seeds each, same guide, same recipe and the
same hypervolume reference: hypervolume, best validation accuracy, cheapest front point, and how many trials
used a partition. Median over seeds.

    python benchmarks/search_efficiency.py          # ~30 min on 2 CPU cores (6 studies)

Not measured here: early stopping and repeat handling on vs off at equal wall-clock (the early-stop rule's own
benchmark, benchmarks/pruning_rule.py, found it saves only the pruned trials' fine-tuning, seconds each).
Work directories go to benchmarks/out/search_efficiency/ (ignored); finished studies are reused.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ROOT, ResultStore, claim, command, machine, provenance, publish, today  # noqa: E402

from nas_theseus.study.config import load_study_config  # noqa: E402
from nas_theseus.study.pareto import front  # noqa: E402
from nas_theseus.study.runner import run_study  # noqa: E402

VARIANTS = {"fixed parts": ROOT / "studies" / "mnist1d_cnn_to_mlp.toml",
            "searchable partitions": ROOT / "studies" / "mnist1d_cnn_to_mlp_partitions.toml"}
OUT = ROOT / "benchmarks" / "out" / "search_efficiency"


def run(variant: str, seed: int, n_trials: int) -> dict:
    config = load_study_config(VARIANTS[variant], [f"study.seed={seed}", f"study.n_trials={n_trials}"])
    study = run_study(config, OUT / f"{variant.replace(' ', '_')}-seed{seed}", progress=False)
    names, directions = list(config.objectives), list(config.objectives.values())
    pf, hv, ref = front(study, names, directions, config.hypervolume_reference)
    done = [t for t in study.get_trials(deepcopy=False)
            if t.state.name == "COMPLETE" and "repeat_of" not in t.user_attrs]
    wall = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    partitioned = sum("+" in t.user_attrs.get("candidate", "") for t in done)
    return {"hypervolume": hv, "reference": ref, "best_val_accuracy": max(t.values[0] for t in done),
            "best_test_accuracy": max(t.user_attrs["test_accuracy"] for t in done),
            "cheapest_front_flops": float(pf["flops"].min()), "front_size": len(pf), "trials": len(done),
            "partitioned_trials": partitioned, "wall_s": wall,
            "front": [[float(a), float(f), str(c)] for a, f, c in zip(pf["accuracy"], pf["flops"], pf["candidate"])]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-trials", type=int, default=12)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    meta = {"command": command(), "machine": machine(), "date": today()}
    store = ResultStore(RESULTS / "search_efficiency.json")
    for seed in args.seeds:  # interleaved: both variants see the same stretch of the machine
        for variant in VARIANTS:
            key = f"{variant}|seed{seed}|{args.n_trials}"
            if store.get(key) is None:
                store.put(key, run(variant, seed, args.n_trials), meta)
    rows, med = [], {}
    for variant in VARIANTS:
        recs = [store.get(f"{variant}|seed{s}|{args.n_trials}") for s in args.seeds]
        med[variant] = {k: statistics.median(r[k] for r in recs) for k in
                        ("hypervolume", "best_val_accuracy", "best_test_accuracy", "cheapest_front_flops",
                         "partitioned_trials", "wall_s")}
        per_seed = ", ".join(f"{r['hypervolume']:.0f}" for r in recs)
        m = med[variant]
        rows.append(f"| {variant} | {m['hypervolume']:.0f} ({per_seed}) | {m['best_val_accuracy']:.3f} | "
                    f"{m['best_test_accuracy']:.3f} | {m['cheapest_front_flops']:.0f} | "
                    f"{m['partitioned_trials']:.0f} of {args.n_trials} | {m['wall_s']:.0f} |")
    fixed, part = med["fixed parts"], med["searchable partitions"]
    wins = sum(store.get(f"searchable partitions|seed{s}|{args.n_trials}")["hypervolume"]
               > store.get(f"fixed parts|seed{s}|{args.n_trials}")["hypervolume"] for s in args.seeds)
    lines = [f"{args.n_trials} trials per study, study seeds {', '.join(map(str, args.seeds))}; medians over seeds "
             f"(hypervolume per seed in brackets; reference accuracy 0, FLOPs 200,000).", "",
             "| search | hypervolume | best val acc | best test acc | cheapest front FLOPs | trials with a "
             "partition | study s |", "|---|---|---|---|---|---|---|", *rows, "",
             claim(f"searchable partitions reach a larger hypervolume at equal trials on every seed (larger on "
                   f"{wins} of {len(args.seeds)}; ratio of medians {part['hypervolume'] / fixed['hypervolume']:.3f}, "
                   f"inside the spread between seeds)", wins == len(args.seeds)),
             claim(f"searchable partitions reach cheaper front points (median cheapest "
                   f"{part['cheapest_front_flops']:.0f} vs {fixed['cheapest_front_flops']:.0f} FLOPs)",
                   part["cheapest_front_flops"] < fixed["cheapest_front_flops"]),
             claim(f"a partitioned study costs no more wall time at equal trials (median {part['wall_s']:.0f} s vs "
                   f"{fixed['wall_s']:.0f} s: a run replaced by one block is one stage)",
                   part["wall_s"] <= fixed["wall_s"]),
             "", provenance(meta)]
    publish("search_efficiency", "\n".join(lines))


if __name__ == "__main__":
    main()
