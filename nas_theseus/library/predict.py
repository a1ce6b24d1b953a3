"""A candidate's predicted accuracy from its blocks' scores, and how far to trust it.

Additive, as Puzzle's: each block changes the guide's validation accuracy by what it changed alone, so a chain's
prediction is the guide's accuracy plus the sum of its blocks' changes (kept parts change nothing). Once the study
has converted enough candidates of the library (``MIN_CALIBRATION``), the prediction is calibrated on them by least
squares on two additive features, the summed accuracy change and the summed KL divergence, so the solver's
objective stays a sum over blocks. The trust figure is Kendall's tau between predicted and converted validation
accuracy: for the raw additive score, and leave-one-out for the calibrated one (each trial predicted by a fit
that did not see it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .library import BlockLibrary

MIN_CALIBRATION = 5  # converted candidates before the prediction is calibrated on them


@dataclass(frozen=True)
class Predictor:
    """predicted accuracy = intercept + w_accuracy x (summed accuracy change) + w_kl x (summed KL)."""

    intercept: float
    w_accuracy: float = 1.0
    w_kl: float = 0.0
    calibrated_on: int = 0  # converted candidates it was fit on (0: the raw additive score)
    tau_raw: float | None = None  # Kendall tau, raw additive prediction vs converted accuracy
    tau: float | None = None  # the same for the calibrated prediction, leave-one-out
    observed: int = 0  # converted candidates the taus are taken over

    @classmethod
    def additive(cls, library: BlockLibrary) -> Predictor:
        return cls(library.guide_accuracy)

    def values(self, library: BlockLibrary) -> list[float]:
        """Each option's additive share of the prediction (the solver's values; the intercept is left out)."""
        return [self.w_accuracy * f[0] + self.w_kl * f[1] for f in option_features(library)]

    def predict(self, library: BlockLibrary, chain: Sequence[int]) -> float:
        values = self.values(library)
        return self.intercept + sum(values[i] for i in chain)

    def describe(self) -> str:
        fit = (f"calibrated on {self.calibrated_on} converted candidates" if self.calibrated_on
               else "additive (not calibrated)")
        taus = [f"tau {t:+.2f} ({what})" for t, what in ((self.tau_raw, "raw"), (self.tau, "calibrated, "
                                                                                           "leave-one-out"))
                if t is not None]
        over = f" over {self.observed} converted candidates" if taus else " (no converted candidate to check it)"
        return f"prediction {fit}; {', '.join(taus) if taus else 'rank agreement unknown'}{over}"


def option_features(library: BlockLibrary) -> list[tuple[float, float]]:
    """(accuracy change, KL) of each option alone; (0, 0) for a kept part."""
    return [(0.0, 0.0) if o.score is None else (o.score.val_accuracy - library.guide_accuracy, o.score.kl)
            for o in library.options]


def calibrate(library: BlockLibrary, observed: Sequence[tuple[Sequence[int], float]]) -> Predictor:
    """The predictor for ``library`` given converted candidates ``(chain, validation accuracy)``."""
    raw = Predictor.additive(library)
    if len(observed) < 2:
        return raw
    features = option_features(library)
    x = np.array([[1.0, *np.sum([features[i] for i in chain], axis=0)] for chain, _ in observed])
    y = np.array([acc for _, acc in observed])
    tau_raw = _tau([raw.predict(library, chain) for chain, _ in observed], y)
    if len(observed) < MIN_CALIBRATION:
        return Predictor(raw.intercept, tau_raw=tau_raw, observed=len(observed))
    loo = [float(x[i] @ _fit(np.delete(x, i, 0), np.delete(y, i))) for i in range(len(y))]
    w = _fit(x, y)
    return Predictor(float(w[0]), float(w[1]), float(w[2]), len(y), tau_raw, _tau(loo, y), len(y))


def _fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with a small ridge (few points); a fit that would reward losing accuracy (w_accuracy < 0)
    is refit on the accuracy change alone, and where that too is negative the prediction is the mean."""
    ridge = 1e-6 * np.eye(x.shape[1])
    ridge[0, 0] = 0.0
    w = np.linalg.solve(x.T @ x + ridge, x.T @ y)
    if w[1] < 0:
        w = np.linalg.lstsq(x[:, :2], y, rcond=None)[0]
        w = np.array([w[0], w[1], 0.0]) if w[1] >= 0 else np.array([y.mean(), 0.0, 0.0])
    return w


def _tau(predicted, actual) -> float | None:
    from scipy.stats import kendalltau  # here: scipy costs every study process a second to import

    tau = kendalltau(predicted, actual).statistic
    return None if tau is None or np.isnan(tau) else float(tau)
