"""CUDA graphs benchmark: the engine's alignment stage with ``convert.compile`` off, ``"default"`` and
``"reduce-overhead"`` (the compiled target's forward and backward replayed as CUDA graphs), not a test.

Cases: the README's default study's guide and stage settings (``studies/mnist1d_deploy.toml``: MNIST-1D, the
guide's first part → MLP(256); small kernels, launch-bound: the 425–476 steps/s of the H200 on 12-04) and a
timm ResNet-18 at 32 px, layer1 → MLP(256) (random weights, synthetic CIFAR-sized rows). Per mode: the first
stage's seconds (the compile and the graphs' recording included), then ``--pairs`` interleaved rounds of every
mode (steady steps/s, the median), and the loss curve's largest relative difference from the uncompiled
stage's (compiled kernels round otherwise). Inductor's on-disk cache is off, so the first compiled mode's
first stage compiles cold ("reduce-overhead"; "default" may reuse kernels compiled in the process before it);
the frames compiled during the rounds say whether a new stage's target recompiles. What it decides: whether
``compile = "reduce-overhead"`` pays on a GPU, and for how many steps a stage must run to earn its compile back
(issue 33: ≥ 3× the default stage).

    python benchmarks/cuda_graphs.py --device cuda                      # on a GPU (a few minutes, compiles included)
    python benchmarks/cuda_graphs.py --device cpu --steps 4 --pairs 1 --out cuda_graphs_smoke   # the code paths
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ROOT, provenance, publish, run_meta  # noqa: E402
from stage_loop import setup, sync, synthetic_cifar  # noqa: E402

from nas_theseus.convert import GuideActivations, train_stage  # noqa: E402
from nas_theseus.convert.stages import heldout_rows  # noqa: E402
from nas_theseus.data import load_mnist1d  # noqa: E402
from nas_theseus.guides import load_guide  # noqa: E402
from nas_theseus.study.config import load_study_config  # noqa: E402
from nas_theseus.utils.compiling import Compiler  # noqa: E402

MODES = (False, "reduce-overhead", "default")  # reduce-overhead first: the later mode may reuse its kernels


def cases(steps: int):
    """(name, guide, data, the stage's ConvertConfig) per case; fixed-length stages of ``steps``."""
    study = load_study_config(str(ROOT / "studies" / "mnist1d_deploy.toml"), [])
    readme = dataclasses.replace(study.convert, steps_per_stage=steps, stage_stop="fixed")
    mnist = load_mnist1d()
    yield "README study: MNIST-1D, part 1 -> MLP(256)", load_guide("builtin:mnist1d_cnn", mnist,
                                                                    weights="random"), mnist, readme
    cifar = synthetic_cifar()
    yield "ResNet-18 at 32 px, layer1 -> MLP(256)", load_guide("timm:resnet18", cifar, weights="random"), cifar, \
        dataclasses.replace(readme, alignment="cka")


def stage(guide, data, acts, cfg, device, failed: dict) -> tuple[float, list[float]]:
    """Seconds of one stage (part 0 swapped, as ``convert()`` sets it up) and its loss curve; where the compiler
    fell back to eager (``Compiler.failed``), why, into ``failed[cfg.compile]``: that mode's figure is eager's."""
    hybrid, losses, plan, probe = setup(guide, data, acts, 0, cfg, device)
    heldout = heldout_rows(guide, data, cfg, device)
    compiler = Compiler(cfg.compile, what=f"benchmark, compile={cfg.compile}")
    sync(device)
    t0 = time.perf_counter()
    curve, _, _ = train_stage(hybrid, losses, plan, acts, data, cfg, key="bench", device=device, probe=probe,
                              heldout=heldout, compiler=compiler)
    sync(device)
    if compiler.failed:
        failed.setdefault(str(cfg.compile), compiler.failed)
    return time.perf_counter() - t0, list(curve)


def measure(guide, data, cfg, device, pairs: int) -> dict:
    guide.to(device)
    acts = GuideActivations.compute(guide, data.train.x, data_key=data.fingerprint, progress=False,
                                    device=device).on(device)
    configs = {str(m): dataclasses.replace(cfg, compile=m) for m in MODES}
    first, curves, failed = {}, {}, {}
    for name, c in configs.items():
        torch._dynamo.reset()  # each mode compiles from nothing: its first stage pays the whole compile
        first[name], curves[name] = stage(guide, data, acts, c, device, failed)
    steady, frames = {name: [] for name in configs}, _frames()
    for _ in range(pairs):
        for name, c in configs.items():
            steady[name].append(stage(guide, data, acts, c, device, failed)[0])
    base = curves[str(False)]
    return {"steps": cfg.steps_per_stage, "batch_size": min(cfg.batch_size, len(data.train)),
            "first_s": first, "steady_s": steady, "frames_compiled_in_steady_rounds": _frames() - frames,
            "curve_rel_diff": {n: max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(c, base)) if c else None
                               for n, c in curves.items()},
            "compile_failed": failed}


def _frames() -> int:
    """Frames dynamo has compiled in this process (a later stage's new target should reuse them)."""
    from torch._dynamo.utils import counters

    return int(counters["frames"]["ok"])


def table(runs: dict, meta: dict) -> str:
    lines = [f"One alignment stage on `{meta['device']}`, `convert.compile` off, \"default\" and \"reduce-overhead\" "
             "(CUDA graphs): steady steps/s (median of the interleaved rounds), the first stage's seconds (compile "
             "included), and the loss curve's largest relative difference from the uncompiled stage's.", "",
             "| case | steps | batch | mode | steps/s | ÷ off | first stage s | curve rel. diff |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        off = r["steps"] / statistics.median(r["steady_s"]["False"])
        for mode in r["steady_s"]:
            rate = r["steps"] / statistics.median(r["steady_s"][mode])
            fell = " (fell back to eager)" if mode in r.get("compile_failed", {}) else ""
            lines.append(f"| {name} | {r['steps']} | {r['batch_size']} | {'off' if mode == 'False' else mode}{fell} | "
                         f"{rate:,.0f} | {rate / off:.2f}× | {r['first_s'][mode]:.1f} | "
                         f"{r['curve_rel_diff'][mode]:.1e} |")
        lines += [f"\n{name}, compile={mode} fell back to eager: {why}"
                  for mode, why in r.get("compile_failed", {}).items()]
    return "\n".join(lines) + "\n\n" + provenance(meta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=500, help="steps a stage (fixed length)")
    ap.add_argument("--pairs", type=int, default=3, help="interleaved rounds of the three modes")
    ap.add_argument("--out", default="cuda_graphs")
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    torch._inductor.config.fx_graph_cache = False  # every mode's first stage compiles cold, as a new machine's
    meta, runs = run_meta(device=args.device), {}
    for name, guide, data, cfg in cases(args.steps):
        runs[name] = measure(guide, data, cfg, args.device, args.pairs)
        print(name, json.dumps(runs[name]), flush=True)
        (RESULTS / f"{args.out}.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    publish(args.out, table(runs, meta))


if __name__ == "__main__":
    main()
