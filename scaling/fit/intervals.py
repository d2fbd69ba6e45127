"""Prediction intervals: fit uncertainty (bootstrap draws) plus residual noise.

Why both: a new run's loss differs from the law for two reasons, the law's parameters are
uncertain (the spread of the bootstrap refits) and single runs scatter around the law (the
fit's residuals). An interval from the bootstrap alone would claim a future run lands on the
curve; one from the residuals alone would ignore that extrapolation amplifies parameter
uncertainty. Each draw here takes one bootstrap curve and one residual drawn at random.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from numpy.typing import ArrayLike

from scaling.fit.result import FitResult


@dataclass(frozen=True)
class Interval:
    """Point prediction with a confidence band (curve only) and a prediction interval (a new run)."""

    prediction: np.ndarray
    fit_low: np.ndarray
    fit_high: np.ndarray
    low: np.ndarray
    high: np.ndarray
    level: float


def loss_interval(
    result: FitResult, group: str, X: Mapping[str, ArrayLike], level: float = 0.95, seed: int | None = None
) -> Interval:
    """Intervals for ``group``'s loss at ``X``. Without bootstrap draws the bands are NaN."""
    prediction = np.atleast_1d(result.predict(group, X))
    if result.n_bootstrap == 0:
        nan = np.full_like(prediction, np.nan)
        return Interval(prediction, nan, nan, nan, nan, level)
    draws = np.atleast_2d(result.predict_draws(group, X))
    tail = (1.0 - level) / 2.0
    # a resample whose refit failed (NaN) is left out rather than voiding the interval: refusing an
    # interval is `scaling.fit.degenerate.interval_refusals`' call, the same for every path
    with np.errstate(all="ignore"):
        fit_low, fit_high = np.nanquantile(draws, [tail, 1.0 - tail], axis=0)
    residuals = np.asarray(result.groups[group].residuals_log, dtype=float)
    rng = np.random.default_rng(result.settings.get("seed", 0) if seed is None else seed)
    noise = rng.choice(residuals, size=draws.shape, replace=True) if residuals.size else np.zeros_like(draws)
    with np.errstate(all="ignore"):
        low, high = np.nanquantile(draws * np.exp(noise), [tail, 1.0 - tail], axis=0)
    return Interval(prediction, fit_low, fit_high, low, high, level)
