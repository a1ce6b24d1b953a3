"""Train and score one block of the library: trained alone in the independent schedule, then scored once by
swapping it alone into the guide (Puzzle's blockwise local distillation and "replace-1-block" score).

A block's score keeps two figures: the guide-with-this-block's validation accuracy, and the KL divergence from the
guide's output distribution to its own on the validation split (mean per sample; Puzzle found KL a better score
than the task loss). Both are stored by content key beside the stage checkpoint, so a block is scored once for
every study with the same guide, data and settings, and a killed build resumes block by block.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from ..convert.alone import train_alone
from ..convert.checkpoints import CheckpointStore
from ..targets import BlockSpec
from ..utils.hashing import stable_hash


@dataclass(frozen=True)
class BlockScore:
    """What the library keeps of one trained block (no weights: those are in its stage checkpoint)."""

    val_accuracy: float  # the guide with this block in, on the validation split
    kl: float  # KL(guide || guide with this block), nats per sample, validation split
    alignment: float  # linear CKA of its output with the guide's, held-out rows
    steps: int
    train_s: float  # the wall time it took to train and score it (0 where it was read back)
    stage_key: str  # its stage checkpoint (the trained weights)


def score_block(guide, start: int, stop: int, spec: BlockSpec, data, config, *, key: str, device: str,
                store: CheckpointStore, activations=None, guide_logits=None) -> tuple[BlockScore, bool]:
    """The score of ``spec`` in place of parts ``start..stop-1``, stored under ``key`` (:func:`block_key`): read
    back where it is stored, else trained and scored now (and stored); returns it and whether it was read back.
    ``guide_logits``: the guide's validation logits, computed once per build (:func:`guide_val_logits`)."""
    saved = store.load(key)
    if saved is not None:
        return BlockScore(**saved["score"]), True
    t0 = time.perf_counter()
    hybrid, report, stage_key = train_alone(guide, start, stop, spec, data, config, device=device,
                                            activations=activations, checkpoint_dir=store.root,
                                            artifacts=store.remote)
    accuracy, kl = _val_scores(hybrid, data, guide_logits if guide_logits is not None else
                               guide_val_logits(guide, data, device))
    score = BlockScore(accuracy, kl, float(next(iter(report.alignment.values()), float("nan"))), report.steps,
                       round(time.perf_counter() - t0, 3), stage_key)
    store.save(key, {"score": asdict(score)})
    return score, False


def block_key(guide, start: int, stop: int, spec: BlockSpec, data, config, device: str) -> str:
    """What makes two scored blocks the same: the guide, the data, the stage settings, the run and the block."""
    return stable_hash({"library_block": 1, "guide": guide.identity, "data": data.fingerprint_on(device),
                        "settings": config.stage_settings(device), "run": [start, stop], "spec": spec.to_dict()})


@torch.no_grad()
def guide_val_logits(guide, data, device: str, batch_size: int = 1024) -> list[torch.Tensor]:
    """The guide's logits on the validation split, batch by batch (what every block's KL is taken against)."""
    guide.to(device)
    return [guide.run_chain(b.x) for b in data.val.batches(batch_size, device=device)]


@torch.no_grad()
def _val_scores(hybrid, data, guide_logits: list[torch.Tensor], batch_size: int = 1024) -> tuple[float, float]:
    """(accuracy, mean KL(guide || hybrid)) of ``hybrid`` on the validation split, one host sync at the end."""
    hybrid.eval()
    device = hybrid.device
    correct = torch.zeros((), dtype=torch.long, device=device)
    kl = torch.zeros((), dtype=torch.float64, device=device)
    n = 0
    for b, g in zip(data.val.batches(batch_size, device=device), guide_logits):
        logits = hybrid(b.x).float()
        correct += (logits.argmax(-1) == b.y).sum()
        p_log = torch.log_softmax(g.float(), -1)
        kl += (p_log.exp() * (p_log - torch.log_softmax(logits, -1))).sum(-1).double().sum()
        n += b.y.numel()
    return correct.item() / max(n, 1), kl.item() / max(n, 1)
