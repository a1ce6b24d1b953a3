"""Science benchmark: MNIST-1D CNN guide -> MLP 40→W→W→W→10, medians over seeds (not a timed test).

Every method gets its own training rule, chosen on **validation** accuracy (median over the seeds) from a
small grid written down here; the table reports the **test** accuracy of the chosen rule:

* NoT (progressive, CKA, the default plateau-stopped stages), fine-tuning rule from
  ``FT_GRID``: lr {3e-4, 1e-3, 3e-3}, and NoT with a distillation term in its fine-tuning (Hinton at 0.9; function
  matching on mixup inputs) at lr 1e-3;
* scratch (the same MLP from random weights, the same budget in optimizer steps), lr from {1e-3, 3e-3, 1e-2};
* knowledge distillation from the guide into the same random MLP, same budget: Hinton (labels + soft logits at
  T = 4, distill {0.5, 0.9}, lr 3e-3) and function matching (the guide's outputs on mixup inputs, patience 100,
  lr {1e-3, 3e-3}); the better entry on validation is "KD";
* with NoT's chosen rule: the other schedules, an untrained (random, frozen) guide, D-MNN instead of CKA;
* the stitching penalty per part boundary of NoT's network, beside its floor (a second guide of the same
  architecture, seed + 100, stitched into the guide at that boundary); steps used per stage; s / conversion.

Results go to benchmarks/results/conversion_mnist1d.{json,md} and the table into docs/benchmarks.md. Runs are
resumable: finished (width, seed, condition) records are kept and skipped.

    python benchmarks/conversion_mnist1d.py                 # W = 256 and 64, seeds 0 1 2 (about 1.5 h, 2 cores)
    python benchmarks/conversion_mnist1d.py --widths 256 --seeds 0
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ResultStore, claim, median, provenance, publish, run_meta  # noqa: E402

from nas_theseus.convert import (  # noqa: E402
    Candidate,
    ConvertConfig,
    convert,
    stitching_penalty,
    train_distilled,
    train_from_scratch,
)
from nas_theseus.convert.baseline import KD_VARIANTS, SCRATCH_FIT  # noqa: E402
from nas_theseus.convert.config import DEFAULT_FINETUNE  # noqa: E402
from nas_theseus.data import load_mnist1d  # noqa: E402
from nas_theseus.guides import builtin_guide  # noqa: E402
from nas_theseus.targets import BlockSpec  # noqa: E402
from nas_theseus.training import evaluate  # noqa: E402

FT_GRID = {"ft3e-4": replace(DEFAULT_FINETUNE, lr=3e-4), "ft1e-3": replace(DEFAULT_FINETUNE, lr=1e-3),
           "ft3e-3": replace(DEFAULT_FINETUNE, lr=3e-3),
           "ft1e-3+kd": replace(DEFAULT_FINETUNE, lr=1e-3, distill=0.9),
           "ft1e-3+fm": replace(DEFAULT_FINETUNE, lr=1e-3, distill=1.0, temperature=1.0, mixup=1.0)}
SCRATCH_GRID = {f"lr{lr:g}": replace(SCRATCH_FIT, lr=lr) for lr in (1e-3, 3e-3, 1e-2)}
KD_GRID = {**{f"hinton{a:g}": replace(KD_VARIANTS["hinton"], distill=a) for a in (0.5, 0.9)},
           **{f"fm-lr{lr:g}": replace(KD_VARIANTS["function_matching"], lr=lr) for lr in (1e-3, 3e-3)}}
SCHEDULES = ("sequential", "independent", "joint")


def conversion_record(r) -> dict:
    return {"test_accuracy": r.test_accuracy, "val_accuracy": r.val_accuracy, "wall_s": r.wall_s,
            "pre_finetune_val_accuracy": r.pre_finetune_val_accuracy, "finetune_epochs": r.finetune.epochs,
            "alignment": r.stages[-1].alignment if r.stages else {},
            "alignment_train": r.stages[-1].alignment_train if r.stages else {},
            "steps": [s.steps for s in r.stages], "stage_wall_s": [s.wall_s for s in r.stages],
            "stopped": [s.stopped for s in r.stages], "config": asdict(r.config)}


def baseline_record(r) -> dict:
    return {"test_accuracy": r.test_accuracy, "val_accuracy": r.val_accuracy, "wall_s": r.wall_s,
            "epochs": r.fit.epochs, "best_epoch": r.fit.best_epoch}


class Bench:
    def __init__(self, store: ResultStore, meta: dict, data, guides: dict, ckpt: Path):
        self.store, self.meta, self.data, self.guides, self.ckpt = store, meta, data, guides, ckpt

    def run(self, key: str, fn, *args, **kwargs) -> dict:
        """The record under ``key``: stored, or ``fn(*args, **kwargs)`` now (then stored)."""
        if self.store.get(key) is None:
            print(f"== {key}", flush=True)
            self.store.put(key, fn(*args, **kwargs), self.meta)
            rec = self.store.get(key)
            print(f"   test {rec['test_accuracy']:.3f} val {rec['val_accuracy']:.3f}", flush=True)
        return self.store.get(key)

    def convert(self, w: int, s: int, guide_kind: str = "trained", **cfg):
        cand = Candidate((BlockSpec.of("mlp", width=w),) * 3)
        return convert(self.guides[(guide_kind, s)], cand, self.data, ConvertConfig(seed=s, **cfg),
                       checkpoint_dir=self.ckpt, progress=False)

    def conversion(self, w: int, s: int, guide_kind: str = "trained", **cfg) -> dict:
        return conversion_record(self.convert(w, s, guide_kind, **cfg))

    def baseline(self, w: int, s: int, method: str, fit, variant: str | None = None) -> dict:
        cand = Candidate((BlockSpec.of("mlp", width=w),) * 3)
        budget = sum(self.store.get(f"W{w}-s{s}-not-ft1e-3")["steps"])  # the alignment steps NoT spent
        common = dict(fit=fit, budget=budget, progress=False)
        if method == "kd":
            r = train_distilled(self.guides[("trained", s)], cand, self.data, ConvertConfig(seed=s), variant=variant,
                                **common)
        else:
            r = train_from_scratch(self.guides[("trained", s)], cand, self.data, ConvertConfig(seed=s), **common)
        return baseline_record(r)

    def stitching(self, w: int, s: int, rule) -> dict:
        r = self.convert(w, s, finetune=rule)
        reports = stitching_penalty(r.model, self.guides[("trained", s)], self.data, seed=s, progress=False,
                                    floor_guide=self.guides[("twin", s)])
        return {"test_accuracy": r.test_accuracy, "val_accuracy": r.val_accuracy,
                "penalty": {x.part: x.penalty for x in reports}, "floor": {x.part: x.floor for x in reports}}


def run_all(b: Bench, widths, seeds) -> None:
    for w in widths:
        for s in seeds:
            for name, ft in FT_GRID.items():
                b.run(f"W{w}-s{s}-not-{name}", b.conversion, w, s, finetune=ft)
            for name, fit in SCRATCH_GRID.items():
                b.run(f"W{w}-s{s}-scratch-{name}", b.baseline, w, s, "scratch", fit)
            for name, fit in KD_GRID.items():
                variant = "function_matching" if name.startswith("fm") else "hinton"
                b.run(f"W{w}-s{s}-kd-{name}", b.baseline, w, s, "kd", fit, variant)
    for w in widths:  # with NoT's rule chosen on validation
        rule = FT_GRID[chosen(b.store, w, seeds, "not", {k: v for k, v in FT_GRID.items() if "+" not in k})]
        for s in seeds:
            for sched in SCHEDULES:
                b.run(f"W{w}-s{s}-sched-{sched}", b.conversion, w, s, schedule=sched, finetune=rule)
            b.run(f"W{w}-s{s}-untrained", b.conversion, w, s, "random", finetune=rule)
            b.run(f"W{w}-s{s}-dmnn", b.conversion, w, s, alignment="dmnn", finetune=rule)
            b.run(f"W{w}-s{s}-stitching", b.stitching, w, s, rule)


def chosen(store: ResultStore, w: int, seeds, method: str, grid: dict) -> str:
    """The grid entry with the best median validation accuracy over the seeds."""
    return max(grid, key=lambda name: median([store.get(f"W{w}-s{s}-{method}-{name}")["val_accuracy"]
                                              for s in seeds]))


def med(store, w, seeds, key, field="test_accuracy"):
    return median([store.get(f"W{w}-s{s}-{key}")[field] for s in seeds if store.get(f"W{w}-s{s}-{key}")])


def summarise(store: ResultStore, widths, seeds) -> str:
    guide = 100 * median([store.get(f"guide-s{s}")["test_accuracy"] for s in seeds])
    head = ("| W | guide | scratch | KD | NoT | NoT + KD fine-tune | sequential | independent | joint | untrained "
            "guide | D-MNN | stitching penalty / floor, conv1 · conv2 · conv3 | steps per stage | s / conversion |")
    rows = [head, "|" + "---|" * 14]
    claims, rules = [], []
    for w in widths:
        not_rule = chosen(store, w, seeds, "not", {k: v for k, v in FT_GRID.items() if "+" not in k})
        not_kd_rule = chosen(store, w, seeds, "not", {k: v for k, v in FT_GRID.items() if "+" in k})
        scratch_rule = chosen(store, w, seeds, "scratch", SCRATCH_GRID)
        kd_rule = chosen(store, w, seeds, "kd", KD_GRID)
        p = {"scratch": med(store, w, seeds, f"scratch-{scratch_rule}"), "kd": med(store, w, seeds, f"kd-{kd_rule}"),
             "not": med(store, w, seeds, f"not-{not_rule}"), "not_kd": med(store, w, seeds, f"not-{not_kd_rule}"),
             **{sched: med(store, w, seeds, f"sched-{sched}") for sched in SCHEDULES},
             "untrained": med(store, w, seeds, "untrained"), "dmnn": med(store, w, seeds, "dmnn")}
        p = {k: 100 * v for k, v in p.items()}
        parts = ("conv1", "conv2", "conv3")
        pen = [100 * median([store.get(f"W{w}-s{s}-stitching")["penalty"][c] for s in seeds]) for c in parts]
        flo = [100 * median([store.get(f"W{w}-s{s}-stitching")["floor"][c] for s in seeds]) for c in parts]
        steps = [median([store.get(f"W{w}-s{s}-not-ft1e-3")["steps"][i] for s in seeds]) for i in range(3)]
        wall = median([sum(store.get(f"W{w}-s{s}-not-ft1e-3")["stage_wall_s"]) for s in seeds])
        rows.append(f"| {w} | {guide:.1f} | {p['scratch']:.1f} | {p['kd']:.1f} | {p['not']:.1f} | {p['not_kd']:.1f} | "
                    + " | ".join(f"{p[sched]:.1f}" for sched in SCHEDULES)
                    + f" | {p['untrained']:.1f} | {p['dmnn']:.1f} | "
                    + " · ".join(f"{a:+.1f} / {b:+.1f}" for a, b in zip(pen, flo))
                    + f" | {' · '.join(f'{x:.0f}' for x in steps)} | {wall:.0f} |")
        rules.append(f"- W={w}: rules chosen on validation: NoT fine-tuning `{not_rule}`, NoT + KD `{not_kd_rule}`, "
                     f"scratch `{scratch_rule}`, KD `{kd_rule}`")
        if w == 256:
            claims.append(claim(f"W=256: NoT within 1.0 point of the guide ({p['not']:.1f} vs {guide:.1f})",
                                p["not"] >= guide - 1.0))
        claims.append(claim(f"W={w}: NoT ≥ KD + 3 points ({p['not']:.1f} vs {p['kd']:.1f})", p["not"] >= p["kd"] + 3))
        claims.append(claim(f"W={w}: NoT ≥ scratch + 15 points ({p['not']:.1f} vs {p['scratch']:.1f})",
                            p["not"] >= p["scratch"] + 15))
        others = ", ".join(f"{sched} {p[sched]:.1f}" for sched in SCHEDULES)
        claims.append(claim(f"W={w}: progressive ({p['not']:.1f}) ≥ {others}",
                            all(p["not"] >= p[sched] for sched in SCHEDULES)))
        claims.append(claim(f"W={w}: untrained guide ≥ scratch + 5 points ({p['untrained']:.1f} vs "
                            f"{p['scratch']:.1f})", p["untrained"] >= p["scratch"] + 5))
        claims.append(claim(f"W={w}: D-MNN within 3 points of CKA ({p['dmnn']:.1f} vs {p['not']:.1f})",
                            abs(p["dmnn"] - p["not"]) <= 3))
        claims.append(claim(f"W={w}: stitching penalty ≤ floor + 1 point at every boundary ("
                            + ", ".join(f"{a:+.1f} vs {b:+.1f}" for a, b in zip(pen, flo)) + ")",
                            all(a <= b + 1 for a, b in zip(pen, flo))))
    grid = ("Grids (selection by median validation accuracy): NoT fine-tuning "
            + ", ".join(f"`{k}`" for k in FT_GRID) + "; scratch " + ", ".join(f"`{k}`" for k in SCRATCH_GRID)
            + "; KD " + ", ".join(f"`{k}`" for k in KD_GRID) + ".")
    return "\n".join(rows) + "\n\n" + "\n".join(rules) + "\n\n" + grid + "\n\n" + "\n".join(claims)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", type=int, nargs="+", default=[256, 64])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "conversion_mnist1d.json"))
    ap.add_argument("--checkpoints", default=str(Path(__file__).resolve().parent / "out" / "ckpt_mnist1d"),
                    help="stage checkpoints, shared by the fine-tuning grid (the stages are trained once)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    store = ResultStore(Path(args.out))
    meta = run_meta()
    data = load_mnist1d()
    guides = {}
    for s in args.seeds:
        guides[("trained", s)] = builtin_guide("mnist1d_cnn", data, seed=s, progress=False)
        guides[("random", s)] = builtin_guide("mnist1d_cnn", data, seed=s, weights="random")
        guides[("twin", s)] = builtin_guide("mnist1d_cnn", data, seed=s + 100, progress=False)
        if store.get(f"guide-s{s}") is None:
            store.put(f"guide-s{s}", {"test_accuracy": evaluate(guides[("trained", s)].module, data.test)[0]}, meta)
    run_all(Bench(store, meta, data, guides, Path(args.checkpoints)), args.widths, args.seeds)
    text = (f"MNIST-1D (4,000 train incl. 400 validation / 1,000 test), test accuracy in %, median over seeds "
            f"{args.seeds}; each method's rule chosen on validation; stitching penalty = guide − stitched accuracy "
            f"in points, floor = the same for a second guide (seed + 100); steps per stage = median steps NoT's "
            f"plateau-stopped stages took (of at most {ConvertConfig().steps_per_stage}).\n\n"
            f"{summarise(store, args.widths, args.seeds)}\n\n{provenance(meta)}")
    publish("conversion_mnist1d", text)


if __name__ == "__main__":
    main()
