"""The batched L-BFGS and the Huber log-sum-exp objective it minimises."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import huber as scipy_huber
from scipy.special import logsumexp

from scaling.fit import CHINCHILLA, make_fit_data
from scaling.fit.estimate import _build_problem
from scaling.fit.layout import Layout
from scaling.fit.lbfgs import CONVERGED_FTOL, CONVERGED_GTOL, minimize_batched
from scaling.fit.objective import HuberLSEObjective

from tests.fit.conftest import synthetic_design


def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # only a speed-up
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _rosenbrock(x: np.ndarray, rows: np.ndarray):
    a, b = x[:, 0], x[:, 1]
    f = (1 - a) ** 2 + 100 * (b - a**2) ** 2
    g = np.stack([-2 * (1 - a) - 400 * a * (b - a**2), 200 * (b - a**2)], axis=1)
    return f, g


def test_every_start_of_rosenbrock_reaches_the_minimum():
    starts = np.random.default_rng(0).uniform(-3, 3, size=(300, 2))
    result = minimize_batched(_rosenbrock, starts, gtol=1e-10, ftol=0)
    assert np.isin(result.status, [CONVERGED_GTOL, CONVERGED_FTOL]).all()
    np.testing.assert_allclose(result.x, 1.0, atol=1e-6)
    with _one_blas_thread():
        scipy_iters = [minimize(lambda x: _rosenbrock(x[None], None)[0][0], s, jac=lambda x: _rosenbrock(x[None], None)[1][0],
                                method="L-BFGS-B").nit for s in starts[:20]]
    assert np.median(result.n_iter[:20]) <= 2 * np.median(scipy_iters)  # an L-BFGS, not a slow crawl


def _problem(noise: float = 0.004, seed: int = 0):
    X = synthetic_design()
    truth = {"E": 1.8, "A": 400.0, "alpha": 0.34, "B": 2000.0, "beta": 0.37}
    loss = CHINCHILLA.predict(truth, X) * np.exp(np.random.default_rng(seed).normal(0, noise, 30))
    data = make_fit_data(X, loss)
    return data, _build_problem(data, np.log(loss)[None, :], Layout(CHINCHILLA, ("all",)))


def _hoffmann_objective(theta_plain: np.ndarray, data, delta: float) -> float:
    """Hoffmann et al.'s objective written directly with scipy, in plain coordinates."""
    e, a, alpha, b, beta = theta_plain
    log_n, log_d = np.log(data.features["params_nonembed"]), np.log(data.features["tokens"])
    pred = logsumexp([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)], axis=0)
    return float(np.sum(scipy_huber(delta, pred - np.log(data.loss))))


def _hoffmann_objective_and_grad(theta_plain: np.ndarray, data, delta: float) -> tuple[float, np.ndarray]:
    """The same objective with its analytic gradient, for a fast scipy reference."""
    e, a, alpha, b, beta = theta_plain
    log_n, log_d = np.log(data.features["params_nonembed"]), np.log(data.features["tokens"])
    u = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    pred = logsumexp(u, axis=0)
    r = pred - np.log(data.loss)
    w = np.exp(u - pred) * np.clip(r, -delta, delta)
    grad = np.array([w[2].sum(), w[0].sum(), -(w[0] * log_n).sum(), w[1].sum(), -(w[1] * log_d).sum()])
    return float(np.sum(scipy_huber(delta, r))), grad


def test_objective_value_is_hoffmanns_and_gradient_is_exact():
    data, problem = _problem()
    delta = 1e-3
    rng = np.random.default_rng(1)
    theta_plain = np.array([0.6, 6.0, 0.35, 7.6, 0.37]) + rng.normal(0, 0.05, (7, 5))
    theta_c = problem.to_centred(theta_plain)
    weights = rng.integers(0, 3, size=(7, 30)).astype(float)
    obj = HuberLSEObjective(problem.designs, problem.log_loss[0], delta)
    f, g = obj(theta_c, np.arange(7))
    for i in range(7):
        assert f[i] * delta == pytest.approx(_hoffmann_objective(theta_plain[i], data, delta), rel=1e-10)
    weighted = HuberLSEObjective(problem.designs, problem.log_loss[0], delta, weights=weights)
    fw, gw = weighted(theta_c, np.arange(7))
    h = 1e-6
    for j in range(5):
        step = np.zeros(5)
        step[j] = h
        up, _ = weighted(theta_c + step, np.arange(7))
        down, _ = weighted(theta_c - step, np.arange(7))
        np.testing.assert_allclose(gw[:, j], (up - down) / (2 * h), rtol=1e-4, atol=1e-6)


def test_far_out_parameters_fall_back_to_the_stable_path():
    """Exponents so large that a row's shifted terms all underflow still give finite values."""
    _, problem = _problem()
    obj = HuberLSEObjective(problem.designs, problem.log_loss[0], 1e-3)
    theta = problem.to_centred(np.array([[0.6, 6.0, -400.0, 7.6, 0.37], [0.6, 6.0, 0.35, 7.6, 0.37]]))
    f, g = obj(theta, np.arange(2))
    assert np.isfinite(f).all() and np.isfinite(g).all()
    assert obj.n_stable_rows >= 1


def test_rows_are_independent_runs():
    """A start solved inside a batch of 4,500 ends where it ends when solved alone.

    Not bit for bit: BLAS sums a row's gradient in a different order for different batch
    sizes (differences ~1e-15), which can shift the last few iterations of a run.
    """
    data, problem = _problem()
    starts = problem.to_centred(CHINCHILLA.start_grid())
    obj = HuberLSEObjective(problem.designs, problem.log_loss[0], 1e-3)
    batch = minimize_batched(obj, starts)
    picks = np.random.default_rng(2).choice(len(starts), 8, replace=False)
    for i in picks:
        alone = minimize_batched(obj, starts[i : i + 1])
        assert alone.f[0] == pytest.approx(batch.f[i], rel=1e-9)
        np.testing.assert_allclose(alone.x[0], batch.x[i], rtol=1e-4, atol=1e-4)
        assert abs(int(alone.n_iter[0]) - int(batch.n_iter[i])) <= 0.25 * batch.n_iter[i] + 2


def test_best_start_matches_scipy_lbfgsb_on_the_same_starts():
    data, problem = _problem(seed=4)
    delta = 1e-3
    grid = CHINCHILLA.start_grid()[::90]  # 50 of Hoffmann's starts
    obj = HuberLSEObjective(problem.designs, problem.log_loss[0], delta)
    ours = minimize_batched(obj, problem.to_centred(grid), ftol=1e-9)
    best_ours = problem.to_plain(ours.x[np.argmin(ours.f)])
    with _one_blas_thread():  # scipy's L-BFGS-B core calls BLAS on 5-vectors: threads only slow it
        scipy_runs = [minimize(_hoffmann_objective_and_grad, s, args=(data, delta), jac=True, method="L-BFGS-B") for s in grid]
    for run in scipy_runs[:5]:  # the analytic gradient is the gradient of the direct objective
        assert run.fun == pytest.approx(_hoffmann_objective(run.x, data, delta), rel=1e-12)
    best_scipy = min(scipy_runs, key=lambda r: r.fun)
    assert ours.f.min() * delta <= best_scipy.fun * (1 + 1e-6)
    np.testing.assert_allclose(best_ours, best_scipy.x, rtol=2e-3, atol=2e-3)
