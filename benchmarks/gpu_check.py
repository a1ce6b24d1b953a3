"""The prepared GPU check: every step's figures in one try on a lent GPU (not a test; see gpu_check.sh).

    bash benchmarks/gpu_check.sh          # on a machine with a CUDA GPU (the device tool's lent H200)
    bash benchmarks/gpu_check.sh --dry    # every step on the CPU with tiny sizes (tests/test_gpu_check.py)

gpu_check.sh runs one step per process, each under its own time limit, in this order (value per second first):

  tests    the CUDA tests (tests/test_cuda.py), a one-trial study on CUDA among them
  readme   the README's first command's study end to end on CUDA, as a new user runs it (empty guide cache):
           wall time, where each trial's time went, the front; beside this repo's record of the same command on
           a 2-core CPU (benchmarks/results/readme_study_cpu.json, benchmarks/readme_study.py)
  cka      CKA numerics on ResNet-18 activations: fp64 vs fp32 vs TF32 vs bf16, and our loss under a global
           TF32 setting and a bf16 autocast (it must read as fp32)
  stage    one alignment stage: engine ÷ a bare loop at the same precision (TF32, bf16), and engine ÷ the best
           bare loop (bf16, fused AdamW, torch.compile; compile time apart)
  e2e      a ResNet-18 -> 4 MLP conversion at fixed steps, fp32 (TF32 off) and bf16
  workers  1, 2 and 4 concurrent workers on the GPU, each running the same stage: aggregate samples/s, peak
           memory each
  memory   GPU memory after each of 6 conversions in one process (partitions and device spellings varied)
  study    a 3-trial synthetic-ResNet study on CUDA beside one trial of it on the CPU (per-trial time ratio)
  ddp      one conversion across 1 and 2 GPUs under torchrun (ResNet-18 layer1 -> MLP(256), the guide
           streamed, the same global batch): alignment samples/s each, and their ratio; skipped with one GPU
  stream   the guide on the fly: a CIFAR-sized folder of PNGs read through a DataLoader with workers, standard
           augmentation, ResNet-18 layer1 -> MLP(256): images/s, GPU utilisation, stage ÷ a bare loop doing the
           same work, and the stage with the guide in channels_last ÷ without

Each step writes its record into OUT/gpu_check.json as soon as it ends (OUT: $OUT, else
benchmarks/results/gpu_check), so a step that runs out of time costs only its own figures; ``summary`` writes
OUT/gpu_check.md, the table of every step. With ``--dry`` nothing needs a GPU: the same code runs on the CPU
(compile with the ``eager`` backend), so the check cannot rot between GPU sessions.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, commit, machine, today  # noqa: E402
from _gpu_check_records import DEFAULT_OUT, STEPS, record  # noqa: E402
from readme_study import run_readme_study  # noqa: E402
from stage_loop import setup, sync, time_engine  # noqa: E402  (one stage set up as convert() sets it up)
from stream_throughput import bare_streamed  # noqa: E402

from nas_theseus.align import linear_cka, make_alignment  # noqa: E402
from nas_theseus.align.cka import unbiased_linear_cka_in  # noqa: E402
from nas_theseus.align.precision import tf32_allowed  # noqa: E402
from nas_theseus.convert import (  # noqa: E402
    Candidate,
    ConvertConfig,
    GuideActivations,
    convert,  # noqa: E402
)
from nas_theseus.convert.stream import GuideStream  # noqa: E402
from nas_theseus.data import load_data  # noqa: E402
from nas_theseus.data.base import Split, TaskData  # noqa: E402
from nas_theseus.guides import load_guide  # noqa: E402
from nas_theseus.targets import BlockSpec  # noqa: E402
from nas_theseus.training import FitConfig, autocast_context, evaluate  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each step runs: on a GPU, or tiny on the CPU (``--dry``)."""

    device: str
    train: int  # prototype images in the training split
    cka_rows: int
    stage_steps: int
    stage_pairs: int
    e2e_steps: int
    e2e_guide_epochs: int
    e2e_finetune_epochs: int
    worker_counts: tuple[int, ...]
    worker_steps: int
    memory_conversions: int
    study_steps: int
    compile_backend: str
    stream_images: int  # the synthetic image folder of the streamed step
    stream_steps: int
    stream_workers: int
    ddp_steps: int  # alignment steps of the one-conversion-across-GPUs step, at global batch ddp_batch
    ddp_batch: int


