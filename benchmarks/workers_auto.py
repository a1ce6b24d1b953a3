"""Speed benchmark: ``--workers auto`` against hand-picked worker counts on one device (not a test).

The README's study (``studies/mnist1d_deploy.toml``) run with ``--workers K --devices DEVICE`` for every K of
``--counts`` and with ``--workers auto``, each in a fresh work directory, all reading one guide cache (trained
before the first run, outside the timings), so each figure is the study's trials and its workers' start. The
goal: auto at least as fast as the best hand-picked count. ``auto``'s own measurement is timed with it (a
resumed study reads its cached choice; a fresh machine pays it once).

    python benchmarks/workers_auto.py --device cuda                       # a GPU: counts 1 2 4 8 and auto
    python benchmarks/workers_auto.py --device cpu --counts 1 2 --tiny    # the code path on a small CPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ROOT, claim, provenance, publish, run_meta  # noqa: E402

STUDY = ROOT / "studies" / "mnist1d_deploy.toml"
TINY = ("study.n_trials=3", "convert.steps_per_stage=4", "convert.finetune.max_epochs=1", "guide.fit.max_epochs=1",
        "data.options.num_samples=600", "latency.repeats=3", "latency.block_ms=1")


def run(workers: str, device: str, cache: str, settings: tuple[str, ...]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "nas_theseus", "run", str(STUDY), "--workdir", f"{tmp}/wd", "--no-progress",
               "--workers", workers, "--devices", device]
        for s in settings:
            cmd += ["--set", s]
        env = {**os.environ, "NAS_THESEUS_CACHE": cache, "NAS_THESEUS_PROGRESS": "0"}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        chosen = [line for line in proc.stderr.splitlines() if "--workers auto:" in line]
        done = len(list(Path(tmp, "wd", "trials").glob("*/metrics.json")))
    return {"workers": workers, "rc": proc.returncode, "wall_s": round(wall, 1), "trials": done,
            "auto": chosen[0].split("] ", 1)[-1] if chosen else None,
            **({"tail": proc.stderr[-1500:]} if proc.returncode else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--tiny", action="store_true", help="tiny settings: the code path, not a figure")
    args = ap.parse_args()
    settings = TINY if args.tiny else ()
    meta = run_meta(device=args.device, tiny=args.tiny)
    with tempfile.TemporaryDirectory() as cache:
        subprocess.run([sys.executable, "-m", "nas_theseus", "run", str(STUDY), "--workdir",
                        f"{cache}/guide-only", "--n-trials", "0", "--no-progress", "--device", args.device,
                        *[a for s in settings for a in ("--set", s)]], cwd=ROOT, check=True,
                       env={**os.environ, "NAS_THESEUS_CACHE": cache}, capture_output=True)
        runs = [run(str(k), args.device, cache, settings) for k in args.counts] + \
            [run("auto", args.device, cache, settings)]
    ok = [r for r in runs if r["rc"] == 0]
    best = min((r for r in ok if r["workers"] != "auto"), key=lambda r: r["wall_s"], default=None)
    auto = next((r for r in ok if r["workers"] == "auto"), None)
    lines = [f"`--workers auto` against hand-picked counts on {args.device} (the README's study"
             f"{', tiny settings' if args.tiny else ''}).", "", "| workers | wall s | trials |", "|---|---|---|"]
    lines += [f"| {r['workers']} | {r['wall_s'] if r['rc'] == 0 else 'failed'} | {r['trials']} |" for r in runs]
    if auto and auto["auto"]:
        lines += ["", f"auto: {auto['auto']}"]
    if best and auto:
        lines += ["", claim(f"auto at least as fast as the best hand-picked count, within 5 % ({best['workers']}: "
                            f"{best['wall_s']} s; auto {auto['wall_s']} s, its measurement included)",
                            auto["wall_s"] <= best["wall_s"] * 1.05)]
    text = "\n".join(lines) + "\n\n" + provenance(meta)
    name = f"workers_auto_{args.device.split(':')[0]}" + ("_tiny" if args.tiny else "")
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    publish(name, text)


if __name__ == "__main__":
    main()
