"""Block-library benchmark (not a test): a study seeded by the block library against TPE alone, at equal
wall-clock, on a guide deep enough for the question (studies/mnist1d_deep_deploy.toml: a six-part MNIST-1D CNN,
runs of one or two parts, 66 blocks).

Per study seed, the two arms run side by side, one torch thread each (2 cores, nothing else running), each for the
same ``--budget`` seconds counted from its start (its context, the library build for the library arm, its trials):

* **tpe**: ``[library] enabled = false``, the sampler alone;
* **library**: the library built (every block 200 steps alone), its predicted front enqueued (one candidate per
  FLOPs level 0.2 / 0.4 / 0.6 of the guide's), then TPE as usual.

Counted per arm: the trials that finished within the budget (a trial still running then is left out); the
validation hypervolume of their front (accuracy x FLOPs, reference: accuracy 0, the guide's FLOPs); the front's
test accuracies. Over both arms' finished trials (the same space): Kendall's tau between the library's predicted
and the converted validation accuracy (raw additive, and calibrated leave-one-out). And the time to answer a new
budget from the stored library: in process (library read from its JSON, predictor calibrated, five budgets
solved), and ``nas-theseus library WORKDIR --budget flops=0.3`` end to end.

    python benchmarks/library_vs_tpe.py                 # 3 seeds x 600 s, ~33 min on 2 cores
    python benchmarks/library_vs_tpe.py --variant       # then the five-level variant's arms, ~22 min more
    python benchmarks/library_vs_tpe.py --publish       # the table from the stored results only

Work directories go to benchmarks/out/library_vs_tpe/ (ignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ROOT, ResultStore, claim, median, provenance, publish, run_meta  # noqa: E402

STUDY = ROOT / "studies" / "mnist1d_deep_deploy.toml"
OUT = ROOT / "benchmarks" / "out" / "library_vs_tpe"
ARMS = ("tpe", "library")
# the variant (--variant): the library's front enqueued at five levels, down to the cheap end (chosen after the
# first run, where TPE's cheap points were the library arm's gap: its seeds are the same, so read it as a lead)
VARIANT = "library-5-levels"
ARM_SETTINGS = {VARIANT: ["library.levels=[0.05, 0.1, 0.2, 0.4, 0.6]"]}
GOALS = {"hypervolume_ratio": 1.2, "tau": 0.6, "answer_s": 5.0}


def run_arm(arm: str, seed: int, budget: float) -> None:
    """One arm of one seed, in this process (one torch thread): prepare, then trials until the budget is spent."""
    import torch

    torch.set_num_threads(1)
    from nas_theseus.study.config import load_study_config
    from nas_theseus.study.runner import prepare_study, run_study

    start = time.time()
    settings = [f"study.seed={seed}", "study.threads=1", "study.n_trials=1000",
                f"library.enabled={'false' if arm == 'tpe' else 'true'}", *ARM_SETTINGS.get(arm, [])]
    config = load_study_config(STUDY, settings)
    workdir = OUT / f"{arm}-seed{seed}"
    prepare_study(config, workdir, progress=False)  # context; the library arm builds its library here
    prepared = time.time()
    run_study(config, workdir, progress=False, timeout=max(1.0, budget - (prepared - start)))
    (workdir / "arm.json").write_text(json.dumps({"start": start, "prepared_s": prepared - start, "budget": budget}))


def run_side_by_side(jobs: list[tuple[str, int]], budget: float) -> None:
    """Arms (arm, seed) two at a time, side by side, each in its own process (one thread each, two cores)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for i in range(0, len(jobs), 2):
        procs = [(arm, seed, subprocess.Popen([sys.executable, __file__, "--arm", arm, "--seed", str(seed),
                                               "--budget", str(budget)], env=env, stdout=subprocess.DEVNULL))
                 for arm, seed in jobs[i:i + 2]]
        for arm, seed, p in procs:
            if p.wait() != 0:
                raise SystemExit(f"arm {arm} of seed {seed} failed (exit {p.returncode})")


