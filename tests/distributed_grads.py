"""One alignment step's loss and gradients, for tests/test_distributed.py: called in one process, and by each
rank under torchrun (``python -m torch.distributed.run --standalone --nproc-per-node 2
tests/distributed_grads.py OUT``), where rank 0 saves every loss's result to ``OUT/grads.pt``."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from nas_theseus.align import make_alignment
from nas_theseus.utils.distributed import gather_rows, init_from_env, shard, sync_grads

ALIGNMENTS = ("cka", "cka_unbiased", "dmnn", "mse")


def step(name: str, *, gather: bool = True) -> dict:
    """A target (Linear-ReLU-Linear) and the loss ``name`` on a batch of 32 rows: this rank's shard through the
    target, the loss over the gathered batch (``gather=False``: over the shard alone, the mistake the gather
    prevents), the target's gradients summed over ranks (the loss's own parameters, MSE's bridge, see the
    gathered batch: their gradient is whole on every rank)."""
    torch.manual_seed(0)
    target, loss_fn = nn.Sequential(nn.Linear(20, 12), nn.ReLU(), nn.Linear(12, 8)), make_alignment(name, (8,), (6,))
    x, a = torch.randn(32, 20), torch.randn(32, 6)
    out, a = target(shard(x)), shard(a)
    loss = loss_fn(gather_rows(out), gather_rows(a)) if gather else loss_fn(out, a)
    loss.backward()
    sync_grads(target.parameters())
    return {"loss": loss.detach(), "grads": [p.grad.clone() for p in [*target.parameters(), *loss_fn.parameters()]]}


if __name__ == "__main__":
    torch.set_num_threads(1)
    init_from_env(torch.device("cpu"))
    seen = {name: step(name) for name in ALIGNMENTS} | {"cka, shard only": step("cka", gather=False)}
    if torch.distributed.get_rank() == 0:
        torch.save(seen, Path(sys.argv[1]) / "grads.pt")
    torch.distributed.destroy_process_group()
