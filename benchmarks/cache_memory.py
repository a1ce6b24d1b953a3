"""Memory benchmark: peak RSS while building a guide-activation cache, against the cache's own size (not a test).

Builds the in-memory cache of a timm ResNet-18 at 32 px over 45,000 synthetic CIFAR-10-sized images (the size
of CIFAR-10's training split less validation) in a fresh subprocess, and reports the cache's bytes, the rise
of the peak RSS over the process's RSS before the build, and their ratio (1.0 = no copy beyond the cache
itself). Also the MNIST-1D cache's size, for scale.

    python benchmarks/cache_memory.py                          # ~3 min on 2 cores
    PYTHONPATH=/path/to/older/checkout python benchmarks/cache_memory.py --out cache_memory_before
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, provenance, publish, run_meta  # noqa: E402

CHILD = r"""
import json, resource, sys, torch
from nas_theseus.convert import GuideActivations
from nas_theseus.data import load_mnist1d
from nas_theseus.data.base import Split, TaskData
from nas_theseus.guides import load_guide
torch.set_num_threads(2)
n = int(sys.argv[1])
g = torch.Generator().manual_seed(0)
split = lambda m: Split(torch.randn(m, 3, 32, 32, generator=g), torch.randint(0, 10, (m,), generator=g))
data = TaskData("synthetic_cifar10", split(n), split(64), split(64), 10)
guide = load_guide("timm:resnet18", data, weights="random")
mnist = load_mnist1d()
small = GuideActivations.compute(load_guide("builtin:mnist1d_cnn", mnist, weights="random"), mnist.train.x,
                                 data_key="m", progress=False)
del mnist
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
with open("/proc/self/status") as f:
    rss = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS"))
acts = GuideActivations.compute(guide, data.train.x, data_key="c", progress=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
size = lambda a: sum(t.numel() * t.element_size() for t in a.acts)
print(json.dumps({"cache_bytes": size(acts), "rss_before": rss, "peak_before": before, "peak": peak,
                  "mnist1d_cache_bytes": size(small)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=45000)
    ap.add_argument("--out", default="cache_memory")
    args = ap.parse_args()
    meta = run_meta()
    done = subprocess.run([sys.executable, "-c", CHILD, str(args.images)], capture_output=True, text=True,
                          check=True)
    r = json.loads(done.stdout.strip().splitlines()[-1])
    rise = r["peak"] - max(r["rss_before"], 0)
    ratio = rise / r["cache_bytes"]
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"meta": meta, **r, "images": args.images}, indent=1))
    gib = 2**30
    text = (f"Building the in-memory activation cache of a timm ResNet-18 at 32 px over {args.images:,} synthetic "
            f"CIFAR-10-sized images: cache {r['cache_bytes'] / gib:.2f} GiB, peak RSS rise during the build "
            f"{rise / gib:.2f} GiB, ratio {ratio:.2f} (1.0 = nothing beyond the cache itself). The MNIST-1D "
            f"cache (3,600 training rows) is {r['mnist1d_cache_bytes'] / 2**20:.1f} MiB.\n\n" + provenance(meta))
    publish(args.out, text)


if __name__ == "__main__":
    main()
