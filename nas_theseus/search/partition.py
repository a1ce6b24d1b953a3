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


def partition_params(partition, *, max_run: int | None = None, prefix: str = "partition") -> dict:
    """The parameters :func:`suggest_partition` takes to return ``partition`` (its inverse, for
    ``enqueue_trial``): ``{prefix}.cut{i}`` for every boundary it asks about."""
    params, current = {}, 1
    ends = {sum(partition[:i + 1]) - 1 for i in range(len(partition))}
    for i in range(sum(partition) - 1):
        cut = i in ends
        if current != max_run:
            params[f"{prefix}.cut{i}"] = cut
        elif not cut:
            raise ValueError(f"partition {list(partition)} has a run longer than max_run={max_run}")
        current = 1 if cut else current + 1
    return params
