"""Science benchmark: a tiny timm ViT on scikit-learn digits -> token-wise MLPs (MLP-Mixer blocks), NoT vs scratch.

Setting (the guide and conversion of ``studies/digits_vit_to_mlp.toml``, fixed before running):
* data: ``load_data("digits")`` (8x8 images; 1,437 train incl. validation / 360 test);
* guide: timm ``vit_tiny_patch16_224`` built with img_size 8, patch 2 (16 tokens + a class token), width 32,
  3 blocks, 2 heads; trained once (seed 0) for up to 80 epochs, lr 3e-3;
* target: every transformer block -> ``tokenwise_mlp`` with token mixing (an MLP across the 17 tokens, hidden
  64, then a per-token channel MLP, hidden 64; residual), the guide's patch embedding kept, a new linear head on
  the flattened tokens (``head = "linear"``; a first run kept the guide's head behind a flattened 544 x 544
  bridge, 296K parameters, 8x the guide: its results are kept in ``vit_digits_to_mlp_head_guide.{json,md}``);
* NoT: the default recipe (``ConvertConfig()``: progressive CKA, stages stopped on held-out alignment, at most
  4,000 steps a part, then NoT's fine-tuning at lr 1e-3) at batch 128; scratch: the same network
  re-initialised, trained by scratch's own rule (``SCRATCH_FIT``) with NoT's alignment steps on top.
  Seeds 0 1 2 for the target.

Results: benchmarks/results/vit_digits_to_mlp.{json,md} and the docs block ``bench:vit_digits_to_mlp``. The run of
2026-11-23 with the previous recipe (300 fixed steps a part, both methods fine-tuned at lr 3e-3 for at most 40
epochs) is kept as ``vit_digits_to_mlp_fixed300.{json,md}``.
Resumable (finished runs are kept and skipped).

    python benchmarks/vit_digits_to_mlp.py          # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ResultStore, claim, median, provenance, publish, run_meta  # noqa: E402

from nas_theseus.convert import Candidate, ConvertConfig, convert, train_from_scratch  # noqa: E402
from nas_theseus.data import load_data  # noqa: E402
from nas_theseus.guides import load_guide  # noqa: E402
from nas_theseus.targets import BlockSpec  # noqa: E402
from nas_theseus.training import evaluate  # noqa: E402

GUIDE = dict(img_size=8, patch_size=2, embed_dim=32, depth=3, num_heads=2)
GUIDE_FIT = dict(max_epochs=80, patience=20, lr=3e-3)
BLOCK = BlockSpec.of("tokenwise_mlp", hidden=64, token_mixing=True, token_hidden=64)


def run(method: str, seed: int, guide, data, not_steps: int | None = None) -> dict:
    cand = Candidate((BLOCK,) * GUIDE["depth"], head="linear")
    cfg = ConvertConfig(batch_size=128, seed=seed)
    if method == "scratch":
        r = train_from_scratch(guide, cand, data, cfg, budget=not_steps)
    else:
        r = convert(guide, cand, data, cfg)
    return {"val_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy, "wall_s": r.wall_s,
            "params": sum(p.numel() for p in r.model.parameters()),
            "align_steps": sum(s.steps for s in getattr(r, "stages", ()))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "vit_digits_to_mlp.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    store = ResultStore(Path(args.out))
    meta = run_meta()
    data = load_data("digits")
    guide = load_guide("timm:vit_tiny_patch16_224", data, fit=GUIDE_FIT, **GUIDE)
    if store.get("guide") is None:
        store.put("guide", {"test_accuracy": evaluate(guide.module, data.test)[0],
                            "params": sum(p.numel() for p in guide.module.parameters())}, meta)
    for s in args.seeds:
        for method in ("not", "scratch"):  # NoT first: scratch gets its alignment steps
            key = f"s{s}-{method}"
            if store.get(key) is None:
                print(f"== {key}", flush=True)
                store.put(key, run(method, s, guide, data, store.get(f"s{s}-not")["align_steps"]
                                   if method == "scratch" else None), meta)
            print(f"   {key}: test accuracy {store.get(key)['test_accuracy']:.4f}", flush=True)

    def get(method, field):
        return [store.get(f"s{s}-{method}")[field] for s in args.seeds]
    g = store.get("guide")["test_accuracy"]
    sc, nt = median(get("scratch", "test_accuracy")), median(get("not", "test_accuracy"))
    per_seed = ", ".join(f"{100 * (n - s):+.1f}" for n, s in zip(get("not", "test_accuracy"),
                                                                  get("scratch", "test_accuracy")))
    text = (f"scikit-learn digits (8x8), test accuracy in %, median over target seeds {args.seeds}; guide: timm ViT "
            f"(3 blocks, width 32); target: 3 token-mixing MLP blocks ({get('not', 'params')[0]:,} parameters "
            f"with the kept patch embedding and a linear head; guide {store.get('guide')['params']:,}). "
            f"NoT: the default recipe (plateau-stopped stages, at most 4,000 steps a part; fine-tuning at lr "
            f"1e-3), batch 128, {median(get('not', 'align_steps')):.0f} alignment steps (median); "
            f"scratch: its own rule with those steps on top.\n\n"
            f"| guide | scratch | NoT | NoT − scratch, per seed (points) | s / conversion | s / scratch run |\n"
            f"|---|---|---|---|---|---|\n"
            f"| {100 * g:.1f} | {100 * sc:.1f} | {100 * nt:.1f} | {per_seed} | {median(get('not', 'wall_s')):.0f} | "
            f"{median(get('scratch', 'wall_s')):.0f} |\n\n"
            + claim(f"NoT above scratch on the median ({100 * nt:.1f} vs {100 * sc:.1f})", nt > sc) + "\n"
            + claim(f"NoT no more than 1 point below the guide ({100 * nt:.1f} vs {100 * g:.1f})",
                    nt >= g - 0.01) + "\n"
            + "\n" + provenance(meta))
    publish("vit_digits_to_mlp", text)


if __name__ == "__main__":
    main()
