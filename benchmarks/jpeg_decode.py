"""JPEG decoding benchmark: images/s into a stage from a JPEG folder decoded by Pillow one image at a time
(``decode = "pillow"``) against a batch at a time on the device (``decode = "device"``: TorchCodec's or
torchvision's ``decode_jpeg`` on a list), on this machine's device (not a test).

What ``decode = "auto"`` chooses rests on it: on the device where that measures faster. The benchmark writes
two JPEG folders (quality 90; temporary, never committed): CIFAR-sized images (32 px, read at 32: no resize)
and photo-sized ones (160 × 120, read at 64: resized by both readers), each class a smooth colour prototype
plus noise. Then it times the feed a streamed stage reads (``train.batches`` of 256 rows in a seeded order,
``standard`` augmentation: per image with Pillow, or a batch at a time on the device) for ``--batches``
batches, each reader in a fresh process (``workers`` DataLoader processes: the default for this machine's
cores unless ``--workers``), in interleaved rounds (``--pairs``); the figure is the median.

    python benchmarks/jpeg_decode.py                                   # on the CPU (~5 min on 2 cores)
    python benchmarks/jpeg_decode.py --device cuda --out jpeg_decode_gpu    # on a GPU
    python benchmarks/jpeg_decode.py --images 300 60 --pairs 1 --batches 1 --out jpeg_decode_smoke
    python benchmarks/jpeg_decode.py --from-json                       # the table again from the stored record
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

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ROOT, provenance, publish, run_meta  # noqa: E402

READERS = ("pillow", "device")
CASES = {"cifar": {"side": (32, 32), "size": 32}, "photo": {"side": (160, 120), "size": 64}}

FEED = r"""
import json, sys, time, torch
from nas_theseus.data import load_data
from nas_theseus.data.jpeg_files import jpeg_decoder
root, decode, size, batches, device, workers = sys.argv[1:7]
workers = None if workers == "default" else int(workers)
data = load_data("imagefolder", root=root, size=int(size), in_memory=False, decode=decode, workers=workers,
                 augment="standard")
order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[: 256 * int(batches)]
def feed():
    n = 0
    for b in data.train.batches(256, order=order, device=device, augment=data.augmentation, seed=1):
        n += len(b.x)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return n
feed()  # warm-up: the decoder's first call, the workers' start
t0 = time.perf_counter()
n = feed()
print(json.dumps({"images_per_s": n / (time.perf_counter() - t0), "images": n, "workers": data.train.workers,
                  "decoder": jpeg_decoder().library if decode == "device" else "Pillow"}))
"""


def write_jpegs(root: Path, n: int, side: tuple[int, int], seed: int = 0) -> None:
    """``n`` JPEGs (quality 90) of ``side`` (W, H) px in 10 class folders: a smooth colour prototype per class
    (4 × 4 upsampled, bicubic) plus noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    protos = [np.asarray(Image.fromarray(rng.integers(40, 216, size=(4, 4, 3), dtype=np.uint8))
                         .resize(side, Image.Resampling.BICUBIC), dtype=np.float64) for _ in range(10)]
    for c in range(10):
        (root / f"c{c}").mkdir(parents=True)
    for i in range(n):
        img = np.clip(protos[i % 10] + rng.normal(0, 40, size=protos[0].shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"c{i % 10}" / f"{i}.jpg", quality=90)


def run(*args: str, cache: Path) -> dict:
    """The feed in a fresh process (this checkout's package, the benchmark's own cache); its JSON line."""
    env = {**os.environ, "NAS_THESEUS_CACHE": str(cache), "NAS_THESEUS_PROGRESS": "0", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", FEED, *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{args}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(case: str, n: int, tmp: Path, args: argparse.Namespace) -> dict:
    folder = tmp / case
    write_jpegs(folder, n, CASES[case]["side"])
    feeds, seen = {r: [] for r in READERS}, {}
    for _ in range(args.pairs):
        for reader in READERS:
            r = run(str(folder), reader, str(CASES[case]["size"]), str(args.batches), args.device,
                    str(args.workers), cache=tmp / "cache")
            feeds[reader].append(r["images_per_s"])
            seen[reader] = {"workers": r["workers"], "decoder": r["decoder"]}
    return {"images": n, **CASES[case], "feeds": feeds, "readers": seen}


def table(runs: dict, meta: dict) -> str:
    lines = [f"Images/s into a streamed stage on `{meta['device']}` (batches of 256, `standard` augmentation) from a "
             "JPEG folder, decoded by Pillow one image at a time (`decode = \"pillow\"`) or a batch at a time on "
             "the device (`decode = \"device\"`); each reader in a fresh process: the median of the interleaved "
             "rounds, and the slowest–fastest round.",
             "", "| images | JPEG px | read at | workers | Pillow img/s | device img/s | device ÷ Pillow | "
             "Pillow rounds | device rounds | decoder |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs.values():
        med = {k: statistics.median(v) for k, v in r["feeds"].items()}
        spread = {k: f"{min(v):,.0f}–{max(v):,.0f}" for k, v in r["feeds"].items()}
        w, h = r["side"]
        lines.append(f"| {r['images']:,} | {w}×{h} | {r['size']} | {r['readers']['device']['workers']} | "
                     f"{med['pillow']:,.0f} | {med['device']:,.0f} | {med['device'] / med['pillow']:.2f}× | "
                     f"{spread['pillow']} | {spread['device']} | {r['readers']['device']['decoder']} |")
    return "\n".join(lines) + "\n\n" + provenance(meta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, nargs=2, default=[20000, 3000], metavar=("CIFAR", "PHOTO"),
                    help="images in the CIFAR-sized and the photo-sized folder")
    ap.add_argument("--pairs", type=int, default=3, help="interleaved rounds of the two readers")
    ap.add_argument("--batches", type=int, default=20, help="batches of 256 timed per feed")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", default="default", help="DataLoader processes (default: the machine's default)")
    ap.add_argument("--out", default="jpeg_decode")
    ap.add_argument("--from-json", action="store_true", help="write the table from results/OUT.json; run nothing")
    args = ap.parse_args()
    if args.from_json:
        stored = json.loads((RESULTS / f"{args.out}.json").read_text())
        publish(args.out, table(stored["runs"], stored["meta"]))
        return
    meta, runs = run_meta(device=args.device), {}
    with tempfile.TemporaryDirectory(prefix="nas-theseus-jpeg-") as tmp:
        for case, n in zip(CASES, args.images):
            runs[case] = measure(case, n, Path(tmp), args)
            print(case, runs[case], flush=True)
            (RESULTS / f"{args.out}.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    publish(args.out, table(runs, meta))


if __name__ == "__main__":
    main()
