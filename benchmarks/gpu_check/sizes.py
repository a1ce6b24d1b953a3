"""How big each step runs: on a GPU, or tiny on the CPU (``--dry``: the code paths, not speed)."""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class Sizes:
    device: str
    train: int  # prototype images in the training split
    cka_rows: int
    stage_steps: int
    stage_pairs: int
    e2e_steps: int
    e2e_guide_epochs: int
    e2e_finetune_epochs: int
    worker_counts: tuple[int, ...]
    worker_steps: int
    memory_conversions: int
    study_steps: int
    compile_backend: str
    stream_images: int  # the synthetic image folder of the streamed step
    stream_steps: int
    stream_fast_steps: int  # the packed and GPU-decoded feeds: long enough to time at ≥ 80,000 images/s
    stream_workers: int
    ddp_steps: int  # alignment steps of the one-conversion-across-GPUs step, at global batch ddp_batch
    ddp_batch: int


GPU = Sizes("cuda", 20000, 1024, 300, 3, 400, 3, 3, (1, 2, 4), 400, 6, 100, "inductor", 8000, 200, 1000,
            min(8, (os.cpu_count() or 2) - 1), 200, 512)
DRY = Sizes("cpu", 384, 128, 4, 1, 4, 1, 1, (1, 2), 4, 3, 3, "eager", 200, 3, 3, 1, 3, 8)


def sizes(dry: bool) -> Sizes:
    return DRY if dry else GPU
