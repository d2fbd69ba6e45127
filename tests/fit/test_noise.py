"""Seed noise from intermediate checkpoints (`scaling.fit.noise`) and its place among the
calibration's variance components."""

from __future__ import annotations

import numpy as np
import pytest

from scaling.fit import CHINCHILLA, FitOptions, calibrate, make_fit_data
from scaling.fit.noise import (MIN_LATE_POINTS, SEED_TO_CHECKPOINT_SD_RATIO, CheckpointNoise, checkpoint_noise,
                               late_residuals)


def _curve(total_steps: int, final: float, sigma: float, rng: np.random.Generator, every: int = 10):
    """A smooth training curve (power law in steps with a learning-rate-decay bend at the end)
    ending on ``final``, each evaluation off it by a log factor ``sigma * N(0, 1)``."""
    steps = np.arange(every, total_steps + 1, every, dtype=float)
    frac = steps / total_steps
    smooth = final + 2.0 * (steps ** -0.4 - total_steps ** -0.4) + 0.03 * (1.0 - frac) ** 2
    return steps, smooth * np.exp(sigma * rng.standard_normal(steps.size))


def test_checkpoint_scatter_recovers_the_noise_put_in_and_nothing_without_it():
    rng = np.random.default_rng(0)
    sigma = 0.004
    runs = {f"r{i}": _curve(400 + 100 * i, 3.0 - 0.1 * i, sigma, rng) for i in range(8)}
    noisy = checkpoint_noise(runs, {k: "grm" for k in runs})["grm"]
    assert noisy.n_runs == 8 and noisy.n_skipped == 0 and noisy.dof > 100
    assert noisy.std == pytest.approx(sigma, rel=0.15)
    smooth = checkpoint_noise({k: _curve(400 + 100 * i, 3.0, 0.0, rng) for i, k in enumerate(runs)},
                              {k: "grm" for k in runs})["grm"]
    assert smooth.std < sigma / 10  # the smooth curve follows the bend: no noise is invented


def test_runs_with_too_few_late_evaluations_measure_nothing():
    rng = np.random.default_rng(1)
    steps, losses = _curve(100, 3.0, 0.01, rng, every=20)  # 5 evaluations, 3 in the second half
    assert late_residuals(steps, losses) is None
    out = checkpoint_noise({"a": (steps, losses), "b": _curve(500, 3.0, 0.01, rng), "c": (steps, losses)},
                           {"a": "x", "b": "y", "c": "x"})
    assert out["x"] == CheckpointNoise(0.0, 0, 0, 2)
    assert out["y"].dof > 0 and out["y"].n_runs == 1
    assert int((np.asarray(_curve(500, 3.0, 0, rng)[0]) >= 250).sum()) >= MIN_LATE_POINTS


def _grid(replicates: bool):
    """Chinchilla-shaped runs (3 budgets per size) with a known lack of fit; optionally each run twice."""
    n = np.repeat(np.geomspace(1e6, 6.4e7, 7), 3)
    d = n * np.tile([5.0, 20.0, 80.0], 7)
    rng = np.random.default_rng(2)
    loss = (1.7 + 400 * n ** -0.34 + 900 * d ** -0.28) * np.exp(0.01 * rng.standard_normal(n.size))
    unit = [f"run{i}" for i in range(n.size)]
    if replicates:
        n, d, unit = np.tile(n, 2), np.tile(d, 2), unit + [u + "-seed1" for u in unit]
        loss = np.concatenate([loss, loss * np.exp(0.002 * rng.standard_normal(loss.size))])
    return make_fit_data({"params_nonembed": n, "tokens": d}, loss, group=np.full(n.size, "a"), unit=np.array(unit))


def test_checkpoint_noise_scaled_by_the_seed_ratio_is_the_seed_component_and_replicates_win_over_it():
    opts = FitOptions(bootstrap=0)
    # a raw checkpoint scatter that, scaled to seed noise, is 0.4% (below the grid's 1% in-sample scatter)
    raw = 0.004 / SEED_TO_CHECKPOINT_SD_RATIO
    ckpt = {"a": CheckpointNoise(variance=raw ** 2, dof=40, n_runs=21, n_skipped=0)}
    assert ckpt["a"].seed_variance == pytest.approx((raw * SEED_TO_CHECKPOINT_SD_RATIO) ** 2)
    plain = calibrate(_grid(False), CHINCHILLA, options=opts, forms=("chinchilla",)).groups["a"]
    with_ckpt = calibrate(_grid(False), CHINCHILLA, options=opts, forms=("chinchilla",), checkpoint_noise=ckpt).groups["a"]
    assert plain.seed_source is None and plain.seed_var == 0.0 and plain.seed_proxy_ratio is None
    # the calibration carries the calibrated proxy, not the raw scatter, and says by what factor
    assert with_ckpt.seed_source == "checkpoints" and with_ckpt.seed_var == pytest.approx(0.004 ** 2)
    assert with_ckpt.seed_proxy_ratio == SEED_TO_CHECKPOINT_SD_RATIO
    # the in-sample scatter is split, not grown: lack of fit gives up what seed noise takes
    assert with_ckpt.lack_of_fit_var + with_ckpt.seed_var == pytest.approx(plain.lack_of_fit_var, rel=1e-9)
    reps = calibrate(_grid(True), CHINCHILLA, options=opts, forms=("chinchilla",), checkpoint_noise=ckpt).groups["a"]
    assert reps.seed_source == "replicates" and reps.seed_dof == 21 and reps.seed_proxy_ratio is None
    assert np.sqrt(reps.seed_var) == pytest.approx(0.002, rel=0.4)