GPU = Sizes("cuda", 20000, 1024, 300, 3, 400, 3, 3, (1, 2, 4), 400, 6, 100, "inductor", 8000, 200,
            min(8, (os.cpu_count() or 2) - 1), 200, 512)
DRY = Sizes("cpu", 384, 128, 4, 1, 4, 1, 1, (1, 2), 4, 3, 3, "eager", 200, 3, 1, 3, 8)


def prototypes(n_train: int, n_eval: int | None = None, noise: float = 1.5) -> TaskData:
    """Learnable 3×32×32 images: 10 random class prototypes plus per-sample noise."""
    n_eval = n_eval or max(64, n_train // 10)
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(10, 3, 32, 32, generator=g)

    def split(n):
        y = torch.randint(0, 10, (n,), generator=g)
        return Split(protos[y] + noise * torch.randn(n, 3, 32, 32, generator=g), y)

    return TaskData(f"prototypes32-{n_train}", split(n_train), split(n_eval), split(n_eval), 10)


def resnet(data: TaskData, *, epochs: int = 0, device: str = "cpu"):
    """A timm ResNet-18 guide at 32 px: random weights, or trained for ``epochs`` on ``data`` (cached)."""
    if epochs == 0:
        return load_guide("timm:resnet18", data, weights="random", progress=False)
    return load_guide("timm:resnet18", data, device=device, progress=False,
                      fit={"max_epochs": epochs, "patience": epochs, "lr": 1e-3, "batch_size": 256})


def peak_memory(device) -> dict:
    if torch.device(device).type != "cuda":
        return {"peak_rss_mb": round(_rss_mb(), 1)}
    mb = 2**20
    return {"peak_allocated_mb": round(torch.cuda.max_memory_allocated(device) / mb, 1),
            "peak_reserved_mb": round(torch.cuda.max_memory_reserved(device) / mb, 1)}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# --- tests --------------------------------------------------------------------------------------------------------
def step_tests(sz: Sizes, out: Path) -> dict:
    """The CUDA tests (on the CPU: the device tests, with the meta device standing in)."""
    files = ["tests/test_cuda.py"] if sz.device == "cuda" else ["tests/test_devices.py"]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", *files],
                          cwd=ROOT, capture_output=True, text=True)
    print(proc.stdout[-6000:], proc.stderr[-2000:], sep="\n")
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last)}
    return {"ok": proc.returncode == 0 and counts.get("passed", 0) > 0, "files": files, "summary": last, **counts}


# --- readme -------------------------------------------------------------------------------------------------------
DRY_README = ("study.n_trials=2", "convert.steps_per_stage=4", "convert.finetune.max_epochs=1",
              "guide.fit.max_epochs=1", "data.options.num_samples=600", "latency.repeats=3", "latency.block_ms=1")


def step_readme(sz: Sizes, out: Path) -> dict:
    """``nas-theseus run studies/mnist1d_deploy.toml`` end to end on the check's device (tiny settings on a dry
    run), with the stored 2-core CPU run of the same command beside it."""
    run = run_readme_study(sz.device, settings=() if sz.device == "cuda" else DRY_README)
    cpu_file = ROOT / "benchmarks" / "results" / "readme_study_cpu.json"
    cpu = [r for r in json.loads(cpu_file.read_text())["runs"].values() if r.get("ok")] if cpu_file.exists() else []
    if run.get("ok") and cpu and sz.device == "cuda":
        cpu_wall = statistics.median(r["wall_s"] for r in cpu)
        cpu_trial = statistics.median(r["per_trial_s"] for r in cpu)
        run.update(cpu_wall_s=cpu_wall, cpu_per_trial_s=cpu_trial, cpu_commits=sorted({r["commit"] for r in cpu}),
                   cpu_over_device=cpu_wall / run["wall_s"], cpu_over_device_per_trial=cpu_trial / run["per_trial_s"])
    return run


# --- cka ----------------------------------------------------------------------------------------------------------
def step_cka(sz: Sizes, out: Path) -> dict:
    return cka_numerics(sz.device, sz.cka_rows)