CURVE = (0.2, 0.4, 0.6, 0.8, 1.0)  # fractions of the budget at which the hypervolume is also taken


def _finished(study, start: float, seconds: float) -> list:
    """The trials that counted and finished within ``seconds`` of the arm's start."""
    import optuna

    from nas_theseus.study.objective import REPEAT_OF

    deadline = dt.datetime.fromtimestamp(start + seconds)
    return [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if REPEAT_OF not in t.user_attrs and t.datetime_complete <= deadline]


def _front(trials: list, config) -> tuple[float, list]:
    """The hypervolume of ``trials``' front (accuracy x FLOPs, the study's reference) and the front's trials."""
    import numpy as np

    from nas_theseus.study.pareto import hypervolume, pareto_mask

    directions = list(config.objectives.values())
    values = np.array([t.values for t in trials], dtype=float).reshape(-1, len(directions))
    mask = pareto_mask(values, directions) if len(trials) else np.zeros(0, bool)
    ref = np.array([float(config.hypervolume_reference[n]) for n in config.objectives])
    return (hypervolume(values[mask], directions, ref) if mask.any() else 0.0), [t for t, m in zip(trials, mask) if m]


def _arm_record(workdir: Path, config) -> dict:
    from nas_theseus.study.api import open_study

    _, _, study = open_study(workdir)
    meta = json.loads((workdir / "arm.json").read_text())
    trials = _finished(study, meta["start"], meta["budget"])
    volume, front = _front(trials, config)
    curve = [_front(_finished(study, meta["start"], f * meta["budget"]), config)[0] for f in CURVE]
    return {"finished": len(trials), "prepared_s": round(meta["prepared_s"], 1), "hypervolume": volume,
            "hypervolume_curve": curve, "from_library": sum("library_predicted" in t.user_attrs for t in trials),
            "front": [{"trial": t.number, "val_accuracy": t.values[0], "flops": t.values[1],
                       "test_accuracy": t.user_attrs.get("test_accuracy"),
                       "from_library": "library_predicted" in t.user_attrs} for t in sorted(front,
                                                                                           key=lambda t: t.values[1])]}


def _library_figures(seed: int, config, arm: str) -> dict:
    """Kendall tau over both arms' converted trials, and the time to answer new budgets from the stored library."""
    from nas_theseus.library.answer import absolute_budgets, parse_budget, propose
    from nas_theseus.library.library import BlockLibrary
    from nas_theseus.library.predict import calibrate
    from nas_theseus.study.api import open_study
    from nas_theseus.study.context import build_context
    from nas_theseus.study.library import observed

    workdir = OUT / f"{arm}-seed{seed}"
    ctx = build_context(config, progress=False)
    (path,) = (workdir / "library").glob("library-*.json")
    stored = BlockLibrary.load(path)
    pairs = [p for a in ("tpe", arm) for p in observed(open_study(OUT / f"{a}-seed{seed}")[2], ctx, stored)]
    t0 = time.perf_counter()
    library = BlockLibrary.load(path)
    predictor = calibrate(library, pairs)
    answers = [propose(library, predictor, absolute_budgets(library, [parse_budget(f"flops={r}")]), space=ctx.space,
                       guide=ctx.guide, n=3) for r in (0.1, 0.2, 0.3, 0.5, 0.8)]
    answer_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cli = subprocess.run([sys.executable, "-m", "nas_theseus", "library", str(workdir), "--budget", "flops=0.3",
                          "--no-progress"], capture_output=True, text=True, env={**os.environ,
                                                                                 "PYTHONPATH": str(ROOT)})
    cli_s = time.perf_counter() - t0
    if cli.returncode != 0:
        raise SystemExit(f"nas-theseus library failed: {cli.stderr[-500:]}")
    return {"tau_raw": predictor.tau_raw, "tau": predictor.tau, "tau_over": predictor.observed,
            "answer_s": round(answer_s, 3), "answers": sum(len(a) for a in answers), "cli_s": round(cli_s, 2),
            "library_build": library.build, "blocks": len([o for o in library.options if o.spec is not None]),
            "guide_val_accuracy": library.guide_accuracy}


