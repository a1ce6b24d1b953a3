"""Fronts and hypervolumes that compare across the benchmarks' studies.

A study's ``latency_ms`` is the trial's ratio to the guide (timed side by side) times the guide's own figure,
measured once per study: within a study that ranks, but two studies measured their guides at different
moments of the machine, so the same network can differ between them by the guide's drift (10-50 % on a
shared VM, ``benchmarks/latency_stability.py``). Here latency is therefore the ratio to the guide itself
(``user_attrs["latency"]["relative"]``) with reference 1.0, the guide's own latency; every other objective is
as the study scores it, against the study file's reference.
"""

from __future__ import annotations

import numpy as np

from nas_theseus.study.pareto import hypervolume, pareto_mask

LATENCY = "latency_ms"
LATENCY_REFERENCE = 1.0  # x the guide's latency


def comparable_values(trials, names: list[str]) -> np.ndarray:
    """The trials' objective values, one row each, latency as the ratio to the guide."""
    rows = []
    for t in trials:
        row = list(t.values)
        if LATENCY in names:
            relative = t.user_attrs["latency"].get("relative")
            if relative is None:
                raise ValueError(f"trial {t.number} has no latency relative to the guide (was the guide measured?)")
            row[names.index(LATENCY)] = relative
        rows.append(row)
    return np.array(rows, dtype=float).reshape(-1, len(names))


def reference(config) -> list[float]:
    return [LATENCY_REFERENCE if n == LATENCY else float(config.hypervolume_reference[n]) for n in config.objectives]


def describe_reference(config) -> str:
    """The reference point in words, e.g. "accuracy 0, FLOPs 200,000, latency 1 × the guide's"."""
    shown = {"flops": "FLOPs", LATENCY: "latency"}
    return ", ".join(f"{shown.get(n, n)} {v:,g}" + (" × the guide's" if n == LATENCY else "")
                     for n, v in zip(config.objectives, reference(config)))


def comparable_hypervolume(trials, config) -> float:
    """Hypervolume of ``trials``' front on the study's objectives, latency relative to the guide."""
    names, directions = list(config.objectives), list(config.objectives.values())
    values = comparable_values(trials, names)
    mask = pareto_mask(values, directions)
    return hypervolume(values[mask], directions, np.array(reference(config))) if mask.any() else 0.0


def dominates(a: np.ndarray, b: np.ndarray, directions: list[str]) -> bool:
    """Front ``a`` weakly dominates front ``b``: every point of b is matched or beaten on every objective by
    some point of a."""
    sign = np.where(np.array(directions) == "maximize", -1.0, 1.0)  # everything minimised
    a, b = a * sign, b * sign
    return all(any(bool(np.all(pa <= pb)) for pa in a) for pb in b)
