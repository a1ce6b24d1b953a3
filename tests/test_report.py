"""`report` from stored trials alone: one panel per cost, the front drawn as a step line only for two
objectives, the guide as a reference point (an in-memory study; nothing trained)."""

import optuna
import pytest

from nas_theseus import report as report_module
from nas_theseus.study.guide_reference import ATTR as GUIDE_REFERENCE

# trial 3 is dominated by trial 1 on every objective; trial 4 by trial 1 on (accuracy, FLOPs) only: it is the
# fastest, so it is on the three-objective front
ROWS = [(0.9, 1000.0, 0.5), (0.8, 300.0, 0.6), (0.7, 200.0, 0.2), (0.6, 900.0, 0.9), (0.75, 400.0, 0.1)]


def _study(names):
    study = optuna.create_study(directions=["maximize"] + ["minimize"] * (len(names) - 1))
    for i, row in enumerate(ROWS):
        t = optuna.trial.create_trial(values=list(row[:len(names)]), user_attrs={"test_accuracy": row[0] - 0.01,
                                                                                 "candidate": f"c{i}"})
        study.add_trial(t)
    study.set_user_attr(GUIDE_REFERENCE, {"accuracy": 0.92, "test_accuracy": 0.91, "flops": 3000.0,
                                          "latency_ms": 1.0})
    return study


@pytest.mark.parametrize("names, on_front, step_line", [
    (["accuracy", "flops"], [0, 1, 2], True),
    (["accuracy", "flops", "latency_ms"], [0, 1, 2, 4], False),
])
def test_a_panel_per_cost_and_the_front_as_points_beyond_two_objectives(tmp_path, monkeypatch, names, on_front,
                                                                        step_line):
    drawn = []
    real = report_module._panel

    def spy(ax, x_name, y_name, df, pf, others, guide, *, steps):
        drawn.append((x_name, y_name, sorted(pf["trial"]), steps))
        real(ax, x_name, y_name, df, pf, others, guide, steps=steps)

    monkeypatch.setattr(report_module, "_panel", spy)
    study = _study(names)
    written = report_module.write_report(study, names, [d.name.lower() for d in study.directions], tmp_path)
    assert {p.name for p in written} == {"pareto.png", "pareto.html", "alignment.png", "index.html"}
    assert drawn == [(x, "accuracy", on_front, step_line) for x in names[1:]]  # a panel per cost
    page = (tmp_path / "index.html").read_text()
    assert "guide (reference): accuracy 0.92" in page and "flops ÷ guide" in page
    # the interactive plot's front is the table's (one definition): its red trace holds exactly those trials
    import json
    import re

    html = (tmp_path / "pareto.html").read_text()
    traces = json.loads(re.search(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*(\[.*?\]),\s*\{", html, re.S).group(1))
    fronts = [t for t in traces if t["name"] == "Pareto front"]
    assert len(fronts) == len(names) - 1
    assert all(sorted(int(x.split(":")[0].split()[1]) for x in t["text"]) == on_front for t in fronts)


def test_a_compared_studys_latency_is_put_on_this_studys_guide_figure(tmp_path):
    """The same networks timed in another study whose guide measured twice as slow: rescaled to this study's
    guide, the compared front is this study's, with the same hypervolume."""
    names = ["accuracy", "flops", "latency_ms"]
    study, other = _study(names), optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for t in study.trials:
        other.add_trial(optuna.trial.create_trial(values=[t.values[0], t.values[1], 2 * t.values[2]],
                                                  user_attrs=t.user_attrs))
    other.set_user_attr(GUIDE_REFERENCE, {**study.user_attrs[GUIDE_REFERENCE], "latency_ms": 2.0})
    _, hv, ref = report_module.front(study, names, ["maximize", "minimize", "minimize"], None)
    opf, ohv = report_module.compared_front(other, study.user_attrs[GUIDE_REFERENCE], names,
                                            ["maximize", "minimize", "minimize"], ref)
    assert sorted(opf["latency_ms"]) == sorted(r[2] for i, r in enumerate(ROWS) if i != 3)
    assert ohv == pytest.approx(hv)
    report_module.write_report(study, names, ["maximize", "minimize", "minimize"], tmp_path,
                               compare=[("slower guide", other)])
    assert f"hypervolume {hv:.6g}</li>" in (tmp_path / "index.html").read_text()
