"""Backtests: fit the smaller runs, predict the larger ones, and say how far off it was.

Why: an extrapolated comparison is only as good as the law's record at extrapolating. Holding
out the largest runs (by compute or by size) and predicting them is the honest check, and a
prediction interval that misses the held-out points says the intervals are too narrow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from scaling.errors import UserInputError
from scaling.fit.calibration import ModelAverage
from scaling.fit.data import FitData, check_finite_positive
from scaling.fit.degenerate import Finding, diagnose_fit, interval_refusals
from scaling.fit.estimate import FitOptions, Progress, fit
from scaling.fit.intervals import loss_interval
from scaling.fit.laws import Law
from scaling.fit.result import FitResult


@dataclass
class HoldoutPoint:
    """One held-out run: inputs, actual loss, prediction and its interval."""

    group: str
    inputs: dict[str, float]
    actual: float
    prediction: float
    low: float | None
    high: float | None
    rel_error: float
    in_interval: bool | None


#: What each kind of prediction interval is called, in every table and JSON field that shows one.
CALIBRATED = "calibrated"
UNCALIBRATED = "uncalibrated (plain bootstrap)"


@dataclass
class GroupBacktest:
    """One group's held-out errors: mean and max of |prediction / actual - 1|, interval coverage."""

    n_fit: int
    n_holdout: int
    mean_abs_rel_error: float
    max_abs_rel_error: float
    coverage: float | None
    level: float
    points: list[HoldoutPoint] = field(default_factory=list)
    #: `CALIBRATED` or `UNCALIBRATED`: which intervals ``low``/``high`` are
    interval_kind: str = UNCALIBRATED
    #: why no interval is given (the fit is not identified, `scaling.fit.degenerate.interval_refusals`)
    refused: str | None = None

    def to_dict(self) -> dict:
        return {
            "n_fit": self.n_fit,
            "n_holdout": self.n_holdout,
            "mean_abs_rel_error": self.mean_abs_rel_error,
            "max_abs_rel_error": self.max_abs_rel_error,
            "interval_level": self.level,
            "interval_kind": self.interval_kind,
            "interval_refused": self.refused,
            "coverage": self.coverage,
            "points": [p.__dict__ for p in self.points],
        }


@dataclass
class BacktestResult:
    fit: FitResult
    groups: dict[str, GroupBacktest]
    split: str


def evaluate_holdout(
    result: FitResult, holdout: FitData, level: float = 0.95, calibration: ModelAverage | None = None,
    findings: Iterable[Finding | dict] | None = None,
) -> dict[str, GroupBacktest]:
    """Predict every held-out point with ``result`` and score the predictions per group; with a
    ``calibration`` of the same fit, the predictions and intervals are its calibrated ones.

    ``findings`` (`scaling.fit.degenerate.diagnose_fit` of ``result`` on its fitted data; without
    them, of ``result`` alone): a group whose fit they leave unidentified gets its prediction but
    no interval, with the reason, whichever interval was asked for."""
    law = result.law_obj
    check_finite_positive(holdout, law)
    refusals = interval_refusals(diagnose_fit(result) if findings is None else findings)
    out: dict[str, GroupBacktest] = {}
    for g in holdout.groups:
        if g not in result.groups:
            raise UserInputError(
                "--predict-where", f"held-out group {g!r} has no fitted points",
                "make sure every group to predict also has points in the fitted part",
            )
        sub = holdout.of_group(g)
        X = {k: sub.features[k] for k in law.features}
        if calibration is not None:
            pred, low, high = calibration.interval(g, dict(sub.features), level)
        else:
            iv = loss_interval(result, g, X, level)
            pred, low, high = iv.prediction, iv.low, iv.high
        refused = refusals.get(g) or refusals.get("all")
        if refused:
            low = high = np.full_like(pred, np.nan)
        rel = pred / sub.loss - 1.0
        has_iv = bool(np.isfinite(low).all())
        inside = (sub.loss >= low) & (sub.loss <= high)
        points = [
            HoldoutPoint(
                group=g,
                inputs={k: float(v[i]) for k, v in sub.features.items()},
                actual=float(sub.loss[i]),
                prediction=float(pred[i]),
                low=float(low[i]) if has_iv else None,
                high=float(high[i]) if has_iv else None,
                rel_error=float(rel[i]),
                in_interval=bool(inside[i]) if has_iv else None,
            )
            for i in range(sub.n_points)
        ]
        out[g] = GroupBacktest(
            n_fit=result.groups[g].n_points,
            n_holdout=sub.n_points,
            mean_abs_rel_error=float(np.mean(np.abs(rel))),
            max_abs_rel_error=float(np.max(np.abs(rel))),
            coverage=float(np.mean(inside)) if has_iv else None,
            level=level,
            points=points,
            interval_kind=CALIBRATED if calibration is not None else UNCALIBRATED,
            refused=refused,
        )
    return out


def split_by_scale(
    data: FitData, by: str = "flops", threshold: float | None = None, fit_fraction: float = 0.75
) -> tuple[np.ndarray, np.ndarray, str]:
    """Masks (fit, holdout): points below ``threshold`` of ``by`` are fitted, the rest predicted.

    Without a threshold, the smallest ``fit_fraction`` of distinct ``by`` values are fitted.
    ``by`` is ``flops`` (compute) or ``params_nonembed`` (size).
    """
    if by not in data.features:
        raise UserInputError("by", f"the data has no {by!r} values", f"split by one of {sorted(data.features)}")
    values = data.features[by]
    if threshold is None:
        distinct = np.unique(values)
        threshold = float(distinct[min(len(distinct) - 1, max(1, int(round(fit_fraction * len(distinct)))))])
    fit_mask = values < threshold
    return fit_mask, ~fit_mask, f"fit {by} < {threshold:g}, predict {by} >= {threshold:g}"


def backtest(
    data: FitData,
    law: Law,
    fit_mask: np.ndarray,
    holdout_mask: np.ndarray,
    *,
    shared: Sequence[str] = (),
    options: FitOptions | None = None,
    level: float = 0.95,
    split: str = "",
    progress: Progress | None = None,
) -> BacktestResult:
    """Fit on ``fit_mask`` points, predict ``holdout_mask`` points."""
    if not np.any(holdout_mask):
        raise UserInputError("--predict-where", "no points are selected to predict", "loosen the expression")
    result = fit(data.subset(fit_mask), law, shared=shared, options=options, progress=progress)
    return BacktestResult(result, evaluate_holdout(result, data.subset(holdout_mask), level), split)


def backtest_by_scale(
    data: FitData,
    law: Law,
    by: str = "flops",
    threshold: float | None = None,
    *,
    fit_fraction: float = 0.75,
    shared: Sequence[str] = (),
    options: FitOptions | None = None,
    level: float = 0.95,
    progress: Progress | None = None,
) -> BacktestResult:
    """Fit the smaller part (by compute or size), predict the larger part."""
    fit_mask, holdout_mask, split = split_by_scale(data, by, threshold, fit_fraction)
    return backtest(
        data, law, fit_mask, holdout_mask, shared=shared, options=options, level=level, split=split, progress=progress
    )
