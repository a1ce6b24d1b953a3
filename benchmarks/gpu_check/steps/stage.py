"""stage: one alignment stage (ResNet-18 at 32 px, layer1 -> MLP(256), the other layers kept): the engine ÷ a
bare loop at the same precision (TF32, bf16), and the engine ÷ the best bare loop (bf16, fused AdamW,
torch.compile; compile time apart); interleaved pairs, medians."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from stage_loop import setup, sync, time_engine  # one stage set up as convert() sets it up

from nas_theseus.align.precision import tf32_allowed
from nas_theseus.convert import ConvertConfig, GuideActivations
from nas_theseus.training import autocast_context

from ..sizes import Sizes
from ..workload import prototypes, resnet


def run(sz: Sizes, out: Path) -> dict:
    device, part = sz.device, 0
    data = prototypes(max(2048, sz.train // 10) if sz.device == "cuda" else sz.train)
    guide = resnet(data).to(device)
    acts = GuideActivations.compute(guide, data.train.x, data_key=data.fingerprint, device=device,
                                    progress=False).on(device)
    base = dict(steps_per_stage=sz.stage_steps, stage_stop="fixed")
    tf32_cfg, bf16_cfg = ConvertConfig(**base), ConvertConfig(**base, autocast="bf16")
    fused = device == "cuda"
    runs = {"engine tf32": lambda: time_engine(guide, data, acts, part, tf32_cfg, device),
            "bare tf32": lambda: time_bare(guide, data, acts, part, tf32_cfg, device)["s"],
            "engine bf16": lambda: time_engine(guide, data, acts, part, bf16_cfg, device),
            "bare bf16": lambda: time_bare(guide, data, acts, part, bf16_cfg, device, bf16=True)["s"],
            "bare bf16 fused": lambda: time_bare(guide, data, acts, part, bf16_cfg, device, bf16=True,
                                                 fused=fused)["s"]}
    times = {name: [] for name in runs}
    with tf32_allowed(True):
        for run_once in runs.values():  # warm-up: first-call costs out of the pairs
            run_once()
        for _ in range(sz.stage_pairs):
            for name, run_once in runs.items():  # interleaved
                times[name].append(run_once())
        compiled = [time_bare(guide, data, acts, part, bf16_cfg, device, bf16=True, fused=fused,
                              compile_backend=sz.compile_backend) for _ in range(sz.stage_pairs)]
    med = {name: statistics.median(v) for name, v in times.items()}
    med["bare bf16 fused compiled"] = statistics.median(c["s"] for c in compiled)
    best = min(med[n] for n in ("bare bf16", "bare bf16 fused", "bare bf16 fused compiled"))
    return {"ok": True, "case": "ResNet-18 32 px, layer1 -> MLP(256)", "steps": sz.stage_steps,
            "batch_size": tf32_cfg.batch_size, "median_s": med,
            "steps_per_s": {name: sz.stage_steps / s for name, s in med.items()},
            "compile_s": [c["compile_s"] for c in compiled], "compile_backend": sz.compile_backend,
            "engine_over_bare_tf32": med["engine tf32"] / med["bare tf32"],
            "engine_over_bare_bf16": med["engine bf16"] / med["bare bf16"],
            "engine_bf16_over_best_bare": med["engine bf16"] / best}


def time_bare(guide, data, acts, part, cfg, device, *, bf16=False, fused=False, compile_backend=None) -> dict:
    """Seconds of a hand-written loop doing the same steps (the target's forward, the loss, AdamW with the same
    cosine schedule) on the cached activations; with ``compile_backend`` the target is ``torch.compile``d and
    the first step (the compile) is timed apart."""
    hybrid, losses, stage, _ = setup(guide, data, acts, part, cfg, device)
    target, loss_fn = hybrid.targets[str(part)], losses[str(part)]
    forward = torch.compile(target, backend=compile_backend) if compile_backend else target
    a_in, a_out = acts.acts[part].to(device), acts.acts[part + 1].to(device)
    opt = torch.optim.AdamW([*target.parameters(), *loss_fn.parameters()], lr=cfg.lr,
                            weight_decay=cfg.weight_decay, **({"fused": True} if fused else {}))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=stage.steps, eta_min=cfg.lr * 0.1)
    target.train()

    def step(idx):
        with autocast_context(device, "bf16" if bf16 else None):
            h = forward(a_in[idx])
        loss = loss_fn(h.float(), a_out[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()

    return _timed_steps(step, len(data.train), cfg.batch_size, stage.steps, device, compile_first=bool(compile_backend))


def _timed_steps(step, n: int, bs: int, steps: int, device, *, compile_first: bool) -> dict:
    """Seconds of ``steps`` steps over shuffled batches of ``bs`` of ``n`` rows (reshuffled at each epoch's end);
    with ``compile_first`` one step before them, timed apart (the compile)."""
    gen = torch.Generator().manual_seed(1)
    perm, pos = torch.randperm(n, generator=gen).to(device), 0
    compile_s = None
    if compile_first:
        sync(device)
        t0 = time.perf_counter()
        step(perm[:bs])
        sync(device)
        compile_s = time.perf_counter() - t0
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=gen).to(device), 0
        step(perm[pos:pos + bs])
        pos += bs
    sync(device)
    return {"s": time.perf_counter() - t0, "compile_s": compile_s}
