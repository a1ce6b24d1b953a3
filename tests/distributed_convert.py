"""One small conversion, for tests/test_distributed.py: run in one process, and by each rank under torchrun
(``python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_convert.py OUT [CKPT]
[ACTIVATIONS] [BATCH] [NORM]``), where every rank saves what it saw to ``OUT/rank{r}.pt``."""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path

import torch

from nas_theseus.convert import Candidate, ConvertConfig, convert
from nas_theseus.data import load_mnist1d
from nas_theseus.guides import load_guide
from nas_theseus.targets import BlockSpec
from nas_theseus.training import FitConfig

GLOBAL_BATCH = 32


def conversion(checkpoint_dir=None, activations: str = "cache", batch_size: int = GLOBAL_BATCH,
               norm: str | None = None):
    """The same conversion in every process: a random guide, MLP targets (``norm`` None: no batch norm, whose
    batch statistics are each rank's own shard's), three progressive stages of 15 steps, two epochs of
    fine-tuning with mixup and distillation (mixup partners come from the whole batch), the last fine-tuning
    batch uneven (577 rows: 77 last, 39 and 38 on two ranks)."""
    torch.manual_seed(0)
    data = load_mnist1d(num_samples=800)
    guide = load_guide("builtin:mnist1d_cnn", data, weights="random", seed=1)
    candidate = Candidate((BlockSpec.of("mlp", width=32, norm=norm),) * 3, order=(1, 0, 2))
    config = ConvertConfig(steps_per_stage=15, batch_size=batch_size, probe_size=64, refit_every=5,
                           stage_stop="fixed", activations=activations, seed=3,
                           finetune=FitConfig(max_epochs=2, patience=2, batch_size=100, distill=0.5, mixup=0.4))
    return convert(guide, candidate, data, config, checkpoint_dir=checkpoint_dir, device="cpu", progress=False)


def seen(result) -> dict:
    """What a run's ranks must agree on (and match the single process in)."""
    return {"curves": [s.loss_curve for s in result.stages], "resumed": [s.resumed for s in result.stages],
            "finetune_loss": result.finetune.train_loss, "val_accuracy": result.val_accuracy,
            "state": {k: v.clone() for k, v in result.model.state_dict().items()}}


def record_exit(out: Path) -> None:
    """Whether this rank still held a process group as it exited: registered before the conversion joins one,
    this runs after every exit handler registered later (the last registered runs first)."""
    (out / f"rank{os.environ['RANK']}.exit").write_text(str(torch.distributed.is_initialized()))


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    atexit.register(record_exit, out)
    checkpoint_dir = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
    activations = sys.argv[3] if len(sys.argv) > 3 else "cache"
    batch_size = int(sys.argv[4]) if len(sys.argv) > 4 else GLOBAL_BATCH
    norm = sys.argv[5] if len(sys.argv) > 5 else None
    result = conversion(checkpoint_dir, activations, batch_size, norm)
    torch.save(seen(result), out / f"rank{torch.distributed.get_rank()}.pt")
