"""Science benchmark: what augmentation changes on real images, NoT vs scratch vs KD (not a test).

Setting (fixed before running):
* data: scikit-learn's digits (1,797 real 8x8 scans), written by the benchmark as 16-px grey PNGs (Pillow's
  bicubic upsampling) into a temporary folder ``<digit>/<i>.png`` and read with ``load_data("imagefolder",
  size=16, channels=1)``: 70 % train, 10 % validation, 20 % test (stratified, split seed 0), ``augment``
  ``none``, ``standard`` (a random 16-px crop of the image padded by 2 px, and a horizontal flip: the
  toolkit's default for images, flips included, although a flipped digit is not always the same digit) or
  ``crop`` (the same crop, no flip: added after the first run, whose ``standard`` arm lost accuracy);
* guide: ``studies/guides/small_cnn.py`` (width 16, 1 channel; three conv stages, 28K parameters) trained on
  that data (augmented when augment is on) with the imagefolder study's recipe (up to 60 epochs, patience 10,
  lr 1e-3, weight decay 0.05, batch 128), seed 0;
* target: each stage -> an MLP of width 256 (the guide's pooling head kept), the same for the three methods;
* NoT: progressive CKA, up to 600 steps per stage (the plateau rule), batch 128, then fine-tuning (the
  default rule); scratch: the same network from random weights, trained with scratch's rule plus the alignment
  budget; KD: function-matching distillation from the guide, the same budget. Augmentation reaches the guide's
  training, the alignment stages (the guide streamed on the augmented batches), fine-tuning and both baselines.
* seeds 0 1 2 of the target; the medians are reported, test accuracy; nothing was chosen on the test split.

Results: benchmarks/results/digits_augment.{json,md} and the docs block ``bench:digits_augment``. Resumable
(finished runs are kept and skipped).

    python benchmarks/digits_augment.py          # ~15 min on 2 cores
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    RESULTS,
    ROOT,
    ResultStore,
    claim,
    median,
    provenance,
    publish,
    run_meta,
)

from nas_theseus.convert import Candidate, ConvertConfig, convert, train_distilled, train_from_scratch  # noqa: E402
from nas_theseus.data import load_data  # noqa: E402
from nas_theseus.guides import load_guide  # noqa: E402
from nas_theseus.targets import BlockSpec  # noqa: E402
from nas_theseus.training import evaluate  # noqa: E402

AUGMENTS = ("none", "standard", "crop")
METHODS = ("not", "scratch", "kd")
GUIDE_FIT = dict(max_epochs=60, patience=10, lr=1e-3, weight_decay=0.05, batch_size=128)


def write_digits(root: Path) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (img, label) in enumerate(zip(digits.images, digits.target)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        pixels = np.clip(img * 16, 0, 255).astype(np.uint8)  # 0..16 -> 0..255
        Image.fromarray(pixels).resize((16, 16), Image.Resampling.BICUBIC).save(root / str(label) / f"{i}.png")


def run(method: str, seed: int, guide, data) -> dict:
    cand = Candidate((BlockSpec.of("mlp", width=256),) * 3)
    cfg = ConvertConfig(steps_per_stage=600, batch_size=128, seed=seed)
    if method == "not":
        r = convert(guide, cand, data, cfg, progress=False)
    elif method == "scratch":
        r = train_from_scratch(guide, cand, data, cfg, progress=False)
    else:
        r = train_distilled(guide, cand, data, cfg, progress=False)
    return {"val_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy, "wall_s": r.wall_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "digits_augment.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("NAS_THESEUS_PROGRESS", "0")
    store = ResultStore(Path(args.out))
    meta = run_meta()
    with tempfile.TemporaryDirectory(prefix="nas-theseus-digits-") as tmp:
        write_digits(Path(tmp) / "digits")
        for augment in AUGMENTS:
            data = load_data("imagefolder", root=str(Path(tmp) / "digits"), size=16, channels=1, augment=augment)
            guide = load_guide(f"torch:{ROOT / 'studies/guides/small_cnn.py'}:small_cnn", data,
                               parts=["stage1", "stage2", "stage3"], fit=GUIDE_FIT, progress=False, channels=1,
                               width=16)
            if store.get(f"{augment}-guide") is None:
                store.put(f"{augment}-guide", {"test_accuracy": evaluate(guide.module, data.test)[0],
                                               "val_accuracy": evaluate(guide.module, data.val)[0],
                                               "rows": [len(data.train), len(data.val), len(data.test)],
                                               "params": sum(p.numel() for p in guide.module.parameters())},
                          meta)
            for seed in args.seeds:
                for method in METHODS:
                    key = f"{augment}-s{seed}-{method}"
                    if store.get(key) is None:
                        print(f"== {key}", flush=True)
                        store.put(key, run(method, seed, guide, data), meta)
                    print(f"   {key}: test accuracy {store.get(key)['test_accuracy']:.4f}", flush=True)
    publish("digits_augment", report(store, args.seeds, meta))


def report(store: ResultStore, seeds: list[int], meta: dict) -> str:
    def med(augment, method, field="test_accuracy"):
        if method == "guide":
            return store.get(f"{augment}-guide")[field]
        return median([store.get(f"{augment}-s{s}-{method}")[field] for s in seeds])

    def commits(augment):
        return ", ".join(sorted({str(r.get("commit")) for key, r in store.records.items()
                                 if key.startswith(f"{augment}-")}))

    rows = [f"| {a} | {100 * med(a, 'guide'):.1f} | {100 * med(a, 'not'):.1f} | {100 * med(a, 'scratch'):.1f} | "
            f"{100 * med(a, 'kd'):.1f} | {med(a, 'not', 'wall_s'):.0f} | {commits(a)} |" for a in AUGMENTS]
    claims = [claim(f"{a} raises {name}'s test accuracy ({100 * med('none', m):.1f} -> "
                    f"{100 * med(a, m):.1f})", med(a, m) > med("none", m))
              for a in AUGMENTS[1:]
              for m, name in (("guide", "the guide"), ("not", "NoT"), ("scratch", "scratch"), ("kd", "KD"))]
    claims += [claim(f"with augment = {a}, NoT above scratch ({100 * med(a, 'not'):.1f} vs "
                     f"{100 * med(a, 'scratch'):.1f}) and KD ({100 * med(a, 'kd'):.1f})",
                     med(a, "not") > max(med(a, "scratch"), med(a, "kd"))) for a in AUGMENTS]
    guide = store.get("none-guide")
    return (f"scikit-learn digits as a folder of 16-px PNGs ({guide['rows'][0]:,} train / {guide['rows'][1]} "
            f"validation / {guide['rows'][2]} test), a small CNN guide (3 stages, width 16, {guide['params']:,} "
            "parameters) -> 3 MLP(256) stages; test accuracy in %, the targets' median over seeds "
            f"{seeds} (the guide: one run, seed 0).\n\n"
            "| augment | guide | NoT | scratch | KD | s / conversion | commit |\n|---|---|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n\n" + "\n".join(claims) + "\n\n" + provenance(meta))


if __name__ == "__main__":
    main()
