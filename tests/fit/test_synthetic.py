"""Data drawn from a known law: the estimator recovers it, and its bootstrap intervals cover
the truth about as often as they claim."""

from __future__ import annotations

import numpy as np
import pytest

from scaling.fit import CHINCHILLA, FitOptions, fit, make_fit_data, power_law
from scaling.fit.estimate import fit_many

from tests.fit.conftest import synthetic_design

TRUTH = {"E": 1.8, "A": 400.0, "alpha": 0.34, "B": 2000.0, "beta": 0.37}
# A few starts near and far from the truth: enough for 30-point synthetic draws.
SMALL_GRID = np.array([[0.5, 6.0, 0.3, 7.5, 0.3], [0.0, 5.0, 0.5, 10.0, 0.5], [1.0, 10.0, 0.5, 5.0, 0.5]])


def test_noise_free_data_recovers_the_law_exactly_from_hoffmanns_grid():
    X = synthetic_design()
    result = fit(make_fit_data(X, CHINCHILLA.predict(TRUTH, X)), CHINCHILLA)
    for name, value in TRUTH.items():
        assert result.groups["all"].params[name] == pytest.approx(value, rel=1e-4), name
    assert result.groups["all"].max_abs_rel_error < 1e-6


def test_power_law_on_compute_is_recovered():
    flops = np.geomspace(1e17, 1e22, 12)
    truth = {"E": 1.7, "A": 70.0, "alpha": 0.065}
    law = power_law("flops")
    loss = law.predict(truth, {"flops": flops}) * np.exp(np.random.default_rng(0).normal(0, 0.001, flops.size))
    result = fit(make_fit_data({"flops": flops}, loss), law, options=FitOptions(bootstrap=200))
    group = result.groups["all"]
    for name, value in truth.items():
        lo, hi = group.ci95[name]
        assert lo <= value <= hi, f"{name}: {value} not in [{lo}, {hi}]"
    assert group.params["alpha"] == pytest.approx(0.065, rel=0.1)


def test_ninety_percent_intervals_cover_the_truth_in_80_to_97_percent_of_200_draws():
    """200 seeded data sets (30 points, 0.2% log-normal noise), 200 resamples each.

    All draws share one design, so `fit_many` solves the 200 fits and 40,000 refits as two
    batched problems; each is the same estimator and bootstrap that `fit` runs.
    """
    X = synthetic_design()
    clean = CHINCHILLA.predict(TRUTH, X)
    rng = np.random.default_rng(20240601)
    datasets = [make_fit_data(X, clean * np.exp(rng.normal(0.0, 0.002, clean.size))) for _ in range(200)]
    results = fit_many(
        datasets, CHINCHILLA, options=FitOptions(bootstrap=200, seed=7, starts=SMALL_GRID, bootstrap_starts=1, n_workers=1)
    )
    coverage = {}
    for name, value in TRUTH.items():
        inside = [lo <= value <= hi for lo, hi in (r.param_interval("all", name, 0.90) for r in results)]
        coverage[name] = float(np.mean(inside))
    estimates = {k: float(np.median([r.groups["all"].params[k] for r in results])) for k in TRUTH}
    print(f"\n90% interval coverage over 200 draws: {coverage}\nmedian estimates: {estimates}")
    for name, value in TRUTH.items():
        assert 0.80 <= coverage[name] <= 0.97, f"{name}: coverage {coverage[name]:.3f}"
        assert estimates[name] == pytest.approx(value, rel=0.02), name


def test_fit_many_equals_separate_fits():
    X = synthetic_design()
    rng = np.random.default_rng(3)
    datasets = [make_fit_data(X, CHINCHILLA.predict(TRUTH, X) * np.exp(rng.normal(0, 0.003, 30))) for _ in range(3)]
    options = FitOptions(starts=SMALL_GRID)
    together = fit_many(datasets, CHINCHILLA, options=options)
    for data, joint in zip(datasets, together):
        alone = fit(data, CHINCHILLA, options=options)
        # Same optimum; parameters agree to the optimiser's tolerance (BLAS sums rows of
        # different-sized batches in different orders, ~1e-15, and the optimum is flat along A).
        assert joint.settings["fits"][0]["objective_huber"] == pytest.approx(alone.settings["fits"][0]["objective_huber"], rel=1e-9)
        for name in TRUTH:
            assert joint.groups["all"].params[name] == pytest.approx(alone.groups["all"].params[name], rel=1e-4)


def test_shared_e_joint_fit_recovers_each_architecture():
    X = synthetic_design()
    truths = {
        "grm": {"E": 1.7, "A": 300.0, "alpha": 0.30, "B": 1500.0, "beta": 0.35},
        "transformer": {"E": 1.7, "A": 600.0, "alpha": 0.38, "B": 2500.0, "beta": 0.33},
    }
    rng = np.random.default_rng(11)
    features = {k: np.concatenate([v, v]) for k, v in X.items()}
    loss = np.concatenate([CHINCHILLA.predict(t, X) for t in truths.values()]) * np.exp(rng.normal(0, 0.001, 60))
    group = np.repeat(list(truths), 30)
    joint = fit(make_fit_data(features, loss, group=group), CHINCHILLA, shared=["E"], options=FitOptions(bootstrap=100))
    assert joint.shared == ["E"]
    assert joint.groups["grm"].params["E"] == joint.groups["transformer"].params["E"]
    assert joint.groups["grm"].bootstrap["E"] == joint.groups["transformer"].bootstrap["E"]
    for g, truth in truths.items():
        for name, value in truth.items():
            assert joint.groups[g].params[name] == pytest.approx(value, rel=0.05), (g, name)
    separate = fit(make_fit_data(features, loss, group=group), CHINCHILLA)
    assert separate.groups["grm"].params["E"] != separate.groups["transformer"].params["E"]


def test_bootstrap_resamples_whole_runs_and_is_the_same_in_parallel():
    """Checkpoints of a run move together; 2 worker processes give the same draws as 1."""
    X = synthetic_design()
    loss = CHINCHILLA.predict(TRUTH, X) * np.exp(np.random.default_rng(5).normal(0, 0.003, 30))
    runs = np.repeat(np.arange(10), 3)  # three checkpoints per run
    data = make_fit_data(X, loss, unit=runs)
    one = fit(data, CHINCHILLA, options=FitOptions(bootstrap=40, seed=2, starts=SMALL_GRID, n_workers=1))
    two = fit(data, CHINCHILLA, options=FitOptions(bootstrap=40, seed=2, starts=SMALL_GRID, n_workers=2))
    assert one.settings["bootstrap_unit"].startswith("runs")
    for name in TRUTH:
        np.testing.assert_allclose(one.groups["all"].bootstrap[name], two.groups["all"].bootstrap[name], rtol=1e-10)
