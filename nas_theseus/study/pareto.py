"""The Pareto front of a study as data (a pandas DataFrame) and its hypervolume. Presentation lives in cli/report."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from .objectives import OBJECTIVES

GUIDE_REFERENCE = "guide_reference"  # the study attribute guide_reference.py writes: the guide's own figures


def _feasible(t) -> bool:
    """All constraint values ≤ 0 (Optuna's convention); a trial without constraints is feasible."""
    return all(v <= 0 for v in t.constraints.values())


def pareto_mask(values: np.ndarray, directions: list[str]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (n, m) under the given directions."""
    if len(values) == 0:
        return np.zeros(0, dtype=bool)
    loss = np.where(np.array(directions) == "maximize", -values, values)
    mask = np.ones(len(loss), dtype=bool)
    for i in range(len(loss)):
        dominated = np.all(loss <= loss[i], axis=1) & np.any(loss < loss[i], axis=1)
        mask[i] = not dominated.any()
    return mask


def hypervolume(values: np.ndarray, directions: list[str], reference: np.ndarray) -> float:
    """Volume dominated by ``values`` and bounded by ``reference`` (exact, any number of objectives).

    Maximised objectives are negated so every objective is minimised; points beyond the reference add nothing.
    """
    loss = np.where(np.array(directions) == "maximize", -values, values).astype(float)
    ref = np.where(np.array(directions) == "maximize", -reference, reference).astype(float)
    loss = loss[np.all(loss < ref, axis=1)]
    return float(_hv(loss, ref))


def _hv(points: np.ndarray, ref: np.ndarray) -> float:
    if len(points) == 0:
        return 0.0
    if points.shape[1] == 1:
        return float(ref[0] - points[:, 0].min())
    # slice along the last objective (HSO): sweep sorted levels, each slab's area is an (m-1)-D hypervolume
    order = np.argsort(points[:, -1])
    pts = points[order]
    total = 0.0
    for i in range(len(pts)):
        upper = pts[i + 1, -1] if i + 1 < len(pts) else ref[-1]
        depth = upper - pts[i, -1]
        if depth > 0:
            total += depth * _hv(pts[: i + 1, :-1], ref[:-1])
    return total


def default_reference(values: np.ndarray, directions: list[str], names: list[str], given: dict) -> np.ndarray:
    """The study's hypervolume reference: the study file's values, else the objective's own default (0 for
    accuracy), else the worst value seen (x 1.1 for a minimised metric)."""
    ref = []
    for j, (name, direction) in enumerate(zip(names, directions)):
        default = OBJECTIVES[name].hv_reference if name in OBJECTIVES else None
        if name in given:
            ref.append(float(given[name]))
        elif default is not None:
            ref.append(float(default))
        elif direction == "maximize":
            ref.append(float(values[:, j].min()) if len(values) else 0.0)
        else:
            ref.append(1.1 * float(values[:, j].max()) if len(values) else 1.0)
    return np.array(ref)


def trials_frame(study: optuna.Study, names: list[str]) -> pd.DataFrame:
    """One row per COMPLETE trial (repeats of an earlier candidate left out): number, objectives by name, test
    accuracy (and test perplexity when perplexity is an objective), feasibility, the method that trained it
    (``not``, ``scratch``, ``kd``), the candidate, params."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if "repeat_of" in t.user_attrs:  # answered from an earlier trial, which is in the frame itself
            continue
        row = {"trial": t.number, **dict(zip(names, t.values))}
        row["test_accuracy"] = t.user_attrs.get("test_accuracy")
        if "perplexity" in names:
            row["test_perplexity"] = t.user_attrs.get("test_perplexity")
        row["feasible"] = _feasible(t)
        row["method"] = t.user_attrs.get("method", "")
        row["candidate"] = t.user_attrs.get("candidate", "")
        row["params"] = dict(t.params)
        rows.append(row)
    extra = ["test_perplexity"] if "perplexity" in names else []
    return pd.DataFrame(rows, columns=["trial", *names, "test_accuracy", *extra, "feasible", "method", "candidate",
                                       "params"])


def front(study: optuna.Study, names: list[str], directions: list[str], reference: dict | None = None
          ) -> tuple[pd.DataFrame, float, dict]:
    """(Pareto-optimal feasible trials sorted by the first objective, hypervolume, reference used). The one
    definition of the front: ``pareto`` (every format), ``report`` (PNG and HTML) and ``pareto_front`` read it.
    Its rows are the columns of :func:`trials_frame` less ``feasible`` (every front trial is), and
    ``deploy_win``: how a trial beats the guide, where it does (:func:`deploy_win`), else empty."""
    df = trials_frame(study, names)
    feasible = df[df["feasible"]] if len(df) else df
    values = feasible[names].to_numpy(dtype=float) if len(feasible) else np.zeros((0, len(names)))
    mask = pareto_mask(values, directions)
    ref = default_reference(trials_frame(study, names)[names].to_numpy(dtype=float) if len(df) else values,
                            directions, names, reference or {})
    hv = hypervolume(values[mask], directions, ref) if mask.any() else 0.0
    out = (feasible[mask].drop(columns=["feasible"])
           .sort_values(names[0], ascending=directions[0] == "minimize").reset_index(drop=True))
    guide = study.user_attrs.get(GUIDE_REFERENCE)
    out["deploy_win"] = [deploy_win(row, names, guide) for _, row in out.iterrows()]
    return out, hv, dict(zip(names, ref.tolist()))


def deploy_win(row, names: list[str], guide: dict | None) -> str:
    """How a trial beats the guide for a deployer, or "": cheaper than the guide on at least one cost objective
    while every score objective keeps the guide's (accuracy at most 1 point below it, perplexity at most 1 %
    above), e.g. "0.42x FLOPs, 0.61x latency, -0.4 points". Empty when the guide was not measured."""
    if not guide or "error" in guide:
        return ""
    scores = [n for n in names if not OBJECTIVES[n].cost and guide.get(n) is not None]
    costs = [n for n in names if OBJECTIVES[n].cost and guide.get(n)]
    if not scores or not all(OBJECTIVES[n].keeps(float(row[n]), float(guide[n])) for n in scores):
        return ""
    factors = {n: float(row[n]) / float(guide[n]) for n in costs}
    if not any(f < 1.0 for f in factors.values()):
        return ""
    return ", ".join([f"{f:.2f}x {OBJECTIVES[n].short}" for n, f in factors.items()]
                     + [OBJECTIVES[n].versus(float(row[n]), float(guide[n])) for n in scores])


__all__ = ["OBJECTIVES", "deploy_win", "front", "hypervolume", "pareto_mask", "trials_frame"]
