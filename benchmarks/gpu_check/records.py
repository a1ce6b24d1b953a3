"""The GPU check's records: one JSON file (OUT/gpu_check.json) written as each step starts and ends and once
the harness has its exit status, and the summary table (OUT/gpu_check.md). No torch import, so the harness's
bookkeeping between steps costs no GPU time."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from .steps import NAMES

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "results" / "gpu_check"


def results_path(out: Path) -> Path:
    return out / "gpu_check.json"


def load(out: Path) -> dict:
    path = results_path(out)
    return json.loads(path.read_text()) if path.exists() else {"meta": {}, "steps": {}}


def record(out: Path, step: str, values: dict, meta: dict | None = None) -> None:
    """Merge ``values`` into ``step``'s record (and ``meta`` into the run's), written whole and atomically."""
    results = load(out)
    results["steps"].setdefault(step, {}).update(values)
    if meta:
        results["meta"].update(meta)
    out.mkdir(parents=True, exist_ok=True)
    tmp = results_path(out).with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    os.replace(tmp, results_path(out))


def mark(out: Path, step: str, rc: int, seconds: float) -> None:
    """After a step's process ended: its exit status and wall time, and a status where it wrote none (it ran
    out of time, or crashed before its end)."""
    r = load(out)["steps"].get(step, {})
    if "ok" in r:
        status = "ok" if r["ok"] and rc == 0 else "FAILED"
    else:
        status = "timed out" if rc in (124, 137) else f"crashed (rc {rc})"
    record(out, step, {"status": status, "rc": rc, "seconds": round(seconds, 1)})


def summary(out: Path) -> str:
    """The table of every step (markdown), also written to OUT/gpu_check.md."""
    results = load(out)
    m = results["meta"]
    lines = [f"GPU check: {m.get('gpu', 'no GPU (dry run on the CPU)')}, torch {m.get('torch', '?')}, CUDA "
             f"{m.get('cuda', '-')}, commit {m.get('commit', '?')}, {m.get('date', '?')}; {m.get('machine', '')}",
             "", "| step | status | s | figures |", "|---|---|---|---|"]
    for step in NAMES:
        r = results["steps"].get(step)
        if r is None:
            lines.append(f"| {step} | not run | | |")
            continue
        lines.append(f"| {step} | {r.get('status', '?')} | {r.get('seconds', '')} | {_figures(step, r)} |")
    text = "\n".join(lines) + "\n"
    (out / "gpu_check.md").write_text(text)
    return text


def _f(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _figures(step: str, r: dict) -> str:
    """The step's headline figures in a few words (empty when it wrote none)."""
    if "ok" not in r:
        return ""
    if r.get("reason"):
        return r["reason"]
    try:
        if step == "tests":
            return r.get("summary", "")
        if step == "readme":
            versus = (f"; the 2-core CPU record ÷ this: {_f(r['cpu_over_device'], 1)}× the command, "
                      f"{_f(r['cpu_over_device_per_trial'], 1)}× a trial" if "cpu_over_device" in r else "")
            return (f"{r['wall_s']} s in all (guide {r['guide_s']} s, {len(r['trials'])} trials, "
                    f"{r['per_trial_s']} s a trial); front {len(r['front'])} points{versus}")
        if step == "cka":
            worst = r["worst_rel_err_of_1_minus_cka"]
            return ", ".join(f"{p} {v:.1e}" for p, v in worst.items()) + " (worst relative error of 1 − CKA)"
        if step == "stage":
            return (f"engine ÷ bare: TF32 {_f(r['engine_over_bare_tf32'])}, bf16 {_f(r['engine_over_bare_bf16'])}; "
                    f"engine bf16 ÷ best bare {_f(r['engine_bf16_over_best_bare'])}; compile "
                    f"{_f(r['compile_s'][0], 1)} s ({r['compile_backend']})")
        if step == "e2e":
            fp, bf = r["runs"]["fp32"], r["runs"]["bf16"]
            return (f"guide {100 * r['guide_test_accuracy']:.1f} %; fp32 {_f(fp['wall_s'], 1)} s, "
                    f"{100 * fp['test_accuracy']:.1f} %; bf16 {_f(bf['wall_s'], 1)} s, "
                    f"{100 * bf['test_accuracy']:.1f} %")
        if step == "workers":
            return ", ".join(f"{n} worker(s): {v['aggregate_samples_per_s']:.0f} samples/s"
                             for n, v in r["results"].items())
        if step == "memory":
            return f"{r['unit']} after each conversion: {r['held_after_each']}"
        if step == "stream":
            util = r.get("gpu_utilisation_pct")
            line = (f"{r['engine_images_per_s']:.0f} images/s ({r['workers']} workers), engine ÷ bare "
                    f"{_f(r['engine_over_bare'])}, GPU utilisation {_f(util, 0)} %, channels_last ÷ default "
                    f"{_f(r.get('channels_last_over_default'))}")
            for name, what in (("packed", "packed"), ("jpeg_device", "JPEG on the GPU"),
                               ("jpeg_pillow", "JPEG by Pillow")):
                if f"{name}_images_per_s" in r:
                    line += (f"; {what} {r[f'{name}_images_per_s']:.0f} images/s, GPU "
                             f"{_f(r.get(f'{name}_gpu_pct'), 0)} %")
            return line
        if step == "ddp":
            one, two = r["runs"]["1"], r["runs"]["2"]
            return (f"1 GPU {one['samples_per_s']:.0f} samples/s, 2 GPUs {two['samples_per_s']:.0f} "
                    f"({_f(r['two_over_one'])}×)")
        if step == "study":
            return (f"{r['trials']} trials, median {_f(statistics.median(r['trial_wall_s']), 1)} s; one on the "
                    f"CPU ÷ on the device: {_f(r.get('cpu_over_device_per_trial'), 1)}")
    except (KeyError, TypeError, ValueError, IndexError, statistics.StatisticsError) as e:
        return f"({type(e).__name__}: {e})"
    return ""