def cka_numerics(device: str, rows: int) -> dict:
    """1 − CKA in each precision against fp64, on a randomly initialised ResNet-18's activations at 32 px: near
    CKA = 1 (a layer against itself plus a little noise: the regime where accuracy is kept) and between
    adjacent layers. ``fp32`` / ``tf32`` / ``bf16``: the estimator's formula computed in that precision;
    ``our_loss``: the alignment loss as the engine computes it, under global TF32 and a bf16 autocast. It holds
    when our loss is as accurate as the float32 formula (biased CKA) or float64 (unbiased CKA, computed so)."""
    data = prototypes(rows)
    guide = resnet(data).to(device)
    x = data.train.x[:rows].to(device)
    acts = guide.activations(x)
    g = torch.Generator(device=device).manual_seed(0)
    pairs = {}
    for k in range(1, len(guide.parts) + 1):
        a = acts[k].float()
        pairs[f"layer{k} vs itself + noise"] = (a, a + 0.05 * a.std() * torch.randn(a.shape, generator=g,
                                                                                         device=device))
        if k < len(guide.parts):
            pairs[f"layer{k} vs layer{k + 1}"] = (a, acts[k + 1].float())
    table, ok = {}, True
    for name, (a, b) in pairs.items():
        for est_name, est, loss_name in (("biased", linear_cka, "cka"),
                                         ("unbiased", unbiased_linear_cka_in, "cka_unbiased")):
            ref = 1.0 - float(est(a.double(), b.double()))
            row = {"fp64": ref}
            with tf32_allowed(False):
                row["fp32"] = 1.0 - float(est(a, b))
            with tf32_allowed(True):
                row["tf32"] = 1.0 - float(est(a, b))
            with autocast_context(device, "bf16"):
                row["bf16"] = 1.0 - float(est(a, b))
            loss = make_alignment(loss_name, a.shape[1:], b.shape[1:])
            with tf32_allowed(True), autocast_context(device, "bf16"):  # what the engine's loss must withstand
                row["our_loss"] = float(loss(a, b))
            row["rel_err"] = {p: abs(v - ref) / max(abs(ref), 1e-12) for p, v in row.items() if p != "fp64"}
            allowed = max(2 * abs(row["fp32"] - ref), 1e-7) if est_name == "biased" else 1e-7
            ok = ok and abs(row["our_loss"] - ref) <= allowed
            table[f"{name}, {est_name}"] = row
    worst = {p: max(r["rel_err"][p] for r in table.values()) for p in ("fp32", "tf32", "bf16", "our_loss")}
    return {"ok": ok, "rows": rows, "device": device, "pairs": table, "worst_rel_err_of_1_minus_cka": worst}


