"""Throughput benchmark: a streamed alignment stage ÷ a bare distillation loop doing the same work (not a test).

The benchmark writes a folder of N 32-px PNGs (``scale.write_folder``; temporary, never committed), reads it
lazily through a DataLoader (``workers`` worker processes, ``standard`` augmentation: crop with padding and
flip per image), and swaps part 1 of the small CNN guide of ``scale.py`` (random weights) for an MLP(256). The
engine's stage (:func:`~nas_theseus.convert.train_stage` fed by the guide on the fly,
:class:`~nas_theseus.convert.stream.GuideStream`) is timed against a hand-written loop doing the same work: the
same batches and augmentation (``split.batches``), the guide's forward to the level the loss reads, the
target's forward and backward, the same loss module, AdamW with the same cosine schedule; ``steps`` fixed
steps each. Interleaved pairs in one process, the main process on 1 thread; the figure is the median ratio.
Also reported: the share of the bare loop's time spent waiting for the next batch (the DataLoader). Two cases:
the folder read from files (``in_memory = false``: decoding and per-image augmentation in the worker, the
loader-bound case on 2 cores), and the same folder decoded into tensors (``in_memory = true``: batched
augmentation, no loader; the engine's own overhead shows there). Goal: engine ÷ bare ≤ 1.15 on the CPU.

    python benchmarks/stream_throughput.py                  # 6 pairs a case, 2,000 images, 1 worker (~4 min)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, claim, provenance, run_meta, save_table  # noqa: E402
from scale import GUIDE, write_folder  # noqa: E402
from stage_loop import setup, sync, time_engine  # noqa: E402

from nas_theseus.convert import ConvertConfig  # noqa: E402
from nas_theseus.convert.stream import GuideStream  # noqa: E402
from nas_theseus.data import load_data  # noqa: E402
from nas_theseus.guides import load_guide  # noqa: E402

GOAL = 1.15


def bare_streamed(guide, data, part: int, cfg: ConvertConfig, device) -> tuple[float, float]:
    """Seconds of a hand-written distillation loop doing a streamed stage's work (the same DataLoader and
    augmentation, the guide's forward to the level the loss reads, the target's forward and backward, the loss,
    AdamW with the same schedule), and the seconds of it spent waiting for the next batch."""
    hybrid, losses, stage, _ = setup(guide, data, GuideStream(guide, data), part, cfg, device)
    target, loss_fn = hybrid.targets[str(part)], losses[str(part)]
    opt = torch.optim.AdamW([*target.parameters(), *loss_fn.parameters()], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=stage.steps, eta_min=cfg.lr * 0.1)
    gen, n, steps, waited = torch.Generator().manual_seed(1), len(data.train), 0, 0.0
    bs = min(cfg.batch_size, n)  # as the engine takes it
    target.train()
    sync(device)
    t0 = time.perf_counter()
    while steps < stage.steps:
        order = torch.randperm(n, generator=gen)[: n - n % bs]
        batches = data.train.batches(bs, order=order, device=device, augment=data.augmentation, seed=steps)
        while steps < stage.steps:
            t_wait = time.perf_counter()
            b = next(batches, None)
            waited += time.perf_counter() - t_wait
            if b is None:
                break
            with torch.no_grad():
                a_in, a_out = guide.activations_upto(b.x, part + 1)[part:part + 2]
            loss = loss_fn(target(a_in), a_out)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            steps += 1
    sync(device)
    return time.perf_counter() - t0, waited


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--out", default="stream_throughput")
    args = ap.parse_args()
    torch.set_num_threads(1)
    meta = run_meta()
    cfg = ConvertConfig(steps_per_stage=args.steps, stage_stop="fixed", batch_size=128, activations="stream")
    cases = {}
    with tempfile.TemporaryDirectory(prefix="nas-theseus-throughput-") as tmp:
        tmp = Path(tmp)
        write_folder(tmp / "imgs", args.images)
        (tmp / "guide.py").write_text(GUIDE)
        for case, in_memory in (("files", False), ("in memory", True)):
            data = load_data("imagefolder", root=str(tmp / "imgs"), size=32, in_memory=in_memory,
                             augment="standard", workers=args.workers)
            guide = load_guide(f"torch:{tmp / 'guide.py'}:small_cnn", data, parts=["0", "1", "2"],
                               weights="random", progress=False)
            cases[case] = pairs(guide, data, cfg, args.pairs, case)
    summary = {case: {"median_ratio": statistics.median(r["ratio"] for r in rows),
                      "median_wait_share": statistics.median(r["bare_wait_share"] for r in rows),
                      "engine_images_per_s": args.steps * cfg.batch_size / statistics.median(r["engine_s"]
                                                                                              for r in rows)}
               for case, rows in cases.items()}
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"meta": meta, "settings": vars(args), "pairs": cases,
                                                          "summary": summary}, indent=1))
    lines = [f"A streamed alignment stage (small CNN guide, random weights, part 1 -> MLP(256), {args.steps} steps "
             f"of {cfg.batch_size} images, standard augmentation) over a folder of {args.images} 32-px PNGs, read "
             f"from the files through a DataLoader with {args.workers} worker(s), or decoded into tensors once; "
             f"main process on 1 thread; {args.pairs} interleaved pairs a case.", "",
             "| case | engine s (median) | bare loop s (median) | engine ÷ bare (median, range) | bare loop making "
             "or waiting for batches | engine images/s |", "|---|---|---|---|---|---|"]
    for case, rows in cases.items():
        ratios = [r["ratio"] for r in rows]
        lines.append(f"| {case} | {statistics.median(r['engine_s'] for r in rows):.2f} | "
                     f"{statistics.median(r['bare_s'] for r in rows):.2f} | {summary[case]['median_ratio']:.3f} "
                     f"({min(ratios):.2f}–{max(ratios):.2f}) | {100 * summary[case]['median_wait_share']:.0f} % | "
                     f"{summary[case]['engine_images_per_s']:.0f} |")
    lines += [""] + [claim(f"{case}: streamed stage ÷ bare loop ≤ {GOAL} ({s['median_ratio']:.3f})",
                           s["median_ratio"] <= GOAL) for case, s in summary.items()]
    lines += ["", provenance(meta)]
    save_table(args.out, "\n".join(lines) + "\n")


def pairs(guide, data, cfg: ConvertConfig, n: int, case: str) -> list[dict]:
    """``n`` interleaved (engine, bare loop) timings of part 1's stage, after a warm-up of each."""
    feed = GuideStream(guide, data)
    time_engine(guide, data, feed, 1, cfg, "cpu")  # warm-up: first-call costs out of the pairs
    bare_streamed(guide, data, 1, cfg, "cpu")
    rows = []
    for i in range(n):
        engine_s = time_engine(guide, data, feed, 1, cfg, "cpu")
        bare_s, waited = bare_streamed(guide, data, 1, cfg, "cpu")
        rows.append({"engine_s": engine_s, "bare_s": bare_s, "ratio": engine_s / bare_s,
                     "bare_wait_share": waited / bare_s})
        print(f"{case}, pair {i + 1}: engine {engine_s:.2f} s, bare {bare_s:.2f} s (waiting "
              f"{100 * waited / bare_s:.0f} %), ratio {engine_s / bare_s:.3f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
