"""`nas-theseus report`: a Pareto plot (PNG with matplotlib: the first objective against each cost, one panel
per cost; interactive HTML with plotly, 3-D for three objectives) and per-stage alignment curves, from the
study's stored trials. Computes nothing new: reads what the trials recorded.

For a deployer: the guide is drawn as a reference point (its figures from the study's ``guide_reference``),
cost axes are logarithmic, the front table gives each trial's share of the guide's figures, front points that
beat the guide (cheaper at no more than 1 point below its accuracy: "deploy wins") are ringed, and other studies
of the same objectives (the scratch and KD baselines, say) can be drawn on the same plot (``compare``)."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from .measure import CONVENTION  # noqa: E402
from .study.guide_reference import ATTR as GUIDE_REFERENCE  # noqa: E402
from .study.guide_reference import describe as describe_guide  # noqa: E402
from .study.guide_reference import describe_wins  # noqa: E402
from .study.objectives import OBJECTIVES  # noqa: E402
from .study.pareto import front, hypervolume, trials_frame  # noqa: E402
from .study.reuse import describe, study_reuse  # noqa: E402
from .utils.files import atomic_write_text  # noqa: E402

LATENCY = "latency_ms"


def _label(name: str) -> str:
    return OBJECTIVES[name].label if name in OBJECTIVES else name


def _log_axis(name: str) -> bool:
    """Costs (and perplexity) span orders of magnitude across a front."""
    return name in OBJECTIVES and (OBJECTIVES[name].cost or name == "perplexity")


def share_of_guide(pf, names: list[str], guide: dict | None):
    """``pf`` with a column per objective: the trial's figure ÷ the guide's (accuracy kept, cost kept)."""
    pf = pf.copy()
    if guide and "error" not in guide:
        for name in names:
            if guide.get(name):
                pf[f"{name} ÷ guide"] = pf[name] / guide[name]
    return pf


def _panel(ax, x_name: str, y_name: str, df, pf, others, guide: dict | None, *, steps: bool) -> None:
    """Trials, the front (a step line when it is a 2-objective front; with more objectives a point of the front
    may look dominated in any one projection, so points only), compared fronts and the guide, on one pair of
    axes."""
    if len(df):
        ax.scatter(df[x_name], df[y_name], c="0.7", s=18, label="trials")
    if len(pf):
        pts = pf.sort_values(x_name)
        ax.plot(pts[x_name], pts[y_name], "o-" if steps else "o", c="C3", label="Pareto front",
                drawstyle="steps-post")
        for _, row in pts.iterrows():
            ax.annotate(str(row["trial"]), (row[x_name], row[y_name]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
        wins = pts[pts["deploy_win"] != ""]
        if len(wins):
            ax.scatter(wins[x_name], wins[y_name], s=130, facecolors="none", edgecolors="C2", linewidths=1.6,
                       zorder=4, label="deploy win (beats the guide)")
    for i, (label, opf, ohv) in enumerate(others):
        if len(opf):
            pts = opf.sort_values(x_name)
            ax.plot(pts[x_name], pts[y_name], "s--" if steps else "s", c=f"C{i}", ms=4, drawstyle="steps-post",
                    label=f"{label} front (hypervolume {ohv:.4g})")
    if guide and "error" not in guide and x_name in guide and y_name in guide:
        ax.scatter([guide[x_name]], [guide[y_name]], marker="*", s=160, c="k", zorder=5, label="guide")
    if _log_axis(x_name) and len(df) and (df[x_name] > 0).all():
        ax.set_xscale("log")
    ax.set_xlabel(_label(x_name))
    ax.set_ylabel(_label(y_name))
    ax.legend(fontsize=7)


def _interactive(df, pf, names: list[str], costs: list[str]):
    """The PNG's panels as a plotly figure: every trial, and the front as the table computes it (one definition
    of the front for the table, the PNG and the HTML); hovering names the trial and its candidate."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(costs), subplot_titles=[f"{_label(names[0])} vs {_label(c)}"
                                                                 for c in costs])
    for col, cost in enumerate(costs, start=1):
        for rows, label, colour in ((df, "trials", "lightgray"), (pf, "Pareto front", "crimson")):
            wins = rows["deploy_win"] if "deploy_win" in rows else [""] * len(rows)
            text = [f"trial {int(t)}: {c}" + (f"<br>deploy win: {w}" if w else "")
                    for t, c, w in zip(rows["trial"], rows["candidate"], wins)]
            fig.add_trace(go.Scatter(x=rows[cost], y=rows[names[0]], mode="markers", name=label, text=text,
                                     marker={"color": colour, "size": 9}, showlegend=col == 1,
                                     hovertemplate="%{text}<br>%{x:.4g}, %{y:.4g}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text=_label(cost), type="log" if _log_axis(cost) else "linear", row=1, col=col)
        fig.update_yaxes(title_text=_label(names[0]), type="log" if _log_axis(names[0]) else "linear", row=1,
                         col=col)
    return fig


def compared_front(other: optuna.Study, guide: dict | None, names: list[str], directions: list[str],
                   ref: dict) -> tuple:
    """Another study's front and hypervolume on this study's reference point. Each study times its guide once
    and scores latency as a ratio to it, so the same network's ``latency_ms`` differs between two studies by
    the guide's drift between their measurements; the other study's latency is therefore put on this study's
    guide figure (its ratio to its guide x this study's guide), when both guides were timed."""
    opf = front(other, names, directions, ref)[0]
    theirs = other.user_attrs.get(GUIDE_REFERENCE) or {}
    if LATENCY in names and len(opf) and (guide or {}).get(LATENCY) and theirs.get(LATENCY):
        opf = opf.copy()
        opf[LATENCY] = opf[LATENCY] * (guide[LATENCY] / theirs[LATENCY])
    values = opf[names].to_numpy(dtype=float)
    return opf, (hypervolume(values, directions, np.array([ref[n] for n in names])) if len(opf) else 0.0)


def counts(study: optuna.Study) -> str:
    """Pruned, failed, repeated and reused work, in words."""
    trials = study.get_trials(deepcopy=False)
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    failed = sum(t.state == TrialState.FAIL and "fail_reason" in t.user_attrs for t in trials)
    return f"{pruned} trial(s) pruned, {failed} failed with a reason; {describe(study_reuse(trials))}"


def write_report(study: optuna.Study, names: list[str], directions: list[str], out: Path,
                 reference: dict | None = None, compare: list[tuple[str, optuna.Study]] = ()) -> list[Path]:
    """Write pareto.png, pareto.html, alignment.png and index.html into ``out``; returns the paths. ``compare``:
    (label, study) pairs of other studies with the same objectives, whose fronts are drawn on the same plot."""
    out.mkdir(parents=True, exist_ok=True)
    df = trials_frame(study, names)
    pf, hv, ref = front(study, names, directions, reference)
    guide = study.user_attrs.get(GUIDE_REFERENCE)
    others = [(label, *compared_front(other, guide, names, directions, ref)) for label, other in compare]
    costs = names[1:] or names[:1]  # one panel per cost: the first objective against it
    written = [_pareto_png(study, names, costs, df, pf, hv, others, guide, out)]
    if len(names) > 1 and len(df):
        htm = out / "pareto.html"
        _interactive(df, pf, names, costs).write_html(str(htm), include_plotlyjs=True)
        written.append(htm)
    written.append(_alignment_png(study, out))
    written.append(_index_html(study, names, df, pf, hv, ref, others, guide, bool(compare), out))
    return written


def _pareto_png(study: optuna.Study, names: list[str], costs: list[str], df, pf, hv: float, others,
                guide: dict | None, out: Path) -> Path:
    """pareto.png: one panel per cost (:func:`_panel`), titled with the study, its trials and hypervolume."""
    fig, axes = plt.subplots(1, len(costs), figsize=(6.4 if len(costs) == 1 else 5.0 * len(costs), 4.4),
                             squeeze=False)
    for ax, x_name in zip(axes[0], costs):
        _panel(ax, x_name, names[0], df, pf, others, guide, steps=len(names) <= 2)
    front_of = "" if len(names) <= 2 else f"; front over all {len(names)} objectives, shown per cost"
    fig.suptitle(f"{study.study_name}: {len(df)} trials, hypervolume {hv:.4g}{front_of}", fontsize=9)
    fig.tight_layout()
    png = out / "pareto.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def _alignment_png(study: optuna.Study, out: Path) -> Path:
    """alignment.png: each complete trial's mean held-out CKA of its swapped parts after each stage."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        stages = t.user_attrs.get("stages") or []
        if stages:
            mean = [sum(s["alignment"].values()) / max(len(s["alignment"]), 1) for s in stages]
            ax.plot(range(1, len(mean) + 1), mean, marker="o", lw=1, label=f"trial {t.number}")
    ax.set_xlabel("stage")
    ax.set_ylabel("mean linear CKA on held-out rows (swapped parts)")
    ax.set_title("alignment after each stage", fontsize=9)
    if ax.lines:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    png = out / "alignment.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def _index_html(study: optuna.Study, names: list[str], df, pf, hv: float, ref: dict, others, guide: dict | None,
                compare: bool, out: Path) -> Path:
    """index.html: the study in figures and words, the front table (each trial's share of the guide's
    figures) and the plots written beside it."""
    shown = share_of_guide(pf, names, guide)
    rows = shown.drop(columns=["params"]).to_html(index=False, float_format=lambda v: f"{v:.4g}") if len(pf) else ""
    link = "<p><a href='pareto.html'>interactive plot</a></p>" if (out / "pareto.html").exists() else ""
    guide_line = describe_guide(guide, names)
    wins_line = describe_wins(pf, names)
    compared = "".join(f"<li>{html.escape(label)}: {len(opf)} front trials, hypervolume {ohv:.6g}</li>"
                       for label, opf, ohv in others)
    page = (f"<html><head><meta charset='utf-8'><title>{html.escape(study.study_name)}</title></head><body>"
            f"<h1>{html.escape(study.study_name)}</h1><p>{len(df)} complete trials; hypervolume {hv:.6g} "
            f"(reference {html.escape(str(ref))}). {html.escape(CONVENTION)}.</p>"
            + (f"<p>{html.escape(guide_line)}</p>" if guide_line else "")
            + (f"<p>{html.escape(wins_line)}</p>" if wins_line else "")
            + (f"<p>Compared on the same reference point:</p><ul>{compared}</ul>" if compare else "")
            + f"<p>{html.escape(counts(study))}.</p>"
            f"<h2>Pareto front</h2>{rows}<img src='pareto.png'>"
            f"{link}"
            f"<h2>Alignment per stage</h2><img src='alignment.png'></body></html>")
    index = out / "index.html"
    atomic_write_text(index, page)
    return index
