"""Numerics benchmark: 1 − CKA in fp32, TF32 and bf16 against fp64, and the alignment loss as the engine
computes it under global TF32 and a bf16 autocast (not a test). The GPU check (benchmarks/gpu_check/, step
``cka``) runs the same measurement on a GPU, where TF32 exists; on the CPU TF32 reads as fp32.

    python benchmarks/cka_precision.py                 # ~1 min on 2 cores (1,024 rows)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, claim, provenance, run_meta  # noqa: E402
from gpu_check.steps.cka import cka_numerics  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    meta = run_meta()
    r = cka_numerics(args.device, args.rows)
    (RESULTS / "cka_precision.json").write_text(json.dumps({"meta": meta, **r}, indent=1))
    lines = [f"1 − linear CKA on a randomly initialised timm ResNet-18's activations at 32 px ({args.rows} rows, "
             f"{args.device}): each layer against itself plus Gaussian noise (0.05 × its std; the regime near "
             "CKA = 1 where accuracy is kept) and against the next layer. Columns: the estimator's formula in "
             "that precision (TF32 has no effect on the CPU), and `our loss`: the alignment loss as the engine "
             "computes it under global TF32 and a bf16 autocast (biased CKA in float32, unbiased in float64).", "",
             "| pair | estimator | fp64 | fp32 | TF32 | bf16 | our loss |", "|---|---|---|---|---|---|---|"]
    for key, row in r["pairs"].items():
        pair, est = key.rsplit(", ", 1)
        lines.append(f"| {pair} | {est} | " + " | ".join(f"{row[p]:.3e}" for p in ("fp64", "fp32", "tf32", "bf16",
                                                                                 "our_loss")) + " |")
    worst = r["worst_rel_err_of_1_minus_cka"]
    lines += ["", "Worst relative error of 1 − CKA against fp64: " +
              ", ".join(f"{p} {v:.1e}" for p, v in worst.items()) + ".", "",
              claim("the loss as the engine computes it is as accurate as the float32 formula (biased) or float64 "
                    "(unbiased) under TF32 and bf16 settings", r["ok"]), "", provenance(meta)]
    text = "\n".join(lines) + "\n"
    (RESULTS / "cka_precision.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
