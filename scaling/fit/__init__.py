"""Scaling-law fitting: functional forms, a robust batched estimator with a run-level bootstrap,
backtests and extrapolated comparisons between architectures.

Typical use::

    from scaling.fit import CHINCHILLA, FitOptions, fit, make_fit_data, compare
    data = make_fit_data({"params_nonembed": N, "tokens": D}, loss, group=arch, unit=run_id)
    result = fit(data, CHINCHILLA, shared=["E"], options=FitOptions(bootstrap=1000))
    table = compare(result, flops_per_token={"grm": grm_flops, "transformer": six_n})
    # calibrated, form-averaged intervals (nested backtests; see scaling.fit.calibration)
    model = calibrate(data, CHINCHILLA, shared=["E"], options=FitOptions(bootstrap=200))
    table = compare(model.primary, calibration=model)
"""

from scaling.fit.backtest import BacktestResult, backtest, backtest_by_scale, evaluate_holdout, split_by_scale
from scaling.fit.calibration import ModelAverage, calibrate
from scaling.fit.compare import Comparison, compare, six_n
from scaling.fit.data import FitData, make_fit_data, validate_for_law
from scaling.fit.estimate import FitOptions, fit
from scaling.fit.intervals import loss_interval
from scaling.fit.laws import CHINCHILLA, LAW_NAMES, Law, get_law, power_law
from scaling.fit.result import FitResult, GroupFit

__all__ = [
    "BacktestResult",
    "CHINCHILLA",
    "ModelAverage",
    "calibrate",
    "Comparison",
    "FitData",
    "FitOptions",
    "FitResult",
    "GroupFit",
    "LAW_NAMES",
    "Law",
    "backtest",
    "backtest_by_scale",
    "compare",
    "evaluate_holdout",
    "fit",
    "get_law",
    "loss_interval",
    "make_fit_data",
    "power_law",
    "six_n",
    "split_by_scale",
    "validate_for_law",
]