# --- stage --------------------------------------------------------------------------------------------------------
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
    gen = torch.Generator().manual_seed(1)
    n, bs = len(data.train), cfg.batch_size
    target.train()

    def step(idx):
        with autocast_context(device, "bf16" if bf16 else None):
            h = forward(a_in[idx])
        loss = loss_fn(h.float(), a_out[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()

    perm, pos = torch.randperm(n, generator=gen).to(device), 0
    compile_s = None
    if compile_backend:
        sync(device)
        t0 = time.perf_counter()
        step(perm[:bs])
        sync(device)
        compile_s = time.perf_counter() - t0
    sync(device)
    t0 = time.perf_counter()
    for _ in range(stage.steps):
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=gen).to(device), 0
        step(perm[pos:pos + bs])
        pos += bs
    sync(device)
    return {"s": time.perf_counter() - t0, "compile_s": compile_s}


def step_stage(sz: Sizes, out: Path) -> dict:
    """ResNet-18 at 32 px, layer1 -> MLP(256), the other layers kept; interleaved pairs, medians."""
    device, part = sz.device, 0
    data = prototypes(max(2048, sz.train // 10) if sz.device == "cuda" else sz.train)
    guide = resnet(data).to(device)
    acts = GuideActivations.compute(guide, data.train.x, data_key=data.fingerprint, device=device,
                                    progress=False).on(device)
    base = dict(steps_per_stage=sz.stage_steps, stage_stop="fixed")
    tf32_cfg, bf16_cfg = ConvertConfig(**base), ConvertConfig(**base, autocast="bf16")
    runs = {"engine tf32": lambda: time_engine(guide, data, acts, part, tf32_cfg, device),
            "bare tf32": lambda: time_bare(guide, data, acts, part, tf32_cfg, device)["s"],
            "engine bf16": lambda: time_engine(guide, data, acts, part, bf16_cfg, device),
            "bare bf16": lambda: time_bare(guide, data, acts, part, bf16_cfg, device, bf16=True)["s"],
            "bare bf16 fused": lambda: time_bare(guide, data, acts, part, bf16_cfg, device, bf16=True,
                                                 fused=device == "cuda")["s"]}
    times = {name: [] for name in runs}
    with tf32_allowed(True):
        for run in runs.values():  # warm-up: first-call costs out of the pairs
            run()
        for _ in range(sz.stage_pairs):
            for name, run in runs.items():  # interleaved
                times[name].append(run())
        compiled = [time_bare(guide, data, acts, part, bf16_cfg, device, bf16=True, fused=device == "cuda",
                              compile_backend=sz.compile_backend) for _ in range(sz.stage_pairs)]
    med = {name: statistics.median(v) for name, v in times.items()}
    med["bare bf16 fused compiled"] = statistics.median(c["s"] for c in compiled)
    best = min(med[n] for n in ("bare bf16", "bare bf16 fused", "bare bf16 fused compiled"))
    steps_per_s = {name: sz.stage_steps / s for name, s in med.items()}
    return {"ok": True, "case": "ResNet-18 32 px, layer1 -> MLP(256)", "steps": sz.stage_steps,
            "batch_size": tf32_cfg.batch_size, "median_s": med, "steps_per_s": steps_per_s,
            "compile_s": [c["compile_s"] for c in compiled], "compile_backend": sz.compile_backend,
            "engine_over_bare_tf32": med["engine tf32"] / med["bare tf32"],
            "engine_over_bare_bf16": med["engine bf16"] / med["bare bf16"],
            "engine_bf16_over_best_bare": med["engine bf16"] / best}


# --- e2e ----------------------------------------------------------------------------------------------------------
def step_e2e(sz: Sizes, out: Path) -> dict:
    """A trained ResNet-18 guide -> MLP(512) in every part, fixed steps, fine-tuned; fp32 (TF32 off) and bf16."""
    device = sz.device
    data = prototypes(sz.train)
    guide = resnet(data, epochs=sz.e2e_guide_epochs, device=device).to(device)
    guide_acc = evaluate(guide.module, data.test)[0]
    cand = Candidate((BlockSpec.of("mlp", width=512),) * 4)
    acts = GuideActivations.compute(guide, data.train.x, data_key=data.fingerprint, device=device, progress=False)
    runs = {}
    for precision in ("fp32", "bf16"):
        half = None if precision == "fp32" else "bf16"
        cfg = ConvertConfig(steps_per_stage=sz.e2e_steps, stage_stop="fixed", batch_size=256, autocast=half,
                            tf32=False, finetune=FitConfig(max_epochs=sz.e2e_finetune_epochs, patience=5,
                                                           lr=1e-3, batch_size=256, autocast=half))
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        r = convert(guide, cand, data, cfg, activations=acts, device=device, progress=False)
        wall = time.perf_counter() - t0
        align_s = sum(s.wall_s for s in r.stages)
        runs[precision] = {"wall_s": wall, "s_per_stage": [s.wall_s for s in r.stages], "timings": r.timings,
                           "align_samples_per_s": sum(s.steps for s in r.stages) * cfg.batch_size / align_s,
                           "test_accuracy": r.test_accuracy, "heldout_alignment": r.stages[-1].alignment,
                           **peak_memory(device)}
    return {"ok": True, "guide_test_accuracy": guide_acc, "steps_per_stage": sz.e2e_steps, "train": sz.train,
            "runs": runs, "bf16_speedup": runs["fp32"]["wall_s"] / runs["bf16"]["wall_s"]}


# --- workers ------------------------------------------------------------------------------------------------------
def worker(args) -> None:
    """One of N concurrent workers: the stage of ``step_stage`` (TF32), timed from a common start signal."""
    torch.set_num_threads(args.threads)
    sz = DRY if args.dry else GPU
    device = sz.device
    data = prototypes(max(2048, sz.train // 10) if device == "cuda" else sz.train)
    guide = resnet(data).to(device)
    acts = GuideActivations.compute(guide, data.train.x, data_key=data.fingerprint, device=device,
                                    progress=False).on(device)
    cfg = ConvertConfig(steps_per_stage=sz.worker_steps, stage_stop="fixed")
    with tf32_allowed(True):
        time_engine(guide, data, acts, 0, dataclasses.replace(cfg, steps_per_stage=2), device)  # warm-up
        Path(args.ready).touch()
        while not Path(args.go).exists():
            time.sleep(0.01)
        seconds = time_engine(guide, data, acts, 0, cfg, device)
    print(json.dumps({"samples_per_s": sz.worker_steps * cfg.batch_size / seconds, "s": seconds,
                      **peak_memory(device)}))


def step_workers(sz: Sizes, out: Path) -> dict:
    results = {}
    for n in sz.worker_counts:
        with tempfile.TemporaryDirectory() as tmp:
            go = Path(tmp) / "go"
            threads = max(1, (os.cpu_count() or 1) // n)
            procs = [subprocess.Popen([sys.executable, __file__, "worker", "--ready", f"{tmp}/ready{i}", "--go",
                                       str(go), "--threads", str(threads), *(["--dry"] if sz.device == "cpu" else [])],
                                      stdout=subprocess.PIPE, text=True) for i in range(n)]
            while sum(Path(f"{tmp}/ready{i}").exists() for i in range(n)) < n:
                if any(p.poll() not in (None, 0) for p in procs):
                    break
                time.sleep(0.05)
            go.touch()
            outputs = [(p.communicate()[0], p.returncode) for p in procs]
        if any(rc != 0 or not text.strip() for text, rc in outputs):
            return {"ok": False, "reason": f"a worker of {n} failed (exit codes {[rc for _, rc in outputs]})",
                    "results": results}
        each = [json.loads(text.strip().splitlines()[-1]) for text, _ in outputs]
        results[str(n)] = {"aggregate_samples_per_s": sum(e["samples_per_s"] for e in each), "workers": each}
    one = results[str(sz.worker_counts[0])]["aggregate_samples_per_s"]
    return {"ok": True, "steps": sz.worker_steps, "results": results,
            "scaling": {n: r["aggregate_samples_per_s"] / one for n, r in results.items()}}


# --- memory -------------------------------------------------------------------------------------------------------
def step_memory(sz: Sizes, out: Path) -> dict:
    """Conversions one after another in one process, as a study's worker runs its trials: one activation cache,
    partitions and device spellings varied; the memory held after each should not grow."""
    device = sz.device
    data = prototypes(max(2048, sz.train // 10) if device == "cuda" else sz.train)
    guide = resnet(data).to(device)
    acts = GuideActivations.compute(guide, data.train.x, data_key=data.fingerprint, device=device, progress=False)
    mlp = BlockSpec.of("mlp", width=256)
    cands = [Candidate((mlp, None, None, None)), Candidate((mlp, mlp), partition=(2, 2)),
             Candidate((None, None, mlp, None)), Candidate((mlp, mlp, None), partition=(1, 2, 1)),
             Candidate((None, mlp, None, mlp)), Candidate((mlp,), partition=(4,))]
    cfg = ConvertConfig(steps_per_stage=50 if device == "cuda" else 3, stage_stop="fixed",
                        finetune=FitConfig(max_epochs=1, patience=1))
    held = []
    spellings = ["cuda", "cuda:0"] if device == "cuda" else ["cpu"]
    for i in range(sz.memory_conversions):
        convert(guide, cands[i % len(cands)], data, cfg, activations=acts, device=spellings[i % len(spellings)],
                progress=False)
        gc.collect()
        held.append(round(torch.cuda.memory_allocated(device) / 2**20, 1) if device == "cuda" else round(_rss_mb(), 1))
    growth = held[-1] - held[0]
    return {"ok": True, "unit": "MiB allocated on the GPU" if device == "cuda" else "MiB resident (RSS)",
            "held_after_each": held, "growth_first_to_last": growth, **peak_memory(device)}


# --- study --------------------------------------------------------------------------------------------------------
STUDY_FILE = """[study]
name = "gpu_check"
search_space = "{space}"
n_trials = {n_trials}
startup_trials = 3
device = "{device}"

[objectives]
accuracy = "maximize"
flops = "minimize"
latency_ms = "minimize"

[guide]
source = "timm:resnet18"
fit = {{ max_epochs = 1, patience = 1, batch_size = 256 }}

[data]
name = "npz"
options = {{ path = "{npz}" }}

[convert]
steps_per_stage = {steps}
stage_stop = "fixed"

[convert.finetune]
max_epochs = 2
patience = 2
"""


def step_study(sz: Sizes, out: Path) -> dict:
    """``nas-theseus run`` of a synthetic-ResNet study, 3 trials on the check's device, then one of its trials
    (the same parameters) again with ``--device cpu``: the per-trial time ratio."""
    data = prototypes(max(4096, sz.train // 5) if sz.device == "cuda" else sz.train)
    space = ROOT / "search_spaces" / "cifar10_resnet18_to_mlp.py"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "data.npz", X=torch.cat([data.train.x, data.val.x]).numpy(),
                 y=torch.cat([data.train.y, data.val.y]).numpy(), X_test=data.test.x.numpy(),
                 y_test=data.test.y.numpy())
        env = {**os.environ, "NAS_THESEUS_CACHE": str(tmp / "cache"), "NAS_THESEUS_PROGRESS": "0"}

        def run(device, n_trials, workdir, extra=()):
            study = tmp / f"{workdir}.toml"
            study.write_text(STUDY_FILE.format(space=space, n_trials=n_trials, device=device, npz=tmp / "data.npz",
                                               steps=sz.study_steps))
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "nas_theseus", "run", str(study), "--workdir",
                                   str(tmp / workdir), "--no-progress", *extra], cwd=ROOT, env=env,
                                  capture_output=True, text=True)
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
            trials = [json.loads(p.read_text()) for p in sorted((tmp / workdir / "trials").glob("*/metrics.json"))]
            return proc.returncode, time.perf_counter() - t0, trials

        rc, wall, trials = run(sz.device, 3, "on_device")
        if rc != 0 or not trials:
            return {"ok": False, "rc": rc, "reason": "the study on the device did not complete its trials"}
        params = json.loads(next((tmp / "on_device" / "trials").glob("*/arch.json")).read_text())["params"]
        rc_cpu, wall_cpu, cpu_trials = run("cpu", 1, "on_cpu", ["--set", f"study.enqueue=[{_toml_table(params)}]"])
    first = trials[0]
    record = {"ok": rc_cpu == 0 and bool(cpu_trials), "device_wall_s": wall, "trials": len(trials),
              "trial_wall_s": [t["trial_wall_s"] for t in trials], "timings": [t.get("timings") for t in trials],
              "test_accuracy": [t["test_accuracy"] for t in trials],
              "latency_devices": sorted({t["latency"]["device"] for t in trials if "latency" in t})}
    if cpu_trials:
        record.update(cpu_trial_wall_s=cpu_trials[0]["trial_wall_s"], cpu_timings=cpu_trials[0].get("timings"),
                      cpu_over_device_per_trial=cpu_trials[0]["trial_wall_s"] / first["trial_wall_s"])
    return record


def _toml_table(params: dict) -> str:
    return "{" + ", ".join(f'"{k}" = {json.dumps(v)}' for k, v in params.items()) + "}"


# --- stream -------------------------------------------------------------------------------------------------------
class Utilisation:
    """NVML's GPU utilisation sampled every 100 ms while active (no figure without NVML or a GPU)."""

    def __init__(self, device):
        import threading

        self.device, self.samples, self._stop = torch.device(device), [], threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            try:
                self.samples.append(torch.cuda.utilization(self.device))
            except Exception:  # noqa: BLE001 - no NVML here: no figure
                return
            time.sleep(0.1)

    def __enter__(self):
        if self.device.type == "cuda":
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def step_stream(sz: Sizes, out: Path) -> dict:
    """A streamed stage over a synthetic image folder read through a DataLoader, against a bare loop."""
    from scale import write_folder

    device = sz.device
    with tempfile.TemporaryDirectory() as tmp:
        write_folder(Path(tmp) / "imgs", sz.stream_images)
        data = load_data("imagefolder", root=str(Path(tmp) / "imgs"), size=32, in_memory=False, augment="standard",
                         workers=sz.stream_workers)
        guide = resnet(data).to(device)
        cfg = ConvertConfig(steps_per_stage=sz.stream_steps, stage_stop="fixed", activations="stream")
        feed = GuideStream(guide, data)
        time_engine(guide, data, feed, 0, dataclasses.replace(cfg, steps_per_stage=2), device)  # warm-up
        with Utilisation(device) as util:
            engine_s = time_engine(guide, data, feed, 0, cfg, device)
        bare_s = bare_streamed(guide, data, 0, cfg, device)[0]
        # the same stage with the guide in channels_last (ConvertConfig.channels_last), last: it converts the guide
        last = GuideStream(guide, data, channels_last=True)
        time_engine(guide, data, last, 0, dataclasses.replace(cfg, steps_per_stage=2), device)
        channels_last_s = time_engine(guide, data, last, 0, cfg, device)
    images = sz.stream_steps * min(cfg.batch_size, len(data.train))
    return {"ok": True, "images": sz.stream_images, "steps": sz.stream_steps, "workers": sz.stream_workers,
            "engine_images_per_s": images / engine_s, "bare_images_per_s": images / bare_s,
            "engine_over_bare": engine_s / bare_s, "gpu_utilisation_pct": util.mean,
            "channels_last_over_default": channels_last_s / engine_s, **peak_memory(device)}


# --- ddp ----------------------------------------------------------------------------------------------------------
def ddp_rank(args) -> None:
    """One rank of the ``ddp`` step (under torchrun): the conversion, its alignment samples/s printed by rank 0."""
    sz = DRY if args.dry else GPU
    torch.set_num_threads(args.threads)
    data = prototypes(max(2048, sz.train // 10) if sz.device == "cuda" else sz.train)
    candidate = Candidate((BlockSpec.of("mlp", width=256), None, None, None), order=(0,))
    config = ConvertConfig(steps_per_stage=sz.ddp_steps, batch_size=sz.ddp_batch, stage_stop="fixed",
                           activations="stream", finetune=FitConfig(max_epochs=1, patience=1))
    result = convert(resnet(data), candidate, data, config, device=sz.device, progress=False)
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return
    align_s = result.timings["align_s"]
    print(json.dumps({"align_s": align_s, "samples_per_s": sz.ddp_steps * sz.ddp_batch / align_s,
                      "ranks": int(os.environ.get("WORLD_SIZE", "1")), **peak_memory(sz.device)}))


def step_ddp(sz: Sizes, out: Path) -> dict:
    gpus = torch.cuda.device_count() if sz.device == "cuda" else 2  # a dry run: 2 CPU processes on gloo
    if gpus < 2:
        return {"ok": True, "reason": f"skipped: {gpus} GPU here, the scaling of one conversion needs 2 or more"}
    runs = {}
    for ranks in (1, 2):
        threads = max(1, (os.cpu_count() or 2) // ranks) if sz.device == "cuda" else 1
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               f"--nproc-per-node={ranks}", __file__, "ddp_rank", "--threads", str(threads),
                               *(["--dry"] if sz.device == "cpu" else [])], capture_output=True, text=True)
        if proc.returncode != 0 or not proc.stdout.strip():
            return {"ok": False, "reason": f"{ranks} rank(s) failed (exit code {proc.returncode}): "
                                           f"{proc.stderr.strip()[-300:]}", "runs": runs}
        runs[str(ranks)] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"ok": True, "case": "ResNet-18 32 px, layer1 -> MLP(256), guide streamed", "steps": sz.ddp_steps,
            "global_batch": sz.ddp_batch, "runs": runs,
            "two_over_one": runs["2"]["samples_per_s"] / runs["1"]["samples_per_s"]}


# --- records ------------------------------------------------------------------------------------------------------
def meta() -> dict:
    gpu = {}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        gpu = {"gpu": p.name, "gpu_memory_gib": round(p.total_memory / 2**30, 1), "cuda": torch.version.cuda,
               "cudnn": torch.backends.cudnn.version()}
    return {"machine": machine(), "commit": commit(), "date": today(), "torch": torch.__version__, **gpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=[*STEPS, "worker", "ddp_rank"])
    ap.add_argument("--dry", action="store_true", help="on the CPU with tiny sizes")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(DEFAULT_OUT))
    ap.add_argument("--ready", help="worker: the file it touches once set up")
    ap.add_argument("--go", help="worker: the file whose appearance starts the timed loop")
    ap.add_argument("--threads", type=int, default=1, help="worker: CPU threads")
    args = ap.parse_args()
    if args.what == "worker":
        return worker(args)
    if args.what == "ddp_rank":
        return ddp_rank(args)
    out = Path(args.out)
    sz = DRY if args.dry else GPU
    if sz.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA GPU here (use --dry on the CPU)")
    if sz.device == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    record(out, args.what, {}, meta())
    t0 = time.perf_counter()
    values = globals()[f"step_{args.what}"](sz, out)
    values["step_s"] = round(time.perf_counter() - t0, 1)
    record(out, args.what, values)
    print(json.dumps({args.what: values}, indent=1, default=str)[:4000])
    if not values.get("ok"):
        sys.exit(1)


if __name__ == "__main__":
    main()
