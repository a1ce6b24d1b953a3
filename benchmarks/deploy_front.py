"""Study benchmark: does a deployer's study find networks cheaper than the guide at its accuracy?

Four studies at equal trial counts, per study seed: the deployer's study (``studies/mnist1d_deploy.toml``: a
64-channel guide whose runs of parts are kept or made cheaper, converted by NoT), its KD-only twin
(``method = "kd"``: the same candidates distilled from the guide, function matching, same budget), its
method-choice twin (``method = ["not", "kd"]``: each trial converts or distils), and the paper's CNN -> MLP
study (``studies/mnist1d_cnn_to_mlp.toml``, its own 25-channel guide). Per study: the hypervolume (latency as the
ratio to the guide, each study on its own reference), the deploy wins (front points cheaper than the guide on a
cost at no more than 1 point below its validation accuracy), and the cheapest point within 1 point of the
guide (its FLOPs and latency as factors of the guide's).

Goals (issue 25), per seed, for the deployer's study: a point at <= 0.5x the guide's FLOPs or latency within 1
point of its accuracy; and ahead of the KD-only twin's best point at no more cost (a point with at least its
validation accuracy at no more FLOPs and latency).

    python benchmarks/deploy_front.py --seeds 0 1 2   # the deployer's study and its KD twin first, then the others
    python benchmarks/deploy_front.py --publish       # the table from the stored results alone (a stopped run)
    python benchmarks/deploy_front.py --from-json     # the same without building the studies (no identity check)

Results: benchmarks/results/deploy_front.{json,md} and the docs block. Work directories go to benchmarks/out/
(ignored), named by the study's identity; a stored result is reused only for the same identity (a changed study
file or search space runs again).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ROOT, ResultStore, claim, median, provenance, publish, run_meta  # noqa: E402
from _figures import fewest_flops_then_accuracy  # noqa: E402
from _study_fronts import comparable_hypervolume, comparable_values  # noqa: E402

from nas_theseus.study.config import load_study_config  # noqa: E402
from nas_theseus.study.context import build_context  # noqa: E402
from nas_theseus.study.objectives import OBJECTIVES  # noqa: E402
from nas_theseus.study.pareto import GUIDE_REFERENCE, front  # noqa: E402
from nas_theseus.study.runner import run_study  # noqa: E402

DEPLOY, PAPER = ROOT / "studies" / "mnist1d_deploy.toml", ROOT / "studies" / "mnist1d_cnn_to_mlp.toml"
STUDIES = {  # name: (study file, method)
    "deploy (NoT)": (DEPLOY, '"not"'),
    "deploy, KD only": (DEPLOY, '"kd"'),
    "deploy, NoT or KD per trial": (DEPLOY, '["not", "kd"]'),
    "CNN -> MLP (NoT)": (PAPER, '"not"'),
}


def prepare(name: str, seed: int, n_trials: int):
    """The study's config, its context (guide, data, search space) and its identity (what it searches, the
    search-space file included: a changed space is a new study, not a stored result)."""
    path, method = STUDIES[name]
    config = load_study_config(path, [f"study.method={method}", f"study.n_trials={n_trials}", f"study.seed={seed}"])
    ctx = build_context(config, progress=False)
    return config, ctx, config.identity(ctx.space.sha256)


def measure(name: str, seed: int, config, ctx, identity: str) -> dict:
    slug = f"{STUDIES[name][0].stem}-{'-'.join(config.methods)}-s{seed}-{identity[:8]}"
    study = run_study(config, ROOT / "benchmarks" / "out" / "deploy_front" / slug, progress=False, ctx=ctx)
    names, directions = list(config.objectives), list(config.objectives.values())
    done = [t for t in study.get_trials(deepcopy=False)
            if t.state.name == "COMPLETE" and "repeat_of" not in t.user_attrs]
    guide = study.user_attrs[GUIDE_REFERENCE]
    pf = front(study, names, directions, config.hypervolume_reference)[0]
    values = comparable_values(done, names)  # latency as the ratio to the guide
    i_acc, i_flops, i_lat = names.index("accuracy"), names.index("flops"), names.index("latency_ms")
    # within 1 point of the guide's validation accuracy: the deploy-win rule's own test
    kept = [(t, v) for t, v in zip(done, values) if OBJECTIVES["accuracy"].keeps(float(v[i_acc]), guide["accuracy"])]
    cheapest = min(kept, key=lambda tv: (tv[1][i_flops], -tv[1][i_acc]), default=None)  # ties: the best accuracy
    best = max(zip(done, values), key=lambda tv: tv[1][i_acc])
    return {"identity": identity, "hypervolume": comparable_hypervolume(done, config), "trials": len(done),
            "guide": {k: guide[k] for k in ("accuracy", "test_accuracy", "flops")},
            "deploy_wins": [{"trial": int(r["trial"]), "win": r["deploy_win"], "method": r["method"]}
                            for _, r in pf.iterrows() if r["deploy_win"]],
            "cheapest_within_1_point": None if cheapest is None else {
                "trial": cheapest[0].number, "flops_x": cheapest[1][i_flops] / guide["flops"],
                "latency_x": float(cheapest[1][i_lat]), "accuracy": float(cheapest[1][i_acc]),
                "test_accuracy": cheapest[0].user_attrs["test_accuracy"],
                "method": cheapest[0].user_attrs["method"], "candidate": cheapest[0].user_attrs["candidate"]},
            "min_latency_x_within_1_point": min((float(v[i_lat]) for _, v in kept), default=None),
            "best": {"trial": best[0].number, "accuracy": float(best[1][i_acc]), "flops": float(best[1][i_flops]),
                     "latency_x": float(best[1][i_lat])},
            "points": [[float(x) for x in v] for v in values]}


def ahead_of(not_points: list, kd_best: dict) -> bool:
    """Some point of the NoT study with at least the KD twin's best validation accuracy at no more FLOPs and no
    more latency (both as the studies score them; latency as the ratio to the guide)."""
    return any(a >= kd_best["accuracy"] and f <= kd_best["flops"] and lat <= kd_best["latency_x"]
               for a, f, lat in not_points)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n-trials", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--publish", action="store_true",
                    help="run nothing: publish the stored results of the current studies (the others: not run)")
    ap.add_argument("--from-json", action="store_true",
                    help="run and build nothing: publish every stored result as it is (a table-only change)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    meta = run_meta(n_trials=args.n_trials)
    store = ResultStore(RESULTS / "deploy_front.json")
    results = {}  # (name, seed): the stored result of the current study, or None
    # the goals need the deployer's study and its KD twin on every seed: those first, then the other twins
    for name in STUDIES:
        for seed in args.seeds:
            key = f"{name} / seed {seed}"
            if args.from_json:
                results[name, seed] = store.get(key)
                continue
            config, ctx, identity = prepare(name, seed, args.n_trials)
            run = functools.partial(measure, name, seed, config, ctx, identity)
            results[name, seed] = store.current(key, identity, run, meta, publish=args.publish)
    text = table(results, args.seeds, args.n_trials, store.provenance_meta(meta))
    if args.from_json:
        text += (f"Table re-rendered from the stored records at commit {meta['commit']} "
                 "(`python benchmarks/deploy_front.py --from-json`; nothing re-run).\n")
    publish("deploy_front", text)


def cheapest_cell(name: str, r: dict) -> str:
    """The row's cheapest point within 1 point of the guide, by fewest FLOPs, then best accuracy (records stored
    before that tie-break are re-read from their points: what those do not hold is said)."""
    c = fewest_flops_then_accuracy(r)
    if c is None:
        return "none"
    test = "test not recorded" if c["test_accuracy"] is None else f"{100 * c['test_accuracy']:.1f}"
    method = c["method"] or (STUDIES[name][1].strip('"') if "[" not in STUDIES[name][1] else "method not recorded")
    return f"{c['flops_x']:.2f}×, {c['latency_x']:.2f}×, {100 * c['accuracy']:.1f} ({test}), {method}"


def table(results: dict, seeds: list[int], n_trials: int, meta: dict) -> str:
    rows = ["| study | seed | hypervolume | deploy wins | cheapest within 1 point of the guide (fewest FLOPs, then "
            "best accuracy): FLOPs × guide, latency × guide, val % (test %), method | guide val % | commit |",
            "|---|---|---|---|---|---|---|"]
    for name in STUDIES:
        for seed in seeds:
            r = results[name, seed]
            if r is None:
                rows.append(f"| {name} | {seed} | not run | | | | |")
                continue
            rows.append(f"| {name} | {seed} | {r['hypervolume']:.4g} | {len(r['deploy_wins'])} | "
                        f"{cheapest_cell(name, r)} | {100 * r['guide']['accuracy']:.1f} | {r['commit']} |")
    claims = []
    for seed in seeds:
        r, kd = results["deploy (NoT)", seed], results["deploy, KD only", seed]
        if r is None or kd is None:
            claims.append(f"- not measured: seed {seed} (its deployer's study or KD twin was not run)")
            continue
        c, lat = r["cheapest_within_1_point"], r["min_latency_x_within_1_point"]
        half = c is not None and (c["flops_x"] <= 0.5 or lat <= 0.5)
        cheapest = "" if c is None else f" (least FLOPs {c['flops_x']:.2f}×, least latency {lat:.2f}×)"
        claims.append(claim(f"seed {seed}: the deployer's study has a point at ≤ 0.5× the guide's FLOPs or latency "
                            f"within 1 point of its accuracy{cheapest}", half))
        claims.append(claim(f"seed {seed}: the deployer's study is ahead of its KD-only twin's best point at no more "
                            f"cost (KD's best: {100 * kd['best']['accuracy']:.1f} % at {kd['best']['flops']:,.0f} "
                            f"FLOPs, {kd['best']['latency_x']:.2f}× latency)", ahead_of(r["points"], kd["best"])))
    hv = {name: [results[name, s]["hypervolume"] for s in seeds if results[name, s]] for name in STUDIES}
    return (f"MNIST-1D, {n_trials} trials per study, study seeds {seeds}; hypervolume on each study's own "
            f"reference (latency as the ratio to its guide; the deploy studies share a reference, the CNN -> MLP "
            f"study has its own guide and reference); median hypervolume over the seeds run: "
            + ", ".join(f"{n} {median(v):.4g} ({len(v)} seeds)" for n, v in hv.items()) + ".\n\n"
            + "\n".join(rows) + "\n\n" + "\n".join(claims) + "\n\n" + provenance(meta))


if __name__ == "__main__":
    main()
