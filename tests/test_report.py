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


def test_deploy_wins_are_front_points_cheaper_than_the_guide_at_its_accuracy(tmp_path, capsys):
    """A front trial beats the guide for a deployer when it costs less on some objective at no more than 1 point
    below the guide's validation accuracy; `pareto` and `report` say which, with the factors."""
    from nas_theseus.study.guide_reference import describe_wins
    from nas_theseus.study.pareto import deploy_win

    names = ["accuracy", "flops", "latency_ms"]
    guide = {"accuracy": 0.80, "flops": 500.0, "latency_ms": 0.4}
    row = {"accuracy": 0.796, "flops": 210.0, "latency_ms": 0.244}
    assert deploy_win(row, names, guide) == "0.42x FLOPs, 0.61x latency, -0.4 points"
    assert deploy_win({**row, "accuracy": 0.789}, names, guide) == ""  # 1.1 points below
    assert deploy_win({**row, "flops": 600.0, "latency_ms": 0.5}, names, guide) == ""  # costs no less
    assert deploy_win(row, names, None) == "" and deploy_win(row, names, {"error": "x"}) == ""
    assert deploy_win({"perplexity": 3.02, "flops": 100.0}, ["perplexity", "flops"],
                      {"perplexity": 3.0, "flops": 400.0}) == "0.25x FLOPs, 1.007x perplexity"

    study = _study(names)
    study.set_user_attr(GUIDE_REFERENCE, {"accuracy": 0.905, "test_accuracy": 0.9, "flops": 1100.0,
                                          "latency_ms": 0.55})
    pf, _, _ = report_module.front(study, names, ["maximize", "minimize", "minimize"], None)
    wins = dict(zip(pf["trial"], pf["deploy_win"]))
    assert wins[0] == "0.91x FLOPs, 0.91x latency, -0.5 points" and wins[1] == wins[2] == wins[4] == ""
    line = describe_wins(pf, names)
    assert line.startswith("deploy wins (cheaper than the guide on a cost, accuracy at most 1 point below its): "
                           "1 of 4 front trials; trial 0: 0.91x FLOPs")
    report_module.write_report(study, names, ["maximize", "minimize", "minimize"], tmp_path)
    assert "deploy wins (" in (tmp_path / "index.html").read_text()
    study.set_user_attr(GUIDE_REFERENCE, {"accuracy": 0.95, "flops": 1100.0, "latency_ms": 0.55})
    pf, _, _ = report_module.front(study, names, ["maximize", "minimize", "minimize"], None)
    assert describe_wins(pf, names).endswith(": none on this front")
