"""Investigation: what the D-MNN formula leaves open, and what helps an untrained guide (not a test).

MNIST-1D CNN guide -> MLP 40→256→256→256→10, NoT progressive with the default recipe, one seed (0); every
variant is chosen by validation accuracy, test accuracy beside it. D-MNN: the neighbourhood size k, the
temperature τ, and more rows per batch (k-NN within 512 rows instead of 256). Untrained guide (random,
frozen): the default, twice the most a stage may train (8,000 steps), and the joint schedule (all parts aligned at
once). Not tried: symmetric neighbourhoods (softening the guide's side too) and a schedule for τ.

    python benchmarks/dmnn_untrained.py          # ~15 min on 2 cores
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ResultStore, provenance, publish, run_meta  # noqa: E402

from nas_theseus.convert import Candidate, ConvertConfig, convert  # noqa: E402
from nas_theseus.data import load_mnist1d  # noqa: E402
from nas_theseus.guides import builtin_guide  # noqa: E402
from nas_theseus.targets import BlockSpec  # noqa: E402
from nas_theseus.training import evaluate  # noqa: E402

VARIANTS = {
    "cka (reference)": ("trained", {}),
    "dmnn k=10 τ=0.05 (default)": ("trained", {"alignment": "dmnn"}),
    "dmnn k=5": ("trained", {"alignment": "dmnn", "dmnn_k": 5}),
    "dmnn k=20": ("trained", {"alignment": "dmnn", "dmnn_k": 20}),
    "dmnn τ=0.02": ("trained", {"alignment": "dmnn", "dmnn_tau": 0.02}),
    "dmnn τ=0.1": ("trained", {"alignment": "dmnn", "dmnn_tau": 0.1}),
    "dmnn 512 rows per batch": ("trained", {"alignment": "dmnn", "batch_size": 512}),
    "untrained guide (default)": ("random", {}),
    "untrained guide, at most 8000 steps a stage": ("random", {"steps_per_stage": 8000}),
    "untrained guide, joint schedule": ("random", {"schedule": "joint"}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    meta = run_meta()
    store = ResultStore(RESULTS / "dmnn_untrained.json")
    data = load_mnist1d()
    guides = {"trained": builtin_guide("mnist1d_cnn", data, seed=args.seed, progress=False),
              "random": builtin_guide("mnist1d_cnn", data, seed=args.seed, weights="random")}
    cand = Candidate((BlockSpec.of("mlp", width=256),) * 3)
    ckpt = Path(__file__).resolve().parent / "out" / "ckpt_mnist1d"
    for name, (kind, kw) in VARIANTS.items():
        if store.get(name) is None:
            print(f"== {name}", flush=True)
            r = convert(guides[kind], cand, data, ConvertConfig(seed=args.seed, **kw), checkpoint_dir=ckpt,
                        progress=False)
            store.put(name, {"val_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy,
                             "steps": [s.steps for s in r.stages], "alignment": r.stages[-1].alignment,
                             "wall_s": r.wall_s}, meta)
    guide_acc = evaluate(guides["trained"].module, data.test)[0]
    rows = ["| variant | val % | test % | steps per stage | held-out CKA at the last stage |", "|---|---|---|---|---|"]
    for name in VARIANTS:
        r = store.get(name)
        rows.append(f"| {name} | {100 * r['val_accuracy']:.1f} | {100 * r['test_accuracy']:.1f} | "
                    f"{' · '.join(str(s) for s in r['steps'])} | "
                    f"{' · '.join(f'{v:.4f}' for v in r['alignment'].values())} |")
    text = (f"MNIST-1D, W = 256, seed {args.seed}, guide test accuracy {100 * guide_acc:.1f} %; NoT progressive with "
            f"the default recipe unless the row says otherwise.\n\n" + "\n".join(rows) + "\n\n" + provenance(meta))
    publish("dmnn_untrained", text)


if __name__ == "__main__":
    main()
