"""Packed images benchmark: images/s into a stage from a PNG folder, a JPEG folder and the packed shards, and
the peak memory of one conversion over packed data, at two sizes (not a test).

The benchmark writes folders of N CIFAR-sized images (32-px RGB, 10 classes: ``scale.write_folder``'s smooth
prototype per class plus noise, saved as PNG, and the same pixels as JPEG at quality 90; temporary, never
committed), packs the PNG folder (``packed = true``: images/s of the pack itself), then times the feed a
streamed stage reads (``train.batches`` of 256 rows in a seeded order, ``standard`` augmentation: per image in
the DataLoader's workers from the folders, a batch at a time on the device from the shards) for ``--batches``
batches, each case in a fresh process, in interleaved rounds (PNG, JPEG, packed; ``--pairs`` of them; the
figure is the median). Then one conversion over the packed data (the small CNN guide of ``scale.py``, random
weights, → MLPs; streamed, ``standard`` augmentation) in a fresh process at each size, for its peak resident
memory: ``ru_maxrss`` counts the mapped shards' pages the process touched (file-backed, shared with the page
cache, given back under pressure), so the goal is read on the peak of anonymous memory (``RssAnon`` in
``/proc/self/status``, sampled every 20 ms), with the file-backed peak (``RssFile``) beside it. Goals: packed ≥ 5×
the PNG folder's images/s; the conversion's peak anonymous RSS at the larger size ≤ 1.10× the smaller's + 64 MB.

    python benchmarks/image_pack.py                                  # 20k and 160k images (long: writes 180k PNGs)
    python benchmarks/image_pack.py --sizes 300 600 --pairs 1 --batches 2 --out image_pack_smoke   # a smoke run
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
from _common import RESULTS, ROOT, claim, provenance, publish, run_meta  # noqa: E402
from scale import GUIDE, write_folder  # noqa: E402

CASES = ("png", "jpeg", "packed")

FEED = r"""
import json, sys, time, torch
from nas_theseus.data import load_data
root, case, batches = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.perf_counter()
data = load_data("imagefolder", root=root, size=32, in_memory=False, packed=case == "packed", augment="standard")
opened = time.perf_counter() - t0
order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[: 256 * batches]
t0, n = time.perf_counter(), 0
for b in data.train.batches(256, order=order, augment=data.augmentation, seed=1):
    n += len(b.x)
print(json.dumps({"images_per_s": n / (time.perf_counter() - t0), "images": n, "open_s": opened}))
"""

CONVERT = r"""
import json, resource, sys, threading, time, torch
torch.set_num_threads(2)
peak = {"RssAnon:": 0, "RssFile:": 0}
def sample():  # the process's anonymous and file-backed resident memory, its peak over the run (every 20 ms)
    while True:
        for line in open("/proc/self/status"):
            fields = line.split()  # "RssAnon:", the value, "kB"
            if fields and fields[0] in peak:
                peak[fields[0]] = max(peak[fields[0]], int(fields[1]))
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()
from nas_theseus.convert import Candidate, ConvertConfig, convert
from nas_theseus.data import load_data
from nas_theseus.guides import load_guide
from nas_theseus.targets import BlockSpec
from nas_theseus.training import FitConfig
root, guide_file, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.perf_counter()
data = load_data("imagefolder", root=root, size=32, packed=True, augment="standard")
guide = load_guide(f"torch:{guide_file}:small_cnn", data, parts=["0", "1", "2"], weights="random", progress=False)
cfg = ConvertConfig(steps_per_stage=steps, stage_stop="fixed", batch_size=256, activations="stream",
                    finetune=FitConfig(max_epochs=1, patience=1, batch_size=256))
r = convert(guide, Candidate((BlockSpec.of("mlp", width=128),) * 3), data, cfg, device="cpu", progress=False)
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_anon_mb": peak["RssAnon:"] / 1024, "peak_file_mb": peak["RssFile:"] / 1024,
                  "wall_s": time.perf_counter() - t0, "test_accuracy": r.test_accuracy, "train": len(data.train)}))
"""


def as_jpeg(png_root: Path, jpeg_root: Path) -> None:
    """The PNG folder's images again, as JPEG (quality 90), in the same class folders."""
    from PIL import Image

    for f in sorted(png_root.rglob("*.png")):
        out = jpeg_root / f.relative_to(png_root).with_suffix(".jpg")
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(f) as im:
            im.save(out, quality=90)


