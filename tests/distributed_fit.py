"""Guide training and the KD baseline, for tests/test_distributed.py: run in one process, and by each rank under
torchrun (``python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_fit.py OUT``),
where every rank saves what it saw to ``OUT/rank{r}.pt``."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from nas_theseus.convert import Candidate, ConvertConfig, train_distilled
from nas_theseus.data import load_mnist1d
from nas_theseus.guides import load_guide
from nas_theseus.targets import BlockSpec
from nas_theseus.training import FitConfig, fit_classifier
from nas_theseus.utils.distributed import init_from_env


def fits() -> dict:
    """The same two trainings in every process: a random built-in guide trained for two epochs (its last batch
    uneven: 577 rows, 77 last), then an MLP distilled from it (function matching with mixup, two epochs)."""
    init_from_env(torch.device("cpu"))  # as a study does (build_context); nothing in one process
    torch.manual_seed(0)
    data = load_mnist1d(num_samples=800)
    guide = load_guide("builtin:mnist1d_cnn", data, weights="random", seed=1)
    guide.module.requires_grad_(True)  # a loaded guide is frozen; trained here as a study trains one
    torch.manual_seed(2)
    guide_fit = fit_classifier(guide.module, data, FitConfig(max_epochs=2, patience=2, batch_size=100, lr=1e-3),
                               seed=2, device="cpu", progress=False)
    guide.module.requires_grad_(False).eval()
    candidate = Candidate((BlockSpec.of("mlp", width=32),) * 3)
    kd = train_distilled(guide, candidate, data, ConvertConfig(seed=3), device="cpu", progress=False,
                         fit=FitConfig(max_epochs=2, patience=2, batch_size=100, mixup=0.4))
    return {"guide_loss": guide_fit.train_loss, "kd_loss": kd.fit.train_loss,
            "guide_state": {k: v.clone() for k, v in guide.module.state_dict().items()},
            "kd_state": {k: v.clone() for k, v in kd.model.state_dict().items()}}


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    torch.save(fits(), out / f"rank{torch.distributed.get_rank()}.pt")