def measure(seed: int, budget: float, arm: str = "library") -> dict:
    """The record of ``arm`` (the library arm or its variant) against the TPE arm of ``seed``; runs the two first
    where they have not run."""
    from nas_theseus.study.config import load_study_config

    missing = [(a, seed) for a in ("tpe", arm) if not (OUT / f"{a}-seed{seed}" / "arm.json").exists()]
    run_side_by_side(missing, budget)
    config = load_study_config(STUDY, [f"study.seed={seed}", *ARM_SETTINGS.get(arm, [])])
    arms = {a: _arm_record(OUT / f"{a}-seed{seed}", config) for a in ("tpe", arm)}
    ratio = arms[arm]["hypervolume"] / arms["tpe"]["hypervolume"] if arms["tpe"]["hypervolume"] else None
    return {"seed": seed, "arm": arm, "budget_s": budget, "arms": {"tpe": arms["tpe"], "library": arms[arm]},
            "hypervolume_ratio": ratio, **_library_figures(seed, config, arm)}


def _identity(budget: float) -> str:
    import hashlib

    space = ROOT / "search_spaces" / "mnist1d_deep_deploy.py"
    return hashlib.sha256(STUDY.read_bytes() + space.read_bytes() + str(budget).encode()).hexdigest()[:16]


def _fmt(v, spec=".3f") -> str:
    return "—" if v is None else format(v, spec)


