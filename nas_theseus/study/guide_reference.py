"""The guide as a reference point of the study: its accuracy and costs, measured as the trials' are, once.

Stored as the study's ``guide_reference`` user attribute (so ``pareto``, ``report`` and the dashboard show where
the guide stands beside the front): validation and test accuracy (and perplexity), and every cost objective of
the study (FLOPs, parameters, latency with the study's runtimes and batch sizes) of the guide's stem -> parts ->
head chain, the network the trials convert.
"""

from __future__ import annotations

import optuna

from ..errors import UserError
from ..training import evaluate
from .context import StudyContext
from .objective import measure, send_aside
from .objectives import OBJECTIVES, costs, perplexity
from .pareto import GUIDE_REFERENCE

ATTR = GUIDE_REFERENCE
ATTEMPTS = 2  # a measurement that fails twice stops the run: latency ratios would otherwise be absolute figures


def guide_reference(ctx: StudyContext) -> dict:
    """What the guide scores on the study's objectives (plus test figures); raises on a failed measurement."""
    net = ctx.guide_network().eval()
    names = set(costs(ctx.config.objectives))
    val_acc, val_loss = evaluate(net, ctx.data.val)
    test_acc, test_loss = evaluate(net, ctx.data.test)
    measured = measure(net, ctx, names, pending=send_aside(ctx, lambda: net, names))  # where trials' are
    ref = {"accuracy": val_acc, "test_accuracy": test_acc, "perplexity": perplexity(val_loss),
           "test_perplexity": perplexity(test_loss), **measured.values}
    for key in ("latency", "latency_table", "flops_convention"):
        if key in measured.attrs:
            ref[key] = measured.attrs[key]
    return ref


def record_guide_reference(study: optuna.Study, ctx: StudyContext) -> None:
    """Measure the guide once per study (a resumed or parallel run finds it stored); the trials' latency is
    taken relative to it (see ``objectives.Latency``). A failed measurement is tried again once, then stops
    the run in one line: it is never stored (a reference stored as an error by an earlier version is measured
    again), since every later trial's latency would silently change from a ratio to an absolute figure."""
    stored = study.user_attrs.get(ATTR)
    if stored is None or "error" in stored:
        for attempt in range(ATTEMPTS):
            try:
                stored = guide_reference(ctx)
                break
            except Exception as e:  # noqa: BLE001 - retried once, then one line
                reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
                if attempt + 1 == ATTEMPTS:
                    raise UserError(f"the guide could not be measured as the study's reference ({reason}); the "
                                    f"trials' objectives are taken relative to it, so the study stops here") from e
        study.set_user_attr(ATTR, stored)
    ctx.guide_figures = stored


def describe(ref: dict | None, names: list[str]) -> str | None:
    """One line for ``pareto``: the guide's figures on the study's objectives."""
    if not ref:
        return None
    if "error" in ref:
        return f"guide (reference): not measured ({ref['error']})"
    shown = ", ".join(f"{n} {ref[n]:.4g}" for n in names if n in ref)
    tail = f", test accuracy {ref['test_accuracy']:.4g}" if "accuracy" in names else ""
    return f"guide (reference): {shown}{tail}"


def describe_wins(front, names: list[str]) -> str | None:
    """One line for ``pareto`` and ``report``: the front trials that beat the guide for a deployer, if any cost
    and score objective can be compared with it."""
    if not any(OBJECTIVES[n].cost for n in names) or all(OBJECTIVES[n].cost for n in names):
        return None
    rule = ("cheaper than the guide on a cost, "
            + ("accuracy at most 1 point below its" if "accuracy" in names else "perplexity at most 1 % above its"))
    wins = front[front["deploy_win"] != ""]
    if wins.empty:
        return f"deploy wins ({rule}): none on this front"
    listed = "; ".join(f"trial {int(r['trial'])}: {r['deploy_win']}" for _, r in wins.iterrows())
    return f"deploy wins ({rule}): {len(wins)} of {len(front)} front trials; {listed}"