def run(script: str, *args: str, cache: Path) -> dict:
    """``script`` in a fresh process (this checkout's package, the benchmark's own cache); its JSON line."""
    env = {**os.environ, "NAS_THESEUS_CACHE": str(cache), "NAS_THESEUS_PROGRESS": "0", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{args}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(n: int, tmp: Path, args: argparse.Namespace) -> dict:
    """One size: the folders written, the pack timed, the feeds in interleaved rounds, one conversion."""
    png, jpeg, cache = tmp / f"png{n}", tmp / f"jpeg{n}", tmp / "cache"
    write_folder(png, n)
    as_jpeg(png, jpeg)
    pack = run(FEED, str(png), "packed", "1", cache=cache)  # the first packed read packs: its open_s
    feeds = {case: [] for case in CASES}
    for _ in range(args.pairs):
        for case in CASES:
            feeds[case].append(run(FEED, str(jpeg if case == "jpeg" else png), case, str(args.batches),
                                   cache=cache)["images_per_s"])
    conversion = run(CONVERT, str(png), str(tmp / "guide.py"), str(args.steps), cache=cache)
    return {"pack_s": pack["open_s"], "feeds": feeds, "conversion": conversion}


def table(runs: dict, sizes: list[int], meta: dict) -> str:
    lines = ["Images/s into a streamed stage (batches of 256, `standard` augmentation, the CPU) from a folder of N "
             "32-px images as PNG, as JPEG, and packed (`packed = true`); median of the rounds. Memory: one "
             "conversion over the packed data (3-stage CNN → 3 × MLP(128), streamed), a fresh process per size: the "
             "peak of its anonymous resident memory (RssAnon, sampled every 20 ms), of its file-backed resident "
             "memory (RssFile: the mapped shards' pages, shared with the page cache), and ru_maxrss (both).", "",
             "| N | pack s | PNG img/s | JPEG img/s | packed img/s | packed ÷ PNG | peak anon MB | peak file MB | "
             "ru_maxrss MB |", "|---|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        r = runs[str(n)]
        med = {case: statistics.median(v) for case, v in r["feeds"].items()}
        lines.append(f"| {n} | {r['pack_s']:.1f} | {med['png']:,.0f} | {med['jpeg']:,.0f} | {med['packed']:,.0f} | "
                     f"{med['packed'] / med['png']:.1f}× | {r['conversion']['peak_anon_mb']:.0f} | "
                     f"{r['conversion']['peak_file_mb']:.0f} | {r['conversion']['peak_rss_mb']:.0f} |")
    small, large = (runs[str(n)] for n in (min(sizes), max(sizes)))
    speed = min(statistics.median(runs[str(n)]["feeds"]["packed"]) / statistics.median(runs[str(n)]["feeds"]["png"])
                for n in sizes)
    rss = (small["conversion"]["peak_anon_mb"], large["conversion"]["peak_anon_mb"])
    lines += ["", claim(f"packed ≥ 5× the PNG folder's images/s (least: {speed:.1f}×)", speed >= 5),
              claim(f"peak anonymous RSS at {max(sizes)} ≤ 1.10× that at {min(sizes)} + 64 MB ({rss[1]:.0f} vs "
                    f"{rss[0]:.0f} MB)",
                    rss[1] <= 1.10 * rss[0] + 64), "", provenance(meta)]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20000, 160000])
    ap.add_argument("--pairs", type=int, default=5, help="interleaved rounds of the three feeds")
    ap.add_argument("--batches", type=int, default=40, help="batches of 256 timed per feed")
    ap.add_argument("--steps", type=int, default=150, help="steps a stage in the conversion")
    ap.add_argument("--out", default="image_pack")
    args = ap.parse_args()
    meta, runs = run_meta(), {}
    with tempfile.TemporaryDirectory(prefix="nas-theseus-image-pack-") as tmp:
        tmp = Path(tmp)
        (tmp / "guide.py").write_text(GUIDE)
        for n in args.sizes:
            runs[str(n)] = measure(n, tmp, args)
            print(n, runs[str(n)], flush=True)
            (RESULTS / f"{args.out}.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    publish(args.out, table(runs, args.sizes, meta))  # results/OUT.md, and the docs' block bench:OUT


if __name__ == "__main__":
    main()
