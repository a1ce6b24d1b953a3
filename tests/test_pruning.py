"""The early-stop rule on its own (nas_theseus.study.pruning): an earlier complete trial must cost no more on
every cost known before training, latency included, and have been ahead by the margin at the same stage."""

import optuna
import pytest

from nas_theseus.study.pruning import PruningRule


def _study(earlier_costs: dict, earlier_accuracy: float):
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.add_trial(optuna.trial.create_trial(
        values=[earlier_accuracy, earlier_costs["flops"], earlier_costs["latency_ms"]],
        user_attrs={"pre_training_costs": earlier_costs, "stages": [{"hybrid_val_accuracy": earlier_accuracy}]}))
    return study


@pytest.mark.parametrize("earlier, fires", [
    ({"flops": 100.0, "latency_ms": 0.05}, True),  # cheaper and faster, and ahead: this trial cannot win
    ({"flops": 100.0, "latency_ms": 0.09}, False),  # cheaper but slower: this trial may still be on the front
    ({"flops": 300.0, "latency_ms": 0.05}, False),  # faster but costlier
])
def test_the_rule_fires_only_when_an_earlier_trial_costs_no_more_on_every_cost(earlier, fires):
    study = _study(earlier, earlier_accuracy=0.9)
    trial = study.ask()
    this = {"flops": 200.0, "latency_ms": 0.08}
    rule = PruningRule(margin=0.05, stages="last")
    if fires:
        with pytest.raises(optuna.TrialPruned, match="after stage 1, trial 0"):
            rule.check(trial, 0, 1, 0.8, this)
        assert "prune_reason" in study.trials[1].user_attrs
    else:
        rule.check(trial, 0, 1, 0.8, this)


def test_the_rule_needs_the_margin_and_by_default_looks_after_the_last_stage_only():
    study = _study({"flops": 100.0, "latency_ms": 0.05}, earlier_accuracy=0.9)
    trial = study.ask()
    this = {"flops": 200.0, "latency_ms": 0.08}
    PruningRule(margin=0.05).check(trial, 0, 1, 0.86, this)  # only 0.04 behind
    PruningRule(margin=0.05).check(trial, 0, 3, 0.5, this)  # stage 1 of 3: not the last
    with pytest.raises(optuna.TrialPruned):
        PruningRule(margin=0.05, stages="all").check(trial, 0, 3, 0.5, this)
