"""Training losses left on the device and read by the host rarely: one window of steps at a time, in one copy.

A host read of a loss waits for the device, so a loop that read every step's loss would hold a GPU to the
host's pace. Both training loops (:func:`~nas_theseus.training.fit_classifier`'s epochs and
:func:`~nas_theseus.convert.stages.train_stage`) add each step's loss here and read a window when it is full
(and what is left at their end); what they make of the values (an epoch's summed loss, a stage's curve) is
theirs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


class LossWindow:
    """Up to ``size`` steps' losses, kept on the device as they come (no work there per step).

    :meth:`add` says when the window is full; :meth:`read` then copies its losses to the host in one transfer
    and returns them in step order, each with the rows it was the mean of; the first non-finite one raises
    ``failure(value, step)`` instead, so a run fails with the step its loss broke at.
    """

    def __init__(self, size: int, failure: Callable[[float, int], Exception]):
        self.size, self.failure = size, failure
        self._pending: list[tuple[torch.Tensor, int, int]] = []  # (loss, step, rows)

    def add(self, loss: torch.Tensor, step: int, rows: int = 1) -> bool:
        """Keep step ``step``'s loss (the mean over ``rows`` rows); whether the window is now full."""
        self._pending.append((loss.detach(), step, rows))
        return len(self._pending) >= self.size

    def read(self) -> list[tuple[float, int]]:
        """The kept losses as ``(value, rows)`` in step order (one host sync; none when nothing is kept), and
        the window emptied."""
        if not self._pending:
            return []
        values = torch.stack([loss for loss, _, _ in self._pending]).tolist()
        for v, (_, step, _) in zip(values, self._pending):
            if not math.isfinite(v):
                raise self.failure(v, step)
        read = [(v, rows) for v, (_, _, rows) in zip(values, self._pending)]
        self._pending.clear()
        return read
