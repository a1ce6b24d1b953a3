"""Speed benchmark: the default study's first conversion on this tree ÷ on an older checkout (not a test).

The workload is the default study's enqueued candidate (the widest MLPs, forward order) converted from its
trained MNIST-1D guide with the default recipe on the CPU, 1 thread: the guide loading, the activation cache,
every stage and the fine-tuning, timed inside each process (imports and the guide's training, cached and shared
by both trees, are not timed). The two trees run alternately, A/B/A/B, each conversion in a fresh process; the
figure is the median ratio over the pairs.

    git worktree add /tmp/before <commit>
    python benchmarks/before_after.py --before /tmp/before --pairs 3     # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ROOT, claim, provenance, run_meta, save_table  # noqa: E402

WORKLOAD = r"""
import json, time, torch
torch.set_num_threads(1)
from nas_theseus.convert import Candidate, ConvertConfig, convert
from nas_theseus.data import load_mnist1d
from nas_theseus.guides import load_guide
from nas_theseus.targets import BlockSpec
data = load_mnist1d()
guide = load_guide("builtin:mnist1d_cnn", data, progress=False, device="cpu")
cand = Candidate((BlockSpec.of("mlp", width=256),) * 3)
t0 = time.perf_counter()
r = convert(guide, cand, data, ConvertConfig(), device="cpu", progress=False)
print(json.dumps({"s": time.perf_counter() - t0, "test_accuracy": r.test_accuracy,
                  "steps": [s.steps for s in r.stages], "epochs": r.finetune.epochs}))
"""


def run(tree: Path, cache: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "NAS_THESEUS_CACHE": cache, "NAS_THESEUS_PROGRESS": "0",
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", WORKLOAD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="a checkout of the older commit (git worktree add)")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--out", default="default_conversion_before_after")
    args = ap.parse_args()
    before = Path(args.before).resolve()
    old_commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=before, capture_output=True,
                                text=True).stdout.strip()
    meta = run_meta(before=old_commit)
    with tempfile.TemporaryDirectory() as cache:
        run(ROOT, cache)  # trains and caches the guide; warms the file cache
        pairs = []
        for _ in range(args.pairs):
            new, old = run(ROOT, cache), run(before, cache)
            pairs.append({"after": new, "before": old})
            print(f"after {new['s']:.1f} s, before {old['s']:.1f} s", flush=True)
    ratio = statistics.median(p["after"]["s"] / p["before"]["s"] for p in pairs)
    same = all(p["after"]["test_accuracy"] == p["before"]["test_accuracy"] and p["after"]["steps"] ==
               p["before"]["steps"] for p in pairs)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"meta": meta, "pairs": pairs, "ratio": ratio}, indent=1))
    lines = [f"The default study's first conversion (MNIST-1D CNN -> 3 × MLP(256), default recipe, 1 CPU thread), "
             f"this tree (commit {meta['commit']}) ÷ commit {old_commit}: median ratio **{ratio:.3f}** over "
             f"{args.pairs} interleaved pairs.", "",
             "| pair | after s | before s | after ÷ before | test accuracy after / before |", "|---|---|---|---|---|"]
    for i, p in enumerate(pairs):
        lines.append(f"| {i + 1} | {p['after']['s']:.1f} | {p['before']['s']:.1f} | "
                     f"{p['after']['s'] / p['before']['s']:.3f} | {p['after']['test_accuracy']:.4f} / "
                     f"{p['before']['test_accuracy']:.4f} |")
    lines += ["", claim("no slower (ratio ≤ 1.05)", ratio <= 1.05),
              claim("the same result (test accuracy and steps per stage identical)", same), "", provenance(meta)]
    save_table(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
