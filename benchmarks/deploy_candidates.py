"""Study benchmark: do the deployer's space's obvious candidates keep the guide's accuracy, by NoT and by KD?

``deploy_front.py`` asks whether a 12-trial study *finds* networks cheaper than the guide at its accuracy. This
one asks whether they *exist* in the space: a handful of candidates a deployer would try first (the guide's
layout with narrower or separable convolutions, one low-rank run), each converted by NoT and distilled by KD
(function matching, the same budget), on three study seeds. They run as the deployer's own study
(``studies/mnist1d_deploy.toml``) with the candidates enqueued (``study.enqueue``) and ``n_trials`` equal to
their number, so each is scored exactly as a study trial is: validation accuracy, FLOPs, batch-1 latency
timed beside the guide, test accuracy recorded.

Per candidate: its FLOPs and latency as factors of the guide's, the median validation (test) accuracy over
the seeds by each method, and on how many seeds it is a deploy win (cheaper than the guide on a cost, at no
more than 1 point below its validation accuracy).

    python benchmarks/deploy_candidates.py --seeds 0 1 2
    python benchmarks/deploy_candidates.py --publish   # the table from the stored results alone

Results: benchmarks/results/deploy_candidates.{json,md} and the docs block. Work directories go to
benchmarks/out/deploy_candidates/ (ignored), named by the study's identity; a stored result is reused only
for the same identity.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ROOT, ResultStore, claim, median, provenance, publish, run_meta  # noqa: E402
from _study_fronts import comparable_values  # noqa: E402

from nas_theseus.study.config import load_study_config  # noqa: E402
from nas_theseus.study.context import build_context  # noqa: E402
from nas_theseus.study.objectives import OBJECTIVES  # noqa: E402
from nas_theseus.study.pareto import GUIDE_REFERENCE  # noqa: E402
from nas_theseus.study.runner import run_study  # noqa: E402

DEPLOY = ROOT / "studies" / "mnist1d_deploy.toml"
METHODS = ("not", "kd")
THREE_RUNS = {"partition.cut0": True, "partition.cut1": True, "conv1.kind": "keep", "order3.0": 0, "order3.1": 0}


def _runs(kind: str, channels: int, *, conv1: bool = False) -> dict:
    """conv2 and conv3 (and conv1 if asked) as `kind` convolutions of `channels` channels."""
    params = dict(THREE_RUNS)
    for run in ("conv1", "conv2", "conv3") if conv1 else ("conv2", "conv3"):
        params |= {f"{run}.kind": kind, f"{run}.{kind}.channels": channels}
    return params


CANDIDATES = {  # a name a deployer reads: the space's parameters
    "conv1 kept; conv2, conv3 conv 32": _runs("conv", 32),
    "conv1 kept; conv2, conv3 conv 16": _runs("conv", 16),
    "conv1, conv2, conv3 conv 32": _runs("conv", 32, conv1=True),
    "conv1 kept; conv2, conv3 sepconv 32": _runs("sepconv", 32),
    "conv1 kept; conv2+conv3 lowrank 8": {"partition.cut0": True, "partition.cut1": False, "conv1.kind": "keep",
                                          "conv2+conv3.kind": "lowrank", "conv2+conv3.lowrank.rank": 8,
                                          "order2.0": 0},
}


def prepare(method: str, seed: int):
    config = load_study_config(DEPLOY, [f'study.method="{method}"', f"study.n_trials={len(CANDIDATES)}",
                                        f"study.seed={seed}"])
    config = dataclasses.replace(config, study=dataclasses.replace(config.study,
                                                                   enqueue=list(CANDIDATES.values())))
    ctx = build_context(config, progress=False)
    return config, ctx, config.identity(ctx.space.sha256)


def measure(method: str, seed: int, config, ctx, identity: str) -> dict:
    slug = f"{method}-s{seed}-{identity[:8]}"
    study = run_study(config, ROOT / "benchmarks" / "out" / "deploy_candidates" / slug, progress=False, ctx=ctx)
    names = list(config.objectives)
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    guide = study.user_attrs[GUIDE_REFERENCE]
    rows = {}
    for t, v in zip(done, comparable_values(done, names)):
        name = next((n for n, p in CANDIDATES.items() if all(t.params.get(k) == x for k, x in p.items())), None)
        if name is None:
            continue
        acc, flops, lat = (float(v[names.index(k)]) for k in ("accuracy", "flops", "latency_ms"))
        rows[name] = {"trial": t.number, "accuracy": acc, "test_accuracy": t.user_attrs["test_accuracy"],
                      "flops_x": flops / guide["flops"], "latency_x": lat,
                      "win": OBJECTIVES["accuracy"].keeps(acc, guide["accuracy"]) and min(flops / guide["flops"],
                                                                                          lat) < 1.0}
    missing = set(CANDIDATES) - set(rows)
    if missing:
        raise RuntimeError(f"{method} seed {seed}: no complete trial for {sorted(missing)}")
    return {"identity": identity, "guide": {k: guide[k] for k in ("accuracy", "test_accuracy", "flops")},
            "candidates": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--publish", action="store_true", help="run nothing: publish the stored results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    meta = run_meta(candidates=len(CANDIDATES))
    store = ResultStore(RESULTS / "deploy_candidates.json")
    results = {}
    for seed in args.seeds:
        for method in METHODS:
            key = f"{method} / seed {seed}"
            config, ctx, identity = prepare(method, seed)
            run = functools.partial(measure, method, seed, config, ctx, identity)
            results[method, seed] = store.current(key, identity, run, meta, publish=args.publish)
    ran = {m: [s for s in args.seeds if results[m, s]] for m in METHODS}
    guide = next(r["guide"] for r in results.values() if r)
    rows = ["| candidate | FLOPs × guide | latency × guide | NoT val % (test %) | KD val % (test %) | "
            "deploy win, NoT | deploy win, KD |", "|---|---|---|---|---|---|---|"]
    claims = []
    for name in CANDIDATES:
        per = {m: [results[m, s]["candidates"][name] for s in ran[m]] for m in METHODS}
        first = next(r for rs in per.values() for r in rs)
        cells = []
        for m in METHODS:
            acc, test = median([r["accuracy"] for r in per[m]]), median([r["test_accuracy"] for r in per[m]])
            cells.append(f"{100 * acc:.1f} ({100 * test:.1f})" if per[m] else "not run")
        lat = median([r["latency_x"] for rs in per.values() for r in rs])
        wins = [f"{sum(r['win'] for r in per[m])} / {len(per[m])}" for m in METHODS]
        rows.append(f"| {name} | {first['flops_x']:.2f}× | {lat:.2f}× | {' | '.join(cells)} | {' | '.join(wins)} |")
        if first["flops_x"] <= 0.5 and per["not"]:
            claims.append(claim(f"{name} ({first['flops_x']:.2f}× FLOPs): NoT keeps the guide's validation accuracy "
                                f"within 1 point on every seed run ({len(per['not'])})",
                                all(r["win"] for r in per["not"])))
            if per["kd"]:
                nv, kv = median([r["accuracy"] for r in per["not"]]), median([r["accuracy"] for r in per["kd"]])
                claims.append(claim(f"{name}: NoT's median validation accuracy at least KD's ({100 * nv:.1f} vs "
                                    f"{100 * kv:.1f} %)", nv >= kv))
    text = (f"MNIST-1D, the deployer's study (64-channel guide: {100 * guide['accuracy']:.1f} % validation, "
            f"{100 * guide['test_accuracy']:.1f} % test, {guide['flops']:,.0f} FLOPs) with these candidates "
            f"enqueued, by NoT (seeds {ran['not']}) and by KD (function matching, the same budget; seeds "
            f"{ran['kd']}); medians over the seeds; latency at batch 1 as the ratio to the guide timed beside it.\n\n"
            + "\n".join(rows) + "\n\n" + "\n".join(claims) + "\n\n" + provenance(store.provenance_meta(meta)))
    publish("deploy_candidates", text)


if __name__ == "__main__":
    main()
