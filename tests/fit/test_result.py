"""`FitResult` is plain data: JSON round trips, and predictions from the saved draws."""

from __future__ import annotations

import json

import numpy as np

from scaling.fit import FitResult, loss_interval


def test_fit_result_round_trips_through_json(epoch_fit, tmp_path):
    path = tmp_path / "fit.json"
    text = epoch_fit.to_json(path)
    json.loads(text)  # strict JSON, no NaN
    back = FitResult.from_json(path)
    assert back.to_dict() == epoch_fit.to_dict()
    X = {"params_nonembed": np.array([7e10]), "tokens": np.array([1.4e12])}
    np.testing.assert_array_equal(back.predict("all", X), epoch_fit.predict("all", X))
    assert back.predict_draws("all", X).shape == (200, 1)


def test_prediction_interval_is_wider_than_the_curve_band(epoch_fit):
    X = {"params_nonembed": np.array([1e9, 7e10]), "tokens": np.array([2e10, 1.4e12])}
    iv = loss_interval(epoch_fit, "all", X, level=0.95)
    assert np.all(iv.low < iv.fit_low) and np.all(iv.fit_low < iv.prediction)
    assert np.all(iv.prediction < iv.fit_high) and np.all(iv.fit_high < iv.high)
    # Extrapolating past the largest fitted model (16B) is less certain than interpolating at 1B.
    widths = (iv.fit_high - iv.fit_low) / iv.prediction
    assert widths[1] > widths[0]
