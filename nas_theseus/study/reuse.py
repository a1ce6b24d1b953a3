"""How much work stage checkpoints saved: stages trained ÷ stages requested, and the time the reused ones took
when they were first trained (their recorded ``wall_s``)."""

from __future__ import annotations

from optuna.trial import FrozenTrial, TrialState


def trial_reuse(stages: list[dict]) -> dict:
    """The reuse attributes of one trial from its stage reports."""
    reused = [s for s in stages if s.get("resumed")]
    return {"stages_requested": len(stages), "stages_trained": len(stages) - len(reused),
            "reuse_saved_s": round(sum(s.get("wall_s", 0.0) for s in reused), 3)}


def study_reuse(trials: list[FrozenTrial]) -> dict:
    """Totals over the complete trials (the numbers ``run`` prints and ``report`` shows)."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and "stages_requested" in t.user_attrs
            and "repeat_of" not in t.user_attrs]
    totals = {key: sum(t.user_attrs[key] for t in done) for key in ("stages_requested", "stages_trained",
                                                                    "reuse_saved_s")}
    totals["repeats"] = sum(1 for t in trials if t.state == TrialState.COMPLETE and "repeat_of" in t.user_attrs)
    return totals


def describe(totals: dict) -> str:
    requested, trained = totals["stages_requested"], totals["stages_trained"]
    repeats = totals.get("repeats", 0)
    text = ("stage reuse: no conversion stages yet" if not requested else
            f"stage reuse: {trained} of {requested} stages trained, {requested - trained} reused from stage "
            f"checkpoints (saving about {totals['reuse_saved_s']:.0f} s of training)")
    if repeats:
        text += (f"; {repeats} proposal(s) repeated an earlier candidate and were answered from it (not counted "
                 f"in the budget)")
    return text
