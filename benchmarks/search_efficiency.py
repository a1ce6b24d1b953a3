"""Search benchmark (not a test): early stopping and repeat handling on vs off at equal wall-clock, and
searchable partitions against fixed parts at equal trials.

**Early stop and repeats** (``--part early-stop``): the default study (``studies/mnist1d_cnn_to_mlp.toml``) under
the same wall-clock budget (``study.timeout``, default 240 s: about the default study's 12 trials), 3 study
seeds, interleaved on/off per seed. *On*: ``[pruning] enabled`` (margin 0.05 after the last stage, the rule of
``benchmarks/pruning_rule.py``) and repeated proposals answered from the trial they repeat. *Off*: no pruning,
and a repeated proposal runs as a new trial of the budget, as before repeat handling (it resumes its stages and
its fine-tuned network from their checkpoints). Counted, by the deadline: trials finished (a trial still running
then is left out of the count and the front), distinct candidates tried (finished or pruned), pruned, repeats;
the hypervolume of the trials finished (same reference; latency as the ratio to the guide, ``_study_fronts.py``).

**Partitions** (``--part partitions``): the default study and its partitioned twin
(``studies/mnist1d_cnn_to_mlp_partitions.toml``: each MLP layer may replace a run of conv parts; the partition,
widths and order are searched) at the same 12-trial budget, 3 study seeds each, same guide, same recipe and the
same hypervolume reference: hypervolume, best validation accuracy, cheapest front point, and how many trials
used a partition. Median over seeds.

    python benchmarks/search_efficiency.py          # ~55 min on 2 CPU cores (12 studies; finished ones reused)
    python benchmarks/search_efficiency.py --part early-stop --budget 240

Work directories go to benchmarks/out/search_efficiency/ (ignored); finished studies are reused.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from unittest import mock

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import optuna  # noqa: E402
from _common import RESULTS, ROOT, ResultStore, claim, provenance, publish, run_meta  # noqa: E402
from _study_fronts import comparable_hypervolume, comparable_values, describe_reference, reference  # noqa: E402

from nas_theseus.study import objective as study_objective  # noqa: E402
from nas_theseus.study.config import load_study_config  # noqa: E402
from nas_theseus.study.pareto import front  # noqa: E402
from nas_theseus.study.runner import run_study  # noqa: E402

VARIANTS = {"fixed parts": ROOT / "studies" / "mnist1d_cnn_to_mlp.toml",
            "searchable partitions": ROOT / "studies" / "mnist1d_cnn_to_mlp_partitions.toml"}
OUT = ROOT / "benchmarks" / "out" / "search_efficiency"
EARLY_STOP_ARMS = ("on", "off")


def run(variant: str, seed: int, n_trials: int) -> dict:
    config = load_study_config(VARIANTS[variant], [f"study.seed={seed}", f"study.n_trials={n_trials}"])
    study = run_study(config, OUT / f"{variant.replace(' ', '_')}-seed{seed}", progress=False)
    names, directions = list(config.objectives), list(config.objectives.values())
    pf = front(study, names, directions, config.hypervolume_reference)[0]
    done = [t for t in study.get_trials(deepcopy=False)
            if t.state.name == "COMPLETE" and "repeat_of" not in t.user_attrs]
    wall = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    partitioned = sum("+" in t.user_attrs.get("candidate", "") for t in done)
    on_front = {int(n) for n in pf["trial"]}
    return {"hypervolume": comparable_hypervolume(done, config), "reference": reference(config),
            "best_val_accuracy": max(t.values[0] for t in done),
            "best_test_accuracy": max(t.user_attrs["test_accuracy"] for t in done),
            "cheapest_front_flops": float(pf["flops"].min()), "front_size": len(pf), "trials": len(done),
            "partitioned_trials": partitioned, "wall_s": wall,
            "front": [[*map(float, v), t.user_attrs["candidate"]] for t, v in
                      zip(done, comparable_values(done, names)) if t.number in on_front]}


def run_budget(arm: str, seed: int, budget: float) -> dict:
    """The default study under a wall-clock budget, early stopping and repeat handling ``on`` or ``off`` (a
    finished run's folder is read, not run again: delete it to re-run)."""
    config = load_study_config(VARIANTS["fixed parts"], [f"study.seed={seed}", "study.n_trials=1000",
                                                         f"study.timeout={budget}",
                                                         f"pruning.enabled={str(arm == 'on').lower()}"])
    folder = OUT / f"early_stop_{arm}-seed{seed}-{budget:g}s"
    if (folder / "study.db").exists():
        study = optuna.load_study(study_name=config.study.name, storage=f"sqlite:///{folder / 'study.db'}")
    else:
        retrain_repeats = (mock.patch.object(study_objective, "_finished_with", lambda trial, key: None)
                           if arm == "off" else contextlib.nullcontext())
        with retrain_repeats:
            study = run_study(config, folder, progress=False)
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start is not None]
    start = min(t.datetime_start for t in trials)
    by_deadline = [t for t in trials if t.datetime_complete is not None
                   and (t.datetime_complete - start).total_seconds() <= budget]
    complete = [t for t in by_deadline if t.state.name == "COMPLETE"]
    fresh = [t for t in complete if study_objective.REPEAT_OF not in t.user_attrs]
    pruned = [t for t in by_deadline if t.state.name == "PRUNED"]
    keys = [t.user_attrs.get(study_objective.CANDIDATE_KEY) for t in fresh + pruned]
    values = comparable_values(fresh, list(config.objectives))
    return {"hypervolume": comparable_hypervolume(fresh, config),
            "trials": len(fresh), "distinct_candidates": len(set(keys)),
            "retrained_repeats": len(keys) - len(set(keys)),
            "answered_repeats": len(complete) - len(fresh), "pruned": len(pruned),
            "pruned_s": sum((t.datetime_complete - t.datetime_start).total_seconds() for t in pruned),
            "best_val_accuracy": float(values[:, 0].max()) if len(values) else float("nan"),
            "best_test_accuracy": max((t.user_attrs["test_accuracy"] for t in fresh), default=float("nan")),
            "still_running_at_deadline": len(trials) - len(by_deadline), "budget_s": budget}


