"""The guide run on the fly (``activations = "stream"``), the feed beside the cache of its activations
(:class:`~nas_theseus.convert.activations.GuideActivations`). Where a stage's batches come from is one of the two.

Both feeds offer ``batch(idx, device, levels)`` (the guide's activations on given training rows: the probe) and
``stage_batches(...)``: an endless iterator of ``(x, acts)`` for a stage's steps, ``x`` the input rows when a
step reads them (a relearned stem; else None) and ``acts`` the guide's activations A_0 … at the levels the stage
reads (None elsewhere); in a data-parallel run (:mod:`nas_theseus.utils.distributed`) each rank gets its own
shard of every batch's rows. Both draw an epoch's rows by the same seeded permutation of the training split, in full
batches (a last partial batch is left out, and the next epoch reshuffles), so with augmentation off a streamed
stage sees the rows a cached one sees.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..data import TaskData
from ..guides import Guide
from ..training import autocast_context
from ..utils.distributed import shard


class GuideStream:
    """The frozen guide (eval mode, no grad) run on each batch the targets see, augmented as they are, up to
    the deepest level the stage reads. On CUDA the guide's forward runs in bf16 autocast when the conversion's
    does (``ConvertConfig.autocast``), and with ``channels_last`` (the conversion passes
    ``ConvertConfig.channels_last`` on CUDA) its modules and image batches are put in that memory format; its
    activations are handed on in float32."""

    def __init__(self, guide: Guide, data: TaskData, *, autocast: str | None = None, channels_last: bool = False):
        self.guide, self.data, self.autocast = guide, data, autocast
        self.channels_last = channels_last and len(data.sample_shape) == 3  # images
        if self.channels_last:
            for m in (guide.stem, *(p.module for p in guide.parts)):
                m.to(memory_format=torch.channels_last)

    def _guide_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def batch(self, idx: torch.Tensor, device, levels=None) -> list:
        """The guide's activations A_0 … A_K and output on training rows ``idx`` (not augmented)."""
        x = self.data.train.take(idx.cpu())[0].to(device)
        with autocast_context(device, self.autocast):
            acts = self.guide.activations(x)
        return [a.float() if levels is None or i in levels else None for i, a in enumerate(acts)]

    def stage_batches(self, data: TaskData, batch_size: int, generator: torch.Generator, device,
                      levels: set[int], needs_x: bool) -> Iterator[tuple]:
        n, top = len(data.train), max(levels)
        augment = data.augmentation
        while True:
            perm = torch.randperm(n, generator=generator)
            seed = int(torch.randint(2**62, (1,), generator=generator)) if augment.name != "none" else 0
            order = perm[: n - n % batch_size]
            for b in data.train.batches(batch_size, order=order, device=device, augment=augment, seed=seed):
                x = shard(b.x)  # a data-parallel rank runs the guide on its own rows of the batch
                with autocast_context(device, self.autocast):
                    acts = self.guide.activations_upto(self._guide_input(x), top)
                yield (x if needs_x else None), [a.float() if i in levels else None for i, a in enumerate(acts)]
