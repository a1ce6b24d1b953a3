"""Choosing the early-stop rule from recorded stage curves (not a test): for each stage k and margin m, how many
trials the rule would have pruned (an earlier COMPLETE trial with no more FLOPs was at least m ahead in hybrid
validation accuracy after its own stage k) and how many of those ended on their study's final Pareto front
(accuracy ↑, FLOPs ↓), over recorded default studies.

    python benchmarks/pruning_rule.py WORKDIR [WORKDIR ...]     # the studies' work directories
    python benchmarks/pruning_rule.py                           # again from the curves stored in the results

The curves are stored in benchmarks/results/pruning_rule.json, so the table can be rebuilt without the studies.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, provenance, publish, run_meta  # noqa: E402

from nas_theseus.study.pareto import pareto_mask  # noqa: E402

MARGINS = (0.0, 0.02, 0.05, 0.1, 0.15)


def curves(workdir: str) -> list[dict]:
    import optuna

    meta = json.loads(open(os.path.join(workdir, "study.json")).read())
    study = optuna.load_study(study_name=meta["study_name"], storage=meta["storage"])
    return [{"trial": t.number, "accuracy": t.values[0], "flops": t.values[1],
             "stages": [s["hybrid_val_accuracy"] for s in t.user_attrs["stages"]]}
            for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and "repeat_of" not in t.user_attrs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdirs", nargs="*")
    args = ap.parse_args()
    path = RESULTS / "pruning_rule.json"
    if args.workdirs:
        meta = run_meta()
        studies = [curves(w) for w in args.workdirs]
        path.write_text(json.dumps({"meta": meta, "studies": studies}, indent=1))
    stored = json.loads(path.read_text())
    meta, studies = stored["meta"], stored["studies"]
    n_stages = min(len(t["stages"]) for s in studies for t in s)
    rows = ["| after stage | " + " | ".join(f"margin {m}" for m in MARGINS) + " |", "|---|" + "---|" * len(MARGINS)]
    for k in range(n_stages):
        cells = []
        for m in MARGINS:
            pruned = wrong = 0
            for s in studies:
                front = pareto_mask(np.array([[t["accuracy"], t["flops"]] for t in s]), ["maximize", "minimize"])
                for i, t in enumerate(s):
                    if any(u["trial"] < t["trial"] and u["flops"] <= t["flops"]
                           and u["stages"][k] >= t["stages"][k] + m for u in s):
                        pruned += 1
                        wrong += bool(front[i])
            cells.append(f"{pruned} pruned, {wrong} on the front")
        rows.append(f"| {k + 1} | " + " | ".join(cells) + " |")
    total = sum(len(s) for s in studies)
    text = (f"{len(studies)} recorded default studies, {total} trials: trials the rule would have pruned, and how "
            f"many of them ended on their study's final front (a wrong prune).\n\n" + "\n".join(rows) + "\n\n"
            + provenance(meta))
    publish("pruning_rule", text)


if __name__ == "__main__":
    main()
