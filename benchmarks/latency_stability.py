"""Latency benchmark: is the latency objective stable enough to rank the default study's networks? (not a test)

The deploy MLPs of the default study (widths 16, 64, 256 in all three parts, batch 1, 1 thread) are measured 5
times each, interleaved, per runtime (eager PyTorch first, then ONNX Runtime: an ONNX export changes the
process's eager timings), three ways: absolute, single-call repeats (the loop before blocks); absolute, 2 ms
blocks; and relative to the study's guide (the MNIST-1D CNN) timed side by side, block for block (what a study
records: ratio x the guide's figure), each with 50 timed blocks (the study's ``[latency] repeats`` default)
and with 200. Reported: each setting's median and its spread over the 5 measurements ((max - min) / median);
the goal is <= 5 %.

    python benchmarks/latency_stability.py          # ~3 min on 2 cores
    python benchmarks/latency_stability.py --repeats 50
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ResultStore, claim, command, machine, provenance, publish, today  # noqa: E402

from nas_theseus.data import load_mnist1d  # noqa: E402
from nas_theseus.guides import load_guide  # noqa: E402
from nas_theseus.measure import latency as latency_mod  # noqa: E402
from nas_theseus.measure.latency import prepare  # noqa: E402

WIDTHS = (16, 64, 256)
MEASUREMENTS = 5
WARMUP = 10  # the study default ([latency] warmup)
WAYS = ("absolute, single calls", "absolute, 2 ms blocks", "relative to the guide")


def deploy_mlp(width: int) -> torch.nn.Module:
    """The default study's deploy network shape: three MLP parts of one width and a linear head."""
    torch.manual_seed(0)
    layers, d = [torch.nn.Flatten()], 40
    for _ in range(3):
        layers += [torch.nn.Linear(d, width), torch.nn.ReLU()]
        d = width
    return torch.nn.Sequential(*layers, torch.nn.Linear(d, 10)).eval()


def one(run, guide_run, way: str, repeats: int) -> float:
    cpu = torch.device("cpu")
    if way == WAYS[2]:
        (a, b), _ = latency_mod.timed_side_by_side([run, guide_run], device=cpu, warmup=WARMUP, repeats=repeats,
                                                   threads=1)
        return statistics.median(x / y for x, y in zip(a, b))
    times, _ = latency_mod.timed_runs(run, device=cpu, warmup=WARMUP, repeats=repeats, threads=1,
                                      block_ms=0.0 if way == WAYS[0] else latency_mod.BLOCK_MS)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, nargs="+", default=[50, 200], help="timed blocks per measurement")
    args = ap.parse_args()
    torch.set_num_threads(1)
    meta = {"command": command(), "machine": machine(), "date": today()}
    store = ResultStore(RESULTS / "latency_stability.json")
    runtimes = ["eager"] + (["onnxruntime"] if not _missing_onnx() else [])
    data = load_mnist1d()
    g = load_guide("builtin:mnist1d_cnn", data, weights="random")
    guide = torch.nn.Sequential(g.stem, *(p.module for p in g.parts), g.head).eval()
    x = data.test.x[:1]
    figures: dict[tuple, list[float]] = {}
    for runtime in runtimes:  # eager first: an ONNX export changes the process's eager timings
        guide_run = prepare(guide, x, runtime=runtime, threads=1)[0]
        runs = {w: prepare(deploy_mlp(w), x, runtime=runtime, threads=1)[0] for w in WIDTHS}
        for _ in range(MEASUREMENTS):  # interleaved: every setting sees the same moments of the machine
            for repeats in args.repeats:
                for way in WAYS:
                    for w, run in runs.items():
                        figures.setdefault((runtime, repeats, way, w), []).append(one(run, guide_run, way, repeats))
    rows, worst, ranked = [], {}, {}
    for (runtime, repeats, way, w), xs in figures.items():
        spread = (max(xs) - min(xs)) / statistics.median(xs)
        setting = (runtime, repeats, way)
        worst[setting] = max(worst.get(setting, 0.0), spread)
        ranked.setdefault(setting, []).append(statistics.median(xs))
        store.put(f"{runtime}|{way}|{w}|{repeats} blocks", {"figures": xs, "spread": spread}, meta)
        shown = f"{statistics.median(xs) * 1e3:.1f} µs" if way != WAYS[2] else f"{statistics.median(xs):.3f} × guide"
        rows.append(f"| {runtime} | {repeats} | {way} | {w} | {shown} | {spread * 100:.1f} % |")
    lines = ["| runtime | timed blocks | measured | width | median | spread of 5 measurements |",
             "|---|---|---|---|---|---|", *rows, ""]
    for runtime in runtimes:
        for repeats in args.repeats:
            spreads = ", ".join(f"{way} {worst[(runtime, repeats, way)] * 100:.1f} %" for way in WAYS)
            relative = (runtime, repeats, WAYS[2])
            lines.append(claim(f"{runtime}, {repeats} blocks, relative to the guide: every spread ≤ 5 % (worst per "
                               f"way: {spreads})", worst[relative] <= 0.05))
            lines.append(claim(f"{runtime}, {repeats} blocks, relative to the guide: the widths rank 16 < 64 < 256",
                               ranked[relative] == sorted(ranked[relative])))
    lines += ["", provenance(meta)]
    publish("latency_stability", "\n".join(lines))


def _missing_onnx() -> list[str]:
    from nas_theseus.export_onnx import missing_packages

    return missing_packages()


if __name__ == "__main__":
    main()
