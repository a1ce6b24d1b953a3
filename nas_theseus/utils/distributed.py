"""Data parallelism across processes (``torchrun``; the gloo backend on CPUs, NCCL on GPUs).

Every rank holds the same networks and draws the same global batches (the same seeded permutation); each
keeps its own shard of rows (:func:`shard`), runs its forward on them, and:

- an alignment loss (CKA, D-MNN) is computed over the **global** batch: :func:`gather_rows` concatenates the
  shards of every rank in rank order, the local shard keeping its gradient, so every rank computes the
  single-process loss value and backpropagates its own rows' share of its gradient;
- a loss that is a mean over rows (the task loss) is each rank's sum over its rows divided by the global batch;

then :func:`sync_grads` sums the gradients over ranks (one all-reduce), which makes them the single-process
gradients at the same global batch, and every rank takes the same optimizer step: the weights stay equal on
every rank without being broadcast. Batch norm's running statistics are rank 0's (:func:`sync_buffers`), so
every evaluation and every decision made from one (a plateau, an early stop) is the same on every rank.
Outside ``torch.distributed`` (one process) every function is the identity.
"""

from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist

from ..errors import UserError


def world() -> tuple[int, int]:
    """(rank, number of ranks); (0, 1) outside ``torch.distributed``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process writes the checkpoints: rank 0, or the only process."""
    return world()[0] == 0


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher) as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group ``torchrun`` describes in the environment (once), NCCL for CUDA, else gloo;
    returns the device this rank uses (``cuda:LOCAL_RANK`` for ``cuda``). A gloo group joined here is destroyed
    at exit (:func:`leave`)."""
    if not launched():
        return device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
            atexit.register(leave)
    return device


def leave(group=None) -> None:
    """Destroy a gloo process group (None: every group) while the interpreter is still whole; registered with
    ``atexit`` for each gloo group this package makes, so it runs before teardown (nothing if the groups are
    already gone). Left to teardown, gloo's worker threads can outlive the Python objects they hold, and the
    process aborts after its work is done ("terminate called without an active exception", SIGABRT on every
    rank: CI, a resumed conversion, torch 2.14). NCCL's groups are left to torch's own teardown: destroying one
    first waits for its pending collectives (pytorch/pytorch#141510), so a rank exiting on an error could wait
    on peers that never join them, instead of exiting so that torchrun stops the others."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group(group)


def shard(x: torch.Tensor) -> torch.Tensor:
    """This rank's rows of a global batch: contiguous, rank-ordered, as even as the rows allow
    (``torch.tensor_split``)."""
    rank, n = world()
    if n == 1:
        return x
    return torch.tensor_split(x, n)[rank]


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` concatenated in rank order; this rank's rows keep their autograd history, the
    others' are constants. The shards must have the same row count (a stage's batch divides among the ranks)."""
    rank, n = world()
    if n == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(n)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x
    return torch.cat(parts)


def sync_grads(params, *, uniform: bool = True) -> None:
    """Sum the gradients of ``params`` over ranks (one all-reduce of them flattened together).

    ``uniform``: every rank backpropagated through the same modules (a stage, a batch that gives every rank
    rows), so the same parameters have gradients everywhere and nothing but the gradients is exchanged.
    Otherwise (a rank with no rows of a short last batch) which parameters have a gradient on some rank is
    exchanged too, and read by the host once: a parameter with none on any rank keeps none (the optimizer
    skips it, as one process would)."""
    if world()[1] == 1:
        return
    params = list(params)
    if uniform:
        params = [p for p in params if p.grad is not None]
    if not params:
        return
    grads = [p.grad.detach().flatten() if p.grad is not None else torch.zeros(p.numel(), device=p.device,
                                                                               dtype=p.dtype) for p in params]
    flags = [] if uniform else [torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype,
                                             device=grads[0].device)]
    flat = torch.cat([*grads, *flags])
    dist.all_reduce(flat)
    has = [True] * len(params) if uniform else (flat[-len(params):] > 0).tolist()
    offset = 0
    for p, g, any_rank in zip(params, grads, has):
        if any_rank:
            p.grad = flat[offset:offset + g.numel()].view_as(p).to(p.dtype, copy=True)
        offset += g.numel()


def sync_buffers(modules) -> None:
    """Rank 0's floating-point buffers (batch norm's running statistics) copied to every rank (one broadcast),
    as ``DistributedDataParallel`` does before each forward: each rank normalises its shard by the shard's own
    statistics in training, and the running ones would drift apart, and with them every evaluation, refit
    and stopping decision made from them."""
    if world()[1] == 1:
        return
    buffers = [b for m in modules for b in m.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.detach().flatten() for b in buffers])
    dist.broadcast(flat, src=0)
    offset = 0
    for b in buffers:
        b.copy_(flat[offset:offset + b.numel()].view_as(b))
        offset += b.numel()


def from_main(read, group=None):
    """``read()`` on rank 0, its result handed to every rank (pickled; for small objects such as a stage's
    checkpoint; over ``group``, default the whole world); ``read()`` itself in one process."""
    if world()[1] == 1:
        return read()
    box = [read() if is_main() else None]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


def all_sum(x: torch.Tensor) -> torch.Tensor:
    """``x`` summed over ranks (a copy; ``x`` itself in one process)."""
    if world()[1] == 1:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x


def check_divisible(batch_size: int, what: str) -> None:
    """A batch whose rows every rank must hold in equal numbers (a gathered loss) divides among the ranks."""
    n = world()[1]
    if batch_size % n:
        raise UserError(f"{what}: the batch of {batch_size} rows does not divide among {n} processes; choose a "
                        f"multiple of {n}")
