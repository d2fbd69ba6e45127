"""Functional forms: predictions, the log-sum-exp identity, grids and bounds."""

from __future__ import annotations

import numpy as np
import pytest

from scaling.fit import CHINCHILLA, get_law, power_law
from scaling.fit.layout import Layout


def test_chinchilla_predicts_its_formula_and_broadcasts_over_draws():
    params = {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28}
    n, d = np.array([1e8, 7e10]), np.array([2e9, 1.4e12])
    expected = 1.69 + 406.4 / n**0.34 + 410.7 / d**0.28
    np.testing.assert_allclose(CHINCHILLA.predict(params, {"params_nonembed": n, "tokens": d}), expected, rtol=1e-12)
    draws = {k: np.array([[v], [v * 1.01]]) for k, v in params.items()}
    assert CHINCHILLA.predict(draws, {"params_nonembed": n, "tokens": d}).shape == (2, 2)


def test_power_law_on_params_or_compute():
    law = power_law("flops")
    assert law.features == ("flops",) and law.param_names == ("E", "A", "alpha")
    assert law.predict({"E": 2.0, "A": 10.0, "alpha": 0.05}, {"flops": np.array([1e20])})[0] == pytest.approx(2.0 + 10.0 * 1e20**-0.05)
    assert get_law("power").features == ("params_nonembed",)
    with pytest.raises(ValueError):
        power_law("tokens")
    with pytest.raises(ValueError):
        get_law("kaplan")


def test_hoffmann_grid_has_4500_starts():
    grid = CHINCHILLA.start_grid()
    assert grid.shape == (4500, 5)
    assert CHINCHILLA.fit_names == ("e", "a", "alpha", "b", "beta")
    assert set(grid[:, 0]) == {-1.0, -0.5, 0.0, 0.5, 1.0}
    assert set(grid[:, 1]) == set(grid[:, 3]) == {0.0, 5.0, 10.0, 15.0, 20.0, 25.0}
    assert set(grid[:, 2]) == set(grid[:, 4]) == {0.0, 0.5, 1.0, 1.5, 2.0}
    assert CHINCHILLA.bounds["alpha"][0] == 0.0 and CHINCHILLA.bounds["E"][1] > 5


def test_joint_layout_shares_e_and_centring_preserves_the_terms():
    layout = Layout(CHINCHILLA, ("grm", "transformer"), frozenset({"e"}))
    assert layout.n_params == 9 and layout.index("grm", "e") == layout.index("transformer", "e")
    n = np.array([1e7, 1e8, 1e9, 1e7])
    d = 20 * n
    group = np.array([0, 0, 1, 1])
    theta = np.array([0.5, 6.0, 0.3, 7.0, 0.35, 5.0, 0.25, 8.0, 0.4])  # e, then (a, alpha, b, beta) per group
    plain_designs, _ = layout.designs({"params_nonembed": n, "tokens": d}, group, {"params_nonembed": 0.0, "tokens": 0.0})
    centred, T = layout.designs({"params_nonembed": n, "tokens": d}, group, {"params_nonembed": 18.0, "tokens": 21.0})
    theta_c = np.linalg.solve(T, theta)
    for M, Mc in zip(plain_designs, centred):
        np.testing.assert_allclose(M @ theta, Mc @ theta_c, rtol=1e-12)
    with pytest.raises(ValueError):
        Layout(CHINCHILLA, ("a", "b"), frozenset({"a"}))  # a shared scale needs its exponent shared
