"""Extrapolated comparisons: compute-optimal allocation (closed form and pluggable FLOPs),
targets, pairwise differences, win probabilities and crossovers."""

from __future__ import annotations

import numpy as np
import pytest

from scaling.fit import FitResult, GroupFit, compare
from scaling.fit.compare import DEFAULT_SIZES

GRM = {"E": 1.8, "A": 400.0, "alpha": 0.30, "B": 2000.0, "beta": 0.37}
TRANSFORMER = {"E": 1.8, "A": 1200.0, "alpha": 0.36, "B": 2000.0, "beta": 0.37}


def _result(
    groups: dict[str, dict[str, float]], n_draws: int = 0, jitter: float = 0.01, noise: float = 0.003, seed: int = 0
) -> FitResult:
    """A FitResult with the given parameters and, optionally, synthetic bootstrap draws."""
    rng = np.random.default_rng(seed)
    fits = {}
    for g, params in groups.items():
        gf = GroupFit(params=dict(params), n_points=30, residuals_log=list(rng.normal(0, noise, 30)))
        if n_draws:
            gf.bootstrap = {k: list(v * np.exp(rng.normal(0, jitter, n_draws))) for k, v in params.items()}
        fits[g] = gf
    return FitResult(law="chinchilla", law_input=None, formula="", groups=fits, settings={"seed": 0})


def _closed_form_n_opt(p: dict[str, float], flops: float) -> float:
    """Hoffmann et al.'s N_opt(C) = G (C/6)^(beta/(alpha+beta)) for C = 6 N D."""
    a, b = p["alpha"], p["beta"]
    g = (a * p["A"] / (b * p["B"])) ** (1 / (a + b))
    return g * (flops / 6) ** (b / (a + b))


def test_compute_optimal_frontier_matches_the_closed_form_for_6n():
    out = compare(_result({"grm": GRM}), sizes=(), budgets=(1e20, 1e23))
    for point in out.frontier:
        n_opt = _closed_form_n_opt(GRM, point.flops)
        assert point.params_nonembed.value == pytest.approx(n_opt, rel=1e-6)
        assert point.tokens.value == pytest.approx(point.flops / (6 * n_opt), rel=1e-6)


def test_flops_per_token_is_pluggable():
    """12 N per token is 6 N at half the budget; a fixed per-token cost shifts N_opt to the true
    minimum of L(N, C / f(N))."""
    doubled = compare(_result({"grm": GRM}), sizes=(), budgets=(1e22,), flops_per_token=lambda n: 12.0 * n)
    assert doubled.frontier[0].params_nonembed.value == pytest.approx(_closed_form_n_opt(GRM, 5e21), rel=1e-6)

    def with_overhead(n):  # e.g. a cache read cost that does not grow with N
        return 6.0 * np.asarray(n) + 2e9

    out = compare(_result({"grm": GRM}), sizes=(), budgets=(1e21,), flops_per_token=with_overhead)
    n_opt = out.frontier[0].params_nonembed.value
    grid = n_opt * np.exp(np.linspace(-0.3, 0.3, 61))
    losses = GRM["E"] + GRM["A"] * grid ** -GRM["alpha"] + GRM["B"] * (1e21 / with_overhead(grid)) ** -GRM["beta"]
    assert np.argmin(losses) == 30  # the reported N_opt is the minimum along the budget
    assert out.settings["flops_per_token"]["grm"] == "with_overhead"


def test_targets_default_to_1_3b_7b_70b_at_optimal_and_20_tokens_per_param():
    out = compare(_result({"grm": GRM, "transformer": TRANSFORMER}, n_draws=400, jitter=0.002, noise=0.02))
    sizes = {t.params_nonembed for t in out.targets if t.target.startswith("N=")}
    assert sizes == set(DEFAULT_SIZES)
    twenty = [t for t in out.targets if "20 tokens/param" in t.target]
    assert all(t.tokens == pytest.approx(20 * t.params_nonembed) for t in twenty)
    optimal = [t for t in out.targets if "compute-optimal tokens" in t.target and t.group == "grm"]
    for t in optimal:  # N is compute-optimal for its own budget
        assert _closed_form_n_opt(GRM, t.flops) == pytest.approx(t.params_nonembed, rel=1e-6)
    for t in out.targets:
        est = t.loss
        assert est.pred_low < est.low < est.value < est.high < est.pred_high  # run-to-run noise widens it


def test_crossover_and_win_probability():
    """GRM's curve is flatter: it wins at small N, the Transformer wins beyond N* = 3^(1/0.06)."""
    n_star = 3.0 ** (1 / 0.06)
    out = compare(_result({"grm": GRM, "transformer": TRANSFORMER}, n_draws=400, jitter=0.002), sizes=(1e7, 1e10))
    cross = next(c for c in out.crossovers if c.axis == "params_nonembed at 20 tokens/param")
    assert cross.at == pytest.approx(n_star, rel=0.01)
    assert cross.low < n_star < cross.high
    assert cross.fraction_of_draws_crossing > 0.9
    diffs = {d.target: d for d in out.differences}
    small, large = diffs["N=1e7 params, 20 tokens/param"], diffs["N=1e10 params, 20 tokens/param"]
    assert small.difference.value < 0 and small.p_a_better > 0.95  # grm better below N*
    assert large.difference.value > 0 and large.p_a_better < 0.05
    assert small.difference.low < small.difference.value < small.difference.high


def test_no_crossover_in_range_is_reported():
    worse = dict(GRM, A=GRM["A"] * 1.2)
    out = compare(_result({"grm": GRM, "worse": worse}, n_draws=100, jitter=0.001), sizes=(1e9,), budgets=(1e21,))
    for c in out.crossovers:
        assert c.at is None and c.status.startswith("no crossover in range")
    assert all(d.p_a_better == 1.0 for d in out.differences)
    assert out.to_dict()["crossovers"][0]["at"] is None


def test_compare_on_a_real_fit(epoch_fit):
    out = compare(epoch_fit, budgets=(5.76e23,))  # Chinchilla's own budget
    point = out.frontier[0]
    # With these parameters the compute-optimal size at Chinchilla's budget is tens of billions.
    assert 2e10 < point.params_nonembed.value < 2e11
    assert point.params_nonembed.low < point.params_nonembed.value < point.params_nonembed.high
