"""Latency timed aside against a quiet slot (``[latency] cores``): the README's study run both ways, not a test.

A GPU worker keeps about one core busy and leaves the rest idle, yet in a quiet slot (``cores = "shared"``) each
trial's latency (200 blocks of 10 ms for the network and as many for the guide beside it, about 4 s) is timed
after its training while every worker of the machine pauses. ``"reserved"`` times it from the trial's start on
cores set apart, beside the training. On a CPU the closest proxy is a trainer held to one thread
(``study.threads = 1``, as a GPU worker's host thread is one): the benchmark runs ``nas-theseus run
studies/mnist1d_deploy.toml --set study.threads=1`` with ``study.n_trials`` trials, each way in turn
(``--pairs`` interleaved rounds, each in a fresh folder and guide cache), and records per trial: the wall
time, where its measuring went, ``latency_ms`` and the ratio to the guide it rests on. Both ways train the
same trials (same sampler draws, same arithmetic), so trial by trial the two runs differ only in where latency
was timed; the table sets the medians side by side and checks that the validation accuracies are equal.

    python benchmarks/latency_aside.py                 # 3 pairs of 3 trials (~15 min on 2 cores)
    python benchmarks/latency_aside.py --pairs 1 --trials 1 --out latency_aside_smoke
    python benchmarks/latency_aside.py --from-json     # the table again from the stored record
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ResultStore, provenance, publish, run_meta  # noqa: E402
from readme_study import run_readme_study  # noqa: E402

WAYS = ("shared", "reserved")


def run_way(way: str, trials: int) -> dict:
    settings = ("study.threads=1", f"study.n_trials={trials}", f'latency.cores="{way}"')
    result = run_readme_study("cpu", settings=settings)
    if not result.get("ok"):
        raise SystemExit(f"{way}: the study failed:\n{result.get('tail')}")
    return result


def table(runs: dict, meta: dict) -> str:
    by_way = {w: [r for k, r in runs.items() if k.startswith(w)] for w in WAYS}
    per_trial = {w: [r["per_trial_s"] for r in rs] for w, rs in by_way.items()}
    lines = [f"The README's study with `study.threads = 1` (a trainer on one core, as a GPU worker's host thread "
             f"is) on `{meta['device']}`, latency timed in a quiet slot (`shared`) or aside on a reserved core "
             f"(`reserved`), {len(by_way['shared'])} interleaved pair(s) of runs; medians over the runs.", "",
             "| | shared | reserved | reserved ÷ shared |", "|---|---|---|---|"]
    med = {w: statistics.median(v) for w, v in per_trial.items()}
    lines.append(f"| seconds a trial | {med['shared']:.2f} | {med['reserved']:.2f} | "
                 f"{med['reserved'] / med['shared']:.3f} |")
    for label, keys in (("training (alignment and fine-tuning), s a trial", ("align_s", "finetune_s")),
                        ("measuring after training, s a trial", ("measure_s",))):
        m = {w: statistics.median(_mean(r, keys) for r in rs) for w, rs in by_way.items()}
        lines.append(f"| {label} | {m['shared']:.2f} | {m['reserved']:.2f} | {m['reserved'] / m['shared']:.3f} |"
                     if m["reserved"] > 0.05 else f"| {label} | {m['shared']:.2f} | {m['reserved']:.2f} | |")
    aside = [t["latency_aside"] for r in by_way["reserved"] for t in r["trials"] if t.get("latency_aside")]
    if aside:
        lines.append(f"| measured aside, s a trial (beside training) | | "
                     f"{statistics.median(a['measure_s'] for a in aside):.2f} | |")
    lines += ["", "Trial by trial (the same architecture, both ways), reserved ÷ shared:", "",
              "| figure | median | range | trial pairs |", "|---|---|---|---|"]
    for label, key in (("the network's ratio to the guide, timed side by side (`latency.relative`)",
                        "latency_relative"),
                       ("`latency_ms` (that ratio × the guide's figure, measured once a run)", "latency_ms")):
        ratios = _ratios(by_way, key)
        if ratios:
            lines.append(f"| {label} | {statistics.median(ratios):.3f} | {min(ratios):.3f}–{max(ratios):.3f} | "
                         f"{len(ratios)} |")
    lines += ["", f"Validation accuracies equal trial by trial in every run: {_same_accuracy(by_way)}."]
    return "\n".join(lines) + "\n\n" + provenance(meta)


def _mean(run: dict, keys: tuple[str, ...]) -> float:
    return statistics.mean(sum(t[k] or 0 for k in keys) for t in run["trials"])


def _ratios(by_way: dict, key: str) -> list[float]:
    out = []
    for shared, reserved in zip(by_way["shared"], by_way["reserved"]):
        for a, b in zip(shared["trials"], reserved["trials"]):
            if a.get(key) and b.get(key):
                out.append(b[key] / a[key])
    return out


def _same_accuracy(by_way: dict) -> bool:
    runs = by_way["shared"] + by_way["reserved"]
    return all([t["val_accuracy"] for t in r["trials"]] == [t["val_accuracy"] for t in runs[0]["trials"]]
               for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3, help="interleaved rounds of the two ways")
    ap.add_argument("--trials", type=int, default=3, help="study.n_trials of each run")
    ap.add_argument("--out", default="latency_aside")
    ap.add_argument("--from-json", action="store_true", help="write the table from results/OUT.json; run nothing")
    args = ap.parse_args()
    store = ResultStore(RESULTS / f"{args.out}.json")
    if args.from_json:
        publish(args.out, table(store.records, store.stored_meta))
        return
    meta = run_meta(device="cpu")
    store.records.clear()
    for i in range(args.pairs):
        for way in WAYS:
            print(f"== pair {i + 1} of {args.pairs}: {way}", flush=True)
            store.put(f"{way}{i}", run_way(way, args.trials), meta)
    publish(args.out, table(store.records, store.provenance_meta(meta)))


if __name__ == "__main__":
    main()
