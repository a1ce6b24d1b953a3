"""The guide as a reference point of the study: its accuracy and costs, measured as the trials' are, once.

Stored as the study's ``guide_reference`` user attribute (so ``pareto``, ``report`` and the dashboard show where
the guide stands beside the front): validation and test accuracy (and perplexity), and every cost objective of
the study (FLOPs, parameters, latency with the study's runtimes and batch sizes) of the guide's stem -> parts ->
head chain, the network the trials convert.
"""

from __future__ import annotations

import optuna

from ..training import evaluate
from .context import StudyContext
from .objective import measure
from .objectives import costs, perplexity

ATTR = "guide_reference"


def guide_reference(ctx: StudyContext) -> dict:
    """What the guide scores on the study's objectives (plus test figures), or ``{"error": why}``."""
    net = ctx.guide_network().eval()
    device = ctx.config.study.device
    names = set(costs(ctx.config.objectives))
    try:
        val_acc, val_loss = evaluate(net, ctx.data.val, device=device)
        test_acc, test_loss = evaluate(net, ctx.data.test, device=device)
        measured = measure(net, ctx, names)
    except Exception as e:  # noqa: BLE001 - a reference figure the study can do without: say why, go on
        return {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"}
    ref = {"accuracy": val_acc, "test_accuracy": test_acc, "perplexity": perplexity(val_loss),
           "test_perplexity": perplexity(test_loss), **measured.values}
    for key in ("latency", "latency_table", "flops_convention"):
        if key in measured.attrs:
            ref[key] = measured.attrs[key]
    return ref


def record_guide_reference(study: optuna.Study, ctx: StudyContext) -> None:
    """Measure the guide once per study (a resumed or parallel run finds it stored); the trials' latency is
    taken relative to it (see ``objectives.Latency``)."""
    if ATTR not in study.user_attrs:
        study.set_user_attr(ATTR, guide_reference(ctx))
    ctx.guide_figures = study.user_attrs[ATTR]


def describe(ref: dict | None, names: list[str]) -> str | None:
    """One line for ``pareto``: the guide's figures on the study's objectives."""
    if not ref:
        return None
    if "error" in ref:
        return f"guide (reference): not measured ({ref['error']})"
    shown = ", ".join(f"{n} {ref[n]:.4g}" for n in names if n in ref)
    tail = f", test accuracy {ref['test_accuracy']:.4g}" if "accuracy" in names else ""
    return f"guide (reference): {shown}{tail}"