def _reference_text() -> str:
    """The hypervolume reference of every compared study, in words (they must share it)."""
    texts = {describe_reference(load_study_config(path)) for path in VARIANTS.values()}
    assert len(texts) == 1, f"the studies must share the hypervolume reference, got {texts}"
    return texts.pop()


def run_interleaved(store: ResultStore, seeds, arms, key, run_one, meta: dict) -> dict[str, list[dict]]:
    """Every arm at every seed (seed-major: all arms see the same stretch of the machine), finished runs kept;
    the records per arm in seed order."""
    for seed in seeds:
        for arm in arms:
            if store.get(key(arm, seed)) is None:
                store.put(key(arm, seed), run_one(arm, seed), meta)
    return {arm: [store.get(key(arm, s)) for s in seeds] for arm in arms}


def compare_hypervolumes(a: list[dict], b: list[dict]) -> tuple[int, str]:
    """Seeds on which ``a``'s hypervolume beats ``b``'s, and the medians, ratio and spreads as text."""
    wins = sum(x["hypervolume"] > y["hypervolume"] for x, y in zip(a, b))
    med = [statistics.median(r["hypervolume"] for r in recs) for recs in (a, b)]
    spread = [max(r["hypervolume"] for r in recs) - min(r["hypervolume"] for r in recs) for recs in (a, b)]
    return wins, (f"larger on {wins} of {len(a)}; medians {med[0]:.0f} vs {med[1]:.0f}, ratio {med[0] / med[1]:.3f}; "
                  f"spread between seeds {spread[0]:.0f} and {spread[1]:.0f}")


