"""Speed benchmark: one alignment stage of the engine ÷ a hand-written loop doing the same steps (not a test).

Each case swaps one guide part for an MLP, keeps the others, and times the engine's stage loop
(``nas_theseus.convert.train_stage``, set up as ``convert()`` sets it up) against a bare loop over the same cached
activations: a seeded batch permutation, the target's forward, the same alignment loss module, AdamW with the
same cosine schedule, ``steps`` optimizer steps (a fixed-length stage: the held-out stopping rule's
evaluations are a separate, documented cost). Timed interleaved A/B/A/B in one process on 1 CPU thread; the
figure is the median ratio over the pairs. Goal: ≤ 1.15 in every case.

    python benchmarks/stage_loop.py                     # 4 pairs per case (~3 min on 2 cores)

Cases: MNIST-1D CNN conv1 -> MLP(256) with conv2/conv3 kept; a timm ResNet-18 at 32 px (synthetic
CIFAR-10-sized images) with layer1, layer2, layer3 or layer4 -> MLP(256), the other stages kept.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ResultStore, claim, provenance, publish, run_meta  # noqa: E402

from nas_theseus.align import make_alignment  # noqa: E402
from nas_theseus.convert import (  # noqa: E402
    Candidate,
    ConvertConfig,
    GuideActivations,
    Hybrid,
    plan_stages,
    train_stage,
)
from nas_theseus.convert.stages import heldout_rows  # noqa: E402
from nas_theseus.data import load_mnist1d  # noqa: E402
from nas_theseus.data.base import Split, TaskData  # noqa: E402
from nas_theseus.guides import load_guide  # noqa: E402
from nas_theseus.targets import BlockSpec  # noqa: E402

GOAL = 1.15


def synthetic_cifar(n: int = 2048) -> TaskData:
    g = torch.Generator().manual_seed(0)
    split = lambda m: Split(torch.randn(m, 3, 32, 32, generator=g), torch.randint(0, 10, (m,), generator=g))  # noqa: E731
    return TaskData("synthetic_cifar10", split(n), split(256), split(256), 10)


def cases():
    mnist = load_mnist1d()
    yield "MNIST-1D, conv1 -> MLP(256), conv2/conv3 kept", load_guide("builtin:mnist1d_cnn", mnist, weights="random"), \
        mnist, 0, 300
    cifar = synthetic_cifar()
    resnet = load_guide("timm:resnet18", cifar, weights="random")
    for k in range(4):
        yield f"timm ResNet-18 at 32 px, layer{k + 1} -> MLP(256)", resnet, cifar, k, 60


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def setup(guide, data, acts, part, cfg, device="cpu"):
    """A one-stage conversion as ``convert()`` sets it up: part ``part`` swapped for an MLP(256), its loss, the
    probe rows (adapters refit on them)."""
    blocks = tuple(BlockSpec.of("mlp", width=256) if i == part else None for i in range(len(guide.parts)))
    cand = Candidate(blocks)
    stage = plan_stages(cand, cfg)[0]
    hybrid = Hybrid(guide, cand, cfg).to(device)
    hybrid.swap_in(stage.new)
    losses = nn.ModuleDict({str(part): make_alignment(cfg.alignment, hybrid.out_shapes[part],
                                                      guide.shapes[part + 1])}).to(device)
    probe_idx = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[: cfg.probe_size]
    probe = data.train.take(probe_idx)[0].to(device), acts.batch(probe_idx, device)
    hybrid.refit(*probe)
    return hybrid, losses, stage, probe


def time_engine(guide, data, acts, part, cfg, device="cpu") -> float:
    """Seconds of the engine's stage loop (:func:`~nas_theseus.convert.train_stage`), fixed steps."""
    hybrid, losses, stage, probe = setup(guide, data, acts, part, cfg, device)
    heldout = heldout_rows(guide, data, cfg, device)
    sync(device)
    t0 = time.perf_counter()
    train_stage(hybrid, losses, stage, acts, data, cfg, key="bench", device=device, probe=probe, heldout=heldout)
    sync(device)
    return time.perf_counter() - t0


def time_bare(guide, data, acts, part, cfg, device="cpu") -> float:
    hybrid, losses, stage, _ = setup(guide, data, acts, part, cfg, device)
    target, loss_fn = copy.deepcopy(hybrid.targets[str(part)]), losses[str(part)]
    a_in, a_out = acts.acts[part].to(device), acts.acts[part + 1].to(device)
    opt = torch.optim.AdamW(list(target.parameters()) + list(loss_fn.parameters()), lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=stage.steps, eta_min=cfg.lr * 0.1)
    gen = torch.Generator().manual_seed(1)
    n, bs = len(data.train), cfg.batch_size
    target.train()
    sync(device)
    t0 = time.perf_counter()
    perm, pos = torch.randperm(n, generator=gen).to(device), 0
    for _ in range(stage.steps):
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=gen).to(device), 0
        idx = perm[pos:pos + bs]
        pos += bs
        loss = loss_fn(target(a_in[idx]), a_out[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    sync(device)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--out", default="stage_loop", help="results name (benchmarks/results/NAME.{json,md})")
    parser.add_argument("--device", default="cpu", help="cpu (1 thread) or cuda[:i]")
    args = parser.parse_args()
    torch.set_num_threads(1)
    meta = run_meta()
    store = ResultStore(RESULTS / f"{args.out}.json")
    rows = []
    for name, guide, data, part, steps in cases():
        fixed = {"stage_stop": "fixed"} if "stage_stop" in {f.name for f in dataclasses.fields(ConvertConfig)} else {}
        cfg = ConvertConfig(steps_per_stage=steps, **fixed)  # the same number of steps in both loops
        guide.to(args.device)
        acts = GuideActivations.compute(guide, data.train.x, data_key=data.fingerprint, progress=False,
                                        device=args.device)
        acts = acts.on(args.device) if hasattr(acts, "on") else acts
        time_engine(guide, data, acts, part, cfg, args.device)  # warm-up: first-call costs out of the pairs
        time_bare(guide, data, acts, part, cfg, args.device)
        pairs = []
        for _ in range(args.pairs):
            e = time_engine(guide, data, acts, part, cfg, args.device)
            b = time_bare(guide, data, acts, part, cfg, args.device)
            pairs.append((e, b))
        ratio = statistics.median(e / b for e, b in pairs)
        record = {"steps": steps, "engine_s": [e for e, _ in pairs], "bare_s": [b for _, b in pairs],
                  "ratio": ratio}
        store.put(name, record, meta)
        rows.append((name, steps, statistics.median(e for e, _ in pairs), statistics.median(b for _, b in pairs),
                     ratio))
        print(f"{name}: engine {rows[-1][2]:.2f} s, bare {rows[-1][3]:.2f} s, ratio {ratio:.2f}", flush=True)
    where = "1 CPU thread" if args.device == "cpu" else args.device
    lines = [f"One alignment stage, engine ÷ a hand-written loop of the same steps (median of {args.pairs} "
             f"interleaved pairs, {where}).", "",
             "| case | steps | engine s | bare loop s | engine ÷ bare |", "|---|---|---|---|---|"]
    lines += [f"| {n} | {s} | {e:.2f} | {b:.2f} | {r:.2f} |" for n, s, e, b, r in rows]
    lines += [""] + [claim(f"{n}: engine ÷ bare ≤ {GOAL} ({r:.2f})", r <= GOAL) for n, _, _, _, r in rows]
    lines += ["", provenance(meta)]
    publish(args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
