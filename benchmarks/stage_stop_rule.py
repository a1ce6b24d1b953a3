"""Investigation: does the default stage-stopping rule earn its place against fixed-length stages (not a test).

MNIST-1D CNN guide -> MLP 40→256→256→256→10, NoT progressive, seeds 0, 1, 2 (guide seed = conversion seed).
Rules: the default (`ConvertConfig()`: held-out plateau with 2 learning-rate drops, at most 4,000 steps a stage),
the same capped at 2,000 steps (what the default study file sets), and fixed stages of 4,000 and 2,000 steps with
a cosine decay. Selection is by median validation accuracy; test accuracy beside it; the cost is the alignment
steps taken (wall time beside it, taken with whatever else ran on the machine).

    python benchmarks/stage_stop_rule.py --threads 1     # ~15 min on 2 cores
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ResultStore, claim, median, provenance, publish, run_meta  # noqa: E402

from nas_theseus.convert import Candidate, ConvertConfig, convert  # noqa: E402
from nas_theseus.data import load_mnist1d  # noqa: E402
from nas_theseus.guides import builtin_guide  # noqa: E402
from nas_theseus.targets import BlockSpec  # noqa: E402

DEFAULT = "plateau, ≤ 4,000 (default)"
RULES = {
    DEFAULT: {},
    "plateau, ≤ 2,000 (the default study's cap)": {"steps_per_stage": 2000},
    "fixed 4,000, cosine": {"stage_stop": "fixed"},
    "fixed 2,000, cosine": {"stage_stop": "fixed", "steps_per_stage": 2000},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    meta = run_meta()
    store = ResultStore(RESULTS / "stage_stop_rule.json")
    data = load_mnist1d()
    cand = Candidate((BlockSpec.of("mlp", width=256),) * 3)
    ckpt = Path(__file__).resolve().parent / "out" / "ckpt_stage_stop"  # its own: wall times are of fresh stages
    for seed in args.seeds:
        guide = builtin_guide("mnist1d_cnn", data, seed=seed, progress=False)
        for name, kw in RULES.items():
            key = f"{name} / seed {seed}"
            if store.get(key) is None:
                print(f"== {key}", flush=True)
                r = convert(guide, cand, data, ConvertConfig(seed=seed, **kw), checkpoint_dir=ckpt, progress=False)
                store.put(key, {"val_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy,
                                "steps": [s.steps for s in r.stages], "wall_s": r.wall_s}, meta)
    rows = ["| rule | val % (median) | test % (median) | test % per seed | alignment steps (median) | s / conversion "
            "(median) | commits |", "|---|---|---|---|---|---|---|"]
    summary = {}
    for name in RULES:
        runs = [store.get(f"{name} / seed {s}") for s in args.seeds]
        val, test = median([r["val_accuracy"] for r in runs]), median([r["test_accuracy"] for r in runs])
        steps = median([sum(r["steps"]) for r in runs])
        summary[name] = (val, steps)
        per_seed = " / ".join(f"{100 * r['test_accuracy']:.1f}" for r in runs)
        commits = ", ".join(sorted({str(r["commit"]) for r in runs}))
        rows.append(f"| {name} | {100 * val:.1f} | {100 * test:.1f} | {per_seed} | {steps:.0f} | "
                    f"{median([r['wall_s'] for r in runs]):.0f} | {commits} |")
    best = max(summary, key=lambda n: summary[n][0])
    d_val, d_steps = summary[DEFAULT]
    claims = [claim(f"the default rule has the best median validation accuracy (best: {best}, "
                    f"{100 * summary[best][0]:.1f} vs {100 * d_val:.1f} %)", best == DEFAULT),
              claim(f"the default rule within 0.5 point of the best on median validation "
                    f"({100 * d_val:.1f} vs {100 * summary[best][0]:.1f} %)", summary[best][0] - d_val <= 0.005),
              claim(f"the default rule takes fewer alignment steps than fixed 4,000 "
                    f"({d_steps:.0f} vs {summary['fixed 4,000, cosine'][1]:.0f})",
                    d_steps < summary["fixed 4,000, cosine"][1])]
    text = (f"MNIST-1D, W = 256, NoT progressive, seeds {args.seeds} (guide seed = conversion seed); accuracy of "
            f"the converted MLP after fine-tuning; alignment steps summed over the 3 stages.\n\n"
            + "\n".join(rows) + "\n\n" + "\n".join(claims) + "\n\n" + provenance(store.provenance_meta(meta)))
    publish("stage_stop_rule", text)


if __name__ == "__main__":
    main()