def early_stop_section(store: ResultStore, seeds, budget: float, meta: dict) -> list[str]:
    recs = run_interleaved(store, seeds, EARLY_STOP_ARMS, lambda arm, s: f"early-stop {arm}|seed{s}|{budget:g}s",
                           lambda arm, s: run_budget(arm, s, budget), meta)
    rows = []
    for arm, label in (("on", "early stop + repeats answered"), ("off", "neither (repeats retrained)")):
        r = recs[arm]
        med = {k: statistics.median(x[k] for x in r) for k in r[0] if isinstance(r[0][k], (int, float))}
        per_seed = ", ".join(f"{x['hypervolume']:.0f}" for x in r)
        rows.append(f"| {label} | {med['hypervolume']:.0f} ({per_seed}) | "
                    f"{med['trials']:.0f} | {med['distinct_candidates']:.0f} | {med['pruned']:.0f} | "
                    f"{med['answered_repeats']:.0f} | {med['retrained_repeats']:.0f} | "
                    f"{med['best_test_accuracy']:.3f} |")
    wins, text = compare_hypervolumes(recs["on"], recs["off"])
    distinct = [statistics.median(x["distinct_candidates"] for x in recs[a]) for a in EARLY_STOP_ARMS]
    more = sum(a["distinct_candidates"] > b["distinct_candidates"] for a, b in zip(recs["on"], recs["off"]))
    return [f"**Early stop and repeats at equal wall-clock** ({budget:g} s per study, the default study, study "
            f"seeds {', '.join(map(str, seeds))}; medians, hypervolume per seed in brackets, reference "
            f"{_reference_text()}; trials finished by the deadline).", "",
            "| search | hypervolume | trials finished | distinct candidates tried | pruned | repeats answered | "
            "repeats retrained | best test acc |", "|---|---|---|---|---|---|---|---|", *rows, "",
            claim(f"early stopping and repeat handling reach a larger hypervolume at equal wall-clock on every "
                  f"seed ({text}; on vs off)", wins == len(seeds)),
            claim(f"they fit more distinct candidates into the budget on every seed (more on {more} of "
                  f"{len(seeds)}; medians {distinct[0]:.0f} vs {distinct[1]:.0f})", more == len(seeds)), ""]


def partitions_section(store: ResultStore, seeds, n_trials: int, meta: dict) -> list[str]:
    by_variant = run_interleaved(store, seeds, VARIANTS, lambda v, s: f"{v}|seed{s}|{n_trials}",
                                 lambda v, s: run(v, s, n_trials), meta)
    rows, med = [], {}
    for variant, recs in by_variant.items():
        med[variant] = {k: statistics.median(r[k] for r in recs) for k in
                        ("hypervolume", "best_val_accuracy", "best_test_accuracy", "cheapest_front_flops",
                         "partitioned_trials", "wall_s")}
        per_seed = ", ".join(f"{r['hypervolume']:.0f}" for r in recs)
        m = med[variant]
        rows.append(f"| {variant} | {m['hypervolume']:.0f} ({per_seed}) | {m['best_val_accuracy']:.3f} | "
                    f"{m['best_test_accuracy']:.3f} | {m['cheapest_front_flops']:.0f} | "
                    f"{m['partitioned_trials']:.0f} of {n_trials} | {m['wall_s']:.0f} |")
    fixed, part = med["fixed parts"], med["searchable partitions"]
    wins, text = compare_hypervolumes(by_variant["searchable partitions"], by_variant["fixed parts"])
    lines = [f"**Partitions at equal trials** ({n_trials} trials per study, study seeds "
             f"{', '.join(map(str, seeds))}; medians over seeds, hypervolume per seed in brackets, reference "
             f"{_reference_text()}).", "",
             "| search | hypervolume | best val acc | best test acc | cheapest front FLOPs | trials with a "
             "partition | study s |", "|---|---|---|---|---|---|---|", *rows, "",
             claim(f"searchable partitions reach a larger hypervolume at equal trials on every seed ({text}; "
                   f"partitioned vs fixed)", wins == len(seeds)),
             claim(f"searchable partitions reach cheaper front points (median cheapest "
                   f"{part['cheapest_front_flops']:.0f} vs {fixed['cheapest_front_flops']:.0f} FLOPs)",
                   part["cheapest_front_flops"] < fixed["cheapest_front_flops"]),
             claim(f"a partitioned study costs no more wall time at equal trials (median {part['wall_s']:.0f} s vs "
                   f"{fixed['wall_s']:.0f} s: a run replaced by one block is one stage)",
                   part["wall_s"] <= fixed["wall_s"]),
             ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-trials", type=int, default=12)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--part", choices=("early-stop", "partitions", "all"), default="all")
    ap.add_argument("--budget", type=float, default=240.0, help="seconds per study in the early-stop comparison")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    meta = run_meta()
    store = ResultStore(RESULTS / "search_efficiency.json")
    lines = []
    if args.part in ("early-stop", "all"):
        lines += early_stop_section(store, args.seeds, args.budget, meta)
    if args.part in ("partitions", "all"):
        lines += partitions_section(store, args.seeds, args.n_trials, meta)
    publish("search_efficiency", "\n".join(lines + [provenance(meta)]))


if __name__ == "__main__":
    main()
