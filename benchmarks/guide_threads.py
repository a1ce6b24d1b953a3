"""Investigation: does the built-in MNIST-1D guide depend on torch's thread count (not a test).

The built-in guide (seed 0) is trained from scratch in a fresh process with an empty guide cache, with 1 and with
2 torch threads, twice each (A/B/A/B). Reported: its validation and test accuracy and a fingerprint of its
weights. The docs' reproducibility note rests on this: a conversion is bit-reproducible for a code version and
a thread count, not across thread counts.

    python benchmarks/guide_threads.py          # ~2 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ResultStore, claim, provenance, publish, run_meta  # noqa: E402

TRAIN = """
import json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from nas_theseus.data import load_mnist1d
from nas_theseus.guides import builtin_guide, guide_metrics
from nas_theseus.utils.hashing import module_fingerprint
data = load_mnist1d()
guide = builtin_guide("mnist1d_cnn", data, seed=0, progress=False, device="cpu")
m = guide_metrics(guide)
print(json.dumps({"val_accuracy": m["val_accuracy"], "test_accuracy": m["test_accuracy"], "epochs": m["epochs"],
                  "weights": module_fingerprint(guide.module)}))
"""


def train(threads: int) -> dict:
    with tempfile.TemporaryDirectory() as cache:  # ours: the guide is trained, never read from a cache
        env = {**os.environ, "NAS_THESEUS_CACHE": cache, "OMP_NUM_THREADS": str(threads)}
        out = subprocess.run([sys.executable, "-c", TRAIN, str(threads)], env=env, capture_output=True, text=True,
                             check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    meta = run_meta()
    store = ResultStore(RESULTS / "guide_threads.json")
    for rep in range(args.repeats):
        for threads in (1, 2):
            key = f"{threads} threads / run {rep + 1}"
            if store.get(key) is None:
                print(f"== {key}", flush=True)
                store.put(key, {"threads": threads, **train(threads)}, meta)
    rows = ["| threads | run | val % | test % | weights fingerprint | commit |", "|---|---|---|---|---|---|"]
    by_threads: dict[int, set] = {1: set(), 2: set()}
    for key, r in sorted(store.records.items()):
        by_threads[r["threads"]].add(r["weights"])
        rows.append(f"| {r['threads']} | {key.split('/ run ')[1]} | {100 * r['val_accuracy']:.1f} | "
                    f"{100 * r['test_accuracy']:.1f} | `{r['weights']}` | {r['commit']} |")
    claims = [claim(f"the same thread count gives the same weights ({threads} threads: "
                    f"{len(by_threads[threads])} distinct of {args.repeats} runs)", len(by_threads[threads]) == 1)
              for threads in (1, 2)]
    claims.append(claim("1 and 2 threads give the same weights", by_threads[1] == by_threads[2]))
    text = ("The built-in MNIST-1D guide (seed 0) trained in a fresh process with an empty cache, CPU.\n\n"
            + "\n".join(rows) + "\n\n" + "\n".join(claims) + "\n\n" + provenance(store.provenance_meta(meta)))
    publish("guide_threads", text)


if __name__ == "__main__":
    main()
