"""Our own early stop for multi-objective trials (Optuna cannot prune them: ``trial.report`` raises).

A trial's costs that do not depend on training (FLOPs, parameters, latency) are known before its first stage,
measured on its untrained deploy network (latency is timed twice while the rule is on: here and as the
objective); after each stage its hybrid's validation accuracy is known. The rule: after stage k (the
last stage only, by default), a trial is ended as PRUNED when an earlier COMPLETE trial costs no more on every
such objective and its hybrid reached at least ``margin`` more validation accuracy after its own stage k: a
cheaper trial that was ahead at the same point. The reason is the trial's ``prune_reason`` attribute; its stage
checkpoints stay for reuse.

Chosen from the stage curves of three recorded runs of the default study (36 trials: the plateau recipe at
most 1,500 and 2,000 steps a stage, and the earlier fixed 500-step recipe; ``benchmarks/results/
pruning_rule.md``): after stage 1 or 2 every margin that fired at all pruned a trial that ended on the final
front, so the rule looks at the last stage only; there a margin of 0.05 pruned 3 of 36 trials and none of them
was on the final front. Off by default (``[pruning] enabled``): what it saves is the fine-tuning of those
trials, a few seconds each in the default study.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import TrialState


@dataclass(frozen=True)
class PruningRule:
    margin: float = 0.05
    stages: str = "last"  # "last" | "all"

    def check(self, trial: optuna.Trial, stage_index: int, n_stages: int, accuracy: float, costs: dict) -> None:
        """Raise ``optuna.TrialPruned`` (after recording why) if the rule fires after this stage."""
        if self.stages == "last" and stage_index != n_stages - 1:
            return
        for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.number >= trial.number or "repeat_of" in t.user_attrs:
                continue
            other = t.user_attrs.get("pre_training_costs") or {}
            stages = t.user_attrs.get("stages") or []
            if not costs or set(other) != set(costs) or len(stages) <= stage_index:
                continue
            ahead = stages[stage_index]["hybrid_val_accuracy"] - accuracy
            if all(other[c] <= costs[c] for c in costs) and ahead >= self.margin:
                reason = (f"after stage {stage_index + 1}, trial {t.number} (costs {other}, no more than this "
                          f"trial's {costs}) was {ahead:.3f} ahead in hybrid validation accuracy "
                          f"(margin {self.margin})")
                trial.set_user_attr("prune_reason", reason)
                raise optuna.TrialPruned(reason)
