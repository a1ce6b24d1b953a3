"""Latency benchmark: is the latency objective stable enough to rank the default study's networks? (not a test)

The deploy MLPs of the default study (widths 16, 64, 256 in all three parts, batch 1, 1 thread) are measured 5
times each, interleaved, per runtime (eager PyTorch first, then ONNX Runtime: an ONNX export changes the
process's eager timings), three ways: absolute, single-call repeats (the loop before blocks); absolute, timed
blocks; and relative to the study's guide (the MNIST-1D CNN) timed side by side, block for block (what a study
records: ratio x the guide's figure), each with 50 timed blocks (the ``[latency] repeats`` default) and with
200 (the default study's), of at least 2 ms and of at least 10 ms (``[latency] block_ms``; 10 is the default).
Reported: each setting's median and its spread over the 5 measurements ((max - min) / median); the goal is
<= 5 %.

    python benchmarks/latency_stability.py          # ~5 min on 2 cores
    python benchmarks/latency_stability.py --repeats 200 --block-ms 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ResultStore, claim, provenance, publish, run_meta  # noqa: E402

from nas_theseus.data import load_mnist1d  # noqa: E402
from nas_theseus.guides import load_guide  # noqa: E402
from nas_theseus.measure import latency as latency_mod  # noqa: E402
from nas_theseus.measure.latency import prepare  # noqa: E402

WIDTHS = (16, 64, 256)
MEASUREMENTS = 5
WARMUP = 10  # the study default ([latency] warmup)
WAYS = ("absolute, single calls", "absolute, blocks", "relative to the guide")


def deploy_mlp(width: int) -> torch.nn.Module:
    """The default study's deploy network shape: three MLP parts of one width and a linear head."""
    torch.manual_seed(0)
    layers, d = [torch.nn.Flatten()], 40
    for _ in range(3):
        layers += [torch.nn.Linear(d, width), torch.nn.ReLU()]
        d = width
    return torch.nn.Sequential(*layers, torch.nn.Linear(d, 10)).eval()


def one(run, guide_run, way: str, repeats: int, block_ms: float) -> float:
    cpu = torch.device("cpu")
    if way == WAYS[2]:
        (a, b), _ = latency_mod.timed_side_by_side([run, guide_run], device=cpu, warmup=WARMUP, repeats=repeats,
                                                   threads=1, block_ms=block_ms)
        return statistics.median(x / y for x, y in zip(a, b))
    times, _ = latency_mod.timed_runs(run, device=cpu, warmup=WARMUP, repeats=repeats, threads=1,
                                      block_ms=0.0 if way == WAYS[0] else block_ms)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, nargs="+", default=[50, 200], help="timed blocks per measurement")
    ap.add_argument("--block-ms", type=float, nargs="+", default=[2.0, 10.0], help="shortest timed block, ms")
    args = ap.parse_args()
    torch.set_num_threads(1)
    meta = run_meta()
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
                for block in args.block_ms:
                    for way in WAYS:
                        if way == WAYS[0] and block != args.block_ms[0]:
                            continue  # single calls have no block length
                        for w, run in runs.items():
                            figures.setdefault((runtime, repeats, block, way, w), []).append(
                                one(run, guide_run, way, repeats, block))
    rows, worst, ranked = [], {}, {}
    for (runtime, repeats, block, way, w), xs in figures.items():
        spread = (max(xs) - min(xs)) / statistics.median(xs)
        setting = (runtime, repeats, block, way)
        worst[setting] = max(worst.get(setting, 0.0), spread)
        ranked.setdefault(setting, []).append(statistics.median(xs))
        store.put(f"{runtime}|{way}|{w}|{repeats} blocks" + (f" of {block:g} ms" if way != WAYS[0] else ""),
                  {"figures": xs, "spread": spread}, meta)
        shown = f"{statistics.median(xs) * 1e3:.1f} µs" if way != WAYS[2] else f"{statistics.median(xs):.3f} × guide"
        blocks = f"{repeats} single calls" if way == WAYS[0] else f"{repeats} × ≥ {block:g} ms"
        rows.append(f"| {runtime} | {blocks} | {way} | {w} | {shown} | {spread * 100:.1f} % |")
    lines = ["| runtime | timed blocks | measured | width | median | spread of 5 measurements |",
             "|---|---|---|---|---|---|", *rows, ""]
    for runtime in runtimes:
        for repeats in args.repeats:
            for block in args.block_ms:
                name = f"{runtime}, {repeats} blocks of ≥ {block:g} ms, relative to the guide"
                at = {way: (runtime, repeats, block if way != WAYS[0] else args.block_ms[0], way) for way in WAYS}
                spreads = ", ".join(f"{way} {worst[at[way]] * 100:.1f} %" for way in WAYS)
                relative = (runtime, repeats, block, WAYS[2])
                lines.append(claim(f"{name}: every spread ≤ 5 % (worst per way: {spreads})", worst[relative] <= 0.05))
                lines.append(claim(f"{name}: the widths rank 16 < 64 < 256",
                                   ranked[relative] == sorted(ranked[relative])))
    lines += ["", provenance(meta)]
    publish("latency_stability", "\n".join(lines))


def _missing_onnx() -> list[str]:
    from nas_theseus.export_onnx import missing_packages

    return missing_packages()


if __name__ == "__main__":
    main()
