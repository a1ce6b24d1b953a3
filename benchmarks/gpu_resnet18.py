"""GPU benchmark: a CIFAR-10-sized timm ResNet-18 guide -> MLPs on synthetic data, in float32 and in bf16
autocast (not a test; needs a CUDA GPU; run by benchmarks/gpu_check.sh).

The data are learnable, not noise: 10 random class prototypes (3×32×32) plus per-sample noise, 20,000 train /
2,000 validation / 2,000 test images. The guide trains for a few epochs, then one conversion per precision
(layer1..layer4 -> MLP(512), a linear head, the default plateau-stopped recipe at most 1,000 steps a stage).
Reported per precision: seconds per stage, peak GPU memory, mean GPU utilisation while stages ran (NVML),
test accuracy of the converted network beside the guide's.

    python benchmarks/gpu_resnet18.py --device cuda        # ~3 min on an H100/H200
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, command, machine, provenance, publish, today  # noqa: E402

from nas_theseus.convert import Candidate, ConvertConfig, convert  # noqa: E402
from nas_theseus.data.base import Split, TaskData  # noqa: E402
from nas_theseus.guides import load_guide  # noqa: E402
from nas_theseus.targets import BlockSpec  # noqa: E402
from nas_theseus.training import FitConfig, evaluate  # noqa: E402


def prototypes_data(n_train=20000, n_eval=2000, noise=1.5) -> TaskData:
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(10, 3, 32, 32, generator=g)

    def split(n):
        y = torch.randint(0, 10, (n,), generator=g)
        return Split(protos[y] + noise * torch.randn(n, 3, 32, 32, generator=g), y)

    return TaskData("prototypes32", split(n_train), split(n_eval), split(n_eval), 10)


class Utilisation:
    """Samples NVML's GPU utilisation every 100 ms while active."""

    def __init__(self, device):
        self.device, self.samples, self._stop = device, [], threading.Event()

    def __enter__(self):
        def loop():
            while not self._stop.is_set():
                try:
                    self.samples.append(torch.cuda.utilization(self.device))
                except Exception:  # noqa: BLE001 - no NVML: no figure
                    return
                time.sleep(0.1)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=1000)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_resnet18.py needs a CUDA GPU")
    meta = {"command": command(), "machine": machine(), "date": today()}
    data = prototypes_data()
    guide = load_guide("timm:resnet18", data, device=args.device, progress=False,
                       fit={"max_epochs": 5, "patience": 5, "lr": 1e-3, "batch_size": 256})
    guide_acc = evaluate(guide.module.to(args.device), data.test, device=args.device)[0]
    cand = Candidate((BlockSpec.of("mlp", width=512),) * 4)
    rows, records = [], {}
    for precision in ("fp32", "bf16"):
        half = None if precision == "fp32" else "bf16"
        cfg = ConvertConfig(steps_per_stage=args.steps, batch_size=256, autocast=half,
                            finetune=FitConfig(max_epochs=20, patience=5, lr=1e-3, batch_size=256, autocast=half))
        torch.cuda.reset_peak_memory_stats(args.device)
        with Utilisation(torch.device(args.device)) as util:
            r = convert(guide, cand, data, cfg, device=args.device, progress=False)
        peak = torch.cuda.max_memory_allocated(args.device) / 2**30
        per_stage = [s.wall_s for s in r.stages]
        records[precision] = {"s_per_stage": per_stage, "steps": [s.steps for s in r.stages], "peak_gib": peak,
                              "utilisation_pct": util.mean, "test_accuracy": r.test_accuracy,
                              "heldout_alignment": r.stages[-1].alignment}
        rows.append(f"| {precision} | {sum(per_stage) / len(per_stage):.1f} | "
                    f"{sum(s.steps for s in r.stages) / sum(per_stage):.0f} | {peak:.2f} | {util.mean:.0f} | "
                    f"{100 * r.test_accuracy:.1f} |")
    (RESULTS / "gpu_resnet18.json").write_text(json.dumps({"meta": meta, "guide_test_accuracy": guide_acc,
                                                          "runs": records}, indent=1))
    text = (f"timm ResNet-18 guide (test accuracy {100 * guide_acc:.1f} %) -> 4 MLP(512) parts on 32×32 prototype "
            f"images (20,000 train), at most {args.steps} steps a stage, on {args.device}.\n\n"
            "| precision | s / stage | steps / s | peak GPU memory GiB | GPU utilisation % | test accuracy % |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n" + provenance(meta))
    publish("gpu_resnet18", text)


if __name__ == "__main__":
    main()