def _rows(records: list[dict]) -> list[str]:
    rows = ["| seed | trials tpe / library (from the library) | hypervolume tpe | hypervolume library | ratio | "
            "ratio at 20 / 40 / 60 / 80 % of the budget | best front test acc. tpe / library | tau raw / "
            "calibrated (over) | library build | answer 5 budgets | `library` CLI |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        a, b = r["arms"]["tpe"], r["arms"]["library"]
        best = [max((f["test_accuracy"] or 0.0 for f in arm["front"]), default=0.0) for arm in (a, b)]
        rows.append(f"| {r['seed']} | {a['finished']} / {b['finished']} ({b['from_library']}) | "
                    f"{a['hypervolume']:,.0f} | {b['hypervolume']:,.0f} | {_fmt(r['hypervolume_ratio'], '.2f')}x | "
                    f"{' / '.join(_ratio_at(r, i) for i in range(len(CURVE) - 1))} | "
                    f"{best[0]:.3f} / {best[1]:.3f} | {_fmt(r['tau_raw'], '+.2f')} / {_fmt(r['tau'], '+.2f')} "
                    f"({r['tau_over']}) | {r['library_build']['wall_s']:.0f} s ({r['blocks']} blocks) | "
                    f"{r['answer_s']:.2f} s | {r['cli_s']:.1f} s |")
    return rows


def _ratio_at(record: dict, i: int) -> str:
    a, b = record["arms"]["tpe"]["hypervolume_curve"][i], record["arms"]["library"]["hypervolume_curve"][i]
    return f"{b / a:.2f}x" if a else ("—" if not b else "inf")


def _claims(records: list[dict], what: str) -> list[str]:
    ratios = [r["hypervolume_ratio"] or 0.0 for r in records]
    taus_raw = [r["tau_raw"] if r["tau_raw"] is not None else -1.0 for r in records]
    taus = [r["tau"] if r["tau"] is not None else -1.0 for r in records]
    enough = all(r["tau_over"] >= 20 for r in records)
    return [
        claim(f"{what} reaches >= {GOALS['hypervolume_ratio']}x TPE's validation hypervolume at equal wall-clock on "
              f"every seed (ratios {', '.join(f'{x:.2f}' for x in ratios)})",
              all(x >= GOALS["hypervolume_ratio"] for x in ratios)),
        claim(f"Kendall tau >= {GOALS['tau']} between the raw additive prediction and converted accuracy on every "
              f"seed, over >= 20 candidates ({', '.join(f'{x:+.2f}' for x in taus_raw)})",
              all(x >= GOALS["tau"] for x in taus_raw) and enough),
        claim(f"the same for the calibrated prediction, leave-one-out ({', '.join(f'{x:+.2f}' for x in taus)})",
              all(x >= GOALS["tau"] for x in taus) and enough),
        claim(f"a new budget is answered from a stored library in under {GOALS['answer_s']:g} s (five budgets in "
              f"process: median {median([r['answer_s'] for r in records]):.2f} s; the CLI end to end, imports and "
              f"the guide's loading included: median {median([r['cli_s'] for r in records]):.1f} s)",
              all(r["answer_s"] / 5 < GOALS["answer_s"] for r in records)),
    ]


def table(records: list[dict], variant: list[dict], meta: dict) -> str:
    budget = records[0]["budget_s"] if records else 0
    text = (f"Block library vs TPE alone at equal wall-clock ({budget:.0f} s per arm, both arms side by side, one "
            f"thread each), studies/mnist1d_deep_deploy.toml (guide validation accuracy "
            f"{median([r['guide_val_accuracy'] for r in records]):.3f}); hypervolume of accuracy x FLOPs on the "
            f"validation split, reference accuracy 0 and the guide's FLOPs; trials finished within the budget "
            f"(and within 20-80 % of it for the ratios over time, each arm's clock from its start).\n\n"
            + "\n".join(_rows(records)) + "\n\n" + "\n".join(_claims(records, "the library arm")) + "\n")
    if variant:
        text += (f"\nVariant `{VARIANT}` (the library's front at 0.05 / 0.1 / 0.2 / 0.4 / 0.6 of the guide's FLOPs; "
                 f"chosen after the run above, on the same seeds, so a lead rather than a result), against the same "
                 f"TPE arms; its arms ran two at a time, side by side:\n\n"
                 + "\n".join(_rows(variant)) + "\n\n" + "\n".join(_claims(variant, "the variant")[:1]) + "\n")
    return text + "\n" + provenance(meta)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=float, default=600.0, help="seconds per arm (default 600)")
    parser.add_argument("--variant", action="store_true", help=f"also run and tabulate the {VARIANT} arms")
    parser.add_argument("--publish", action="store_true", help="tabulate stored results only")
    parser.add_argument("--arm", choices=[*ARMS, VARIANT], help=argparse.SUPPRESS)  # one arm, in a process of its own
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.arm:
        return run_arm(args.arm, args.seed, args.budget)
    store = ResultStore(RESULTS / "library_vs_tpe.json")
    meta = run_meta(threads_per_arm=1)
    identity = _identity(args.budget)

    def current(key: str, seed: int, arm: str):
        return store.current(key, identity, lambda: {**measure(seed, args.budget, arm), "identity": identity}, meta,
                             publish=args.publish)

    records = [r for s in args.seeds if (r := current(f"seed{s}", s, "library")) is not None]
    if args.variant and not args.publish:  # the variant's arms two at a time (its TPE arms ran above)
        run_side_by_side([(VARIANT, s) for s in args.seeds
                          if not (OUT / f"{VARIANT}-seed{s}" / "arm.json").exists()], args.budget)
    variant = [r for s in args.seeds if (args.variant or store.get(f"seed{s}+{VARIANT}"))
               and (r := current(f"seed{s}+{VARIANT}", s, VARIANT)) is not None]
    if records:
        publish("library_vs_tpe", table(records, variant, store.provenance_meta(meta)))


if __name__ == "__main__":
    main()
