"""Scale benchmark: memory and disk of one conversion against the size of an image folder (not a test).

The benchmark writes image folders of N 32-px RGB PNGs (10 classes: a smooth random prototype per class plus
noise, so the task is learnable, also under crops and flips; in a temporary folder, never committed), then
converts a small CNN guide (random weights, 3 conv stages) into MLPs over each, once with the guide's activations
streamed (standard augmentation on) and once cached (augmentation off), each in a fresh process reading the
folder lazily (in_memory = false). Per run: peak resident memory of the process, bytes it wrote
(``/proc/self/io`` wchar), wall time, test accuracy. Goal: the streamed conversion's peak memory flat in N
(within 10 %); the cached one's beside it.

    python benchmarks/scale.py                       # N = 5k, 20k, 80k (~15 min on 2 cores)
    python benchmarks/scale.py --sizes 2000 8000     # smaller
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ROOT, claim, provenance, run_meta, save_table  # noqa: E402

GUIDE = '''
import torch.nn as nn

def small_cnn(num_classes=10):
    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, stride=2, padding=1), nn.BatchNorm2d(o), nn.ReLU())
    return nn.Sequential(block(3, 8), block(8, 16), block(16, 32), nn.Flatten(), nn.Linear(32 * 4 * 4, num_classes))
'''

WORKLOAD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(2)
from nas_theseus.convert import Candidate, ConvertConfig, convert
from nas_theseus.data import load_data
from nas_theseus.guides import load_guide
from nas_theseus.targets import BlockSpec
from nas_theseus.training import FitConfig
root, guide_file, mode = sys.argv[1:4]
augment = "standard" if mode == "stream" else "none"
t0 = time.perf_counter()
data = load_data("imagefolder", root=root, size=32, in_memory=False, augment=augment)
guide = load_guide(f"torch:{guide_file}:small_cnn", data, parts=["0", "1", "2"], weights="random", progress=False)
cfg = ConvertConfig(steps_per_stage=150, stage_stop="fixed", batch_size=256, activations=mode,
                    finetune=FitConfig(max_epochs=1, patience=1, batch_size=256))
r = convert(guide, Candidate((BlockSpec.of("mlp", width=128),) * 3), data, cfg, device="cpu", progress=False)
wchar = int(next(l.split()[1] for l in open("/proc/self/io") if l.startswith("wchar")))
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "written_mb": wchar / 2**20,
                  "wall_s": time.perf_counter() - t0, "test_accuracy": r.test_accuracy,
                  "activations": r.activations, "train": len(data.train)}))
"""


def write_folder(root: Path, n: int, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    # smooth prototypes (4 x 4 colour patterns upsampled): a shift of a few pixels keeps a class what it is, as
    # in real images, so crop-and-flip augmentation leaves the task learnable (white-noise ones would not)
    protos = np.stack([np.asarray(Image.fromarray(rng.integers(40, 216, size=(4, 4, 3), dtype=np.uint8))
                                  .resize((32, 32), Image.Resampling.BICUBIC), dtype=np.float64) for _ in range(10)])
    for c in range(10):
        (root / f"c{c}").mkdir(parents=True)
    for i in range(n):
        c = i % 10
        img = np.clip(protos[c] + rng.normal(0, 40, size=(32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"c{c}" / f"{i}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 80000])
    ap.add_argument("--out", default="scale")
    args = ap.parse_args()
    meta = run_meta()
    runs = {}
    with tempfile.TemporaryDirectory(prefix="nas-theseus-scale-") as tmp:
        tmp = Path(tmp)
        (tmp / "guide.py").write_text(GUIDE)
        for n in args.sizes:
            folder = tmp / f"imgs{n}"
            write_folder(folder, n)
            for mode in ("stream", "cache"):
                env = {**os.environ, "NAS_THESEUS_CACHE": str(tmp / "cache"), "NAS_THESEUS_PROGRESS": "0",
                       "PYTHONPATH": str(ROOT)}
                out = subprocess.run([sys.executable, "-c", WORKLOAD, str(folder), str(tmp / "guide.py"), mode],
                                     env=env, capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(f"N={n} {mode}: {out.stderr[-2000:]}")
                runs[f"{n}-{mode}"] = json.loads(out.stdout.strip().splitlines()[-1])
                print(n, mode, runs[f"{n}-{mode}"], flush=True)
            (RESULTS / f"{args.out}.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    sizes = args.sizes
    stream = [runs[f"{n}-stream"]["peak_rss_mb"] for n in sizes]
    spread = (max(stream) - min(stream)) / min(stream)
    lines = ["One conversion (a 3-stage CNN guide, random weights -> 3 × MLP(128), 150 steps a stage, 1 epoch of "
             "fine-tuning, 2 CPU threads) over image folders of N 32-px PNGs read lazily, in a fresh process each: "
             "the guide streamed with `standard` augmentation, or its activations cached without augmentation.", "",
             "| N (train rows) | mode | peak RSS MB | written MB | wall s | test accuracy |",
             "|---|---|---|---|---|---|"]
    for n in sizes:
        for mode in ("stream", "cache"):
            r = runs[f"{n}-{mode}"]
            lines.append(f"| {n} ({r['train']}) | {mode} | {r['peak_rss_mb']:.0f} | {r['written_mb']:.1f} | "
                         f"{r['wall_s']:.0f} | {100 * r['test_accuracy']:.1f} % |")
    lines += ["", claim(f"streamed peak memory flat in N within 10 % (spread {100 * spread:.1f} %)", spread <= 0.10),
              "", provenance(meta)]
    save_table(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
