"""Searchable partitions: which runs of consecutive guide parts one target replaces."""

from __future__ import annotations


def suggest_partition(trial, n_parts: int, *, max_run: int | None = None, prefix: str = "partition") -> tuple:
    """Suggest run lengths over ``n_parts`` guide parts (for ``Candidate(partition=...)``): for each boundary
    between two parts, ``{prefix}.cut{i}`` (True / False) says whether a new run starts after part ``i``. With
    ``max_run``, a run that reaches that length is cut without asking. Returns e.g. ``(2, 1)`` for three parts
    whose first two one target replaces."""
    runs, current = [], 1
    for i in range(n_parts - 1):
        cut = current == max_run or trial.suggest_categorical(f"{prefix}.cut{i}", [True, False])
        if cut:
            runs.append(current)
            current = 1
        else:
            current += 1
    return tuple([*runs, current])
