"""The drift random effect (`scaling.fit.drift`) and the leave-one-family-out machinery
(`scaling.fit.lofo`) on synthetic errors: no fitting, so each check is exact and fast."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from scaling.fit import drift, lofo
from scaling.fit.drift import K_GRID, CalibrationConstants, DriftPrior, Shift


def test_shift_likelihood_is_the_multivariate_normal():
    """The Woodbury form equals log N(r; 0, diag(v) + tau^2 b b' + k^2 a a') up to a constant in k."""
    rng = np.random.default_rng(0)
    r, a, v = rng.normal(0, 0.02, 5), np.array([0.0, 0.1, 0.2, 0.3, 0.4]), rng.uniform(1e-4, 4e-4, 5)
    shift = Shift.of(r, a, v)
    tau, ks = 0.01, np.array([0.0, 0.05, 0.3, 1.0])
    ours = drift.shift_loglik(shift, tau, ks)
    direct = np.array([stats.multivariate_normal(np.zeros(5), np.diag(v) + tau ** 2 * np.outer(shift.b, shift.b)
                                                 + k * k * np.outer(a, a)).logpdf(r) for k in ks])
    assert np.allclose(ours - ours[0], direct - direct[0], atol=1e-9)


def test_mixture_halfwidth_is_each_levels_own_quantile():
    """One drift scale: the normal quantile. A spread of scales: heavier tails, so the 95% interval
    is more than the 50% one times the normal ratio 1.96 / 0.674 (a t-scaling could not say that)."""
    point = np.zeros_like(K_GRID)
    point[np.searchsorted(K_GRID, 0.1)] = 1.0
    k = K_GRID[np.searchsorted(K_GRID, 0.1)]
    v0, a = np.array([1e-4]), np.array([0.5])
    for level in (0.5, 0.8, 0.95):
        h = drift.mixture_halfwidth(point, v0, a, level)[0]
        assert h == pytest.approx(stats.norm.ppf(0.5 + level / 2) * math.sqrt(1e-4 + (k * 0.5) ** 2), rel=1e-6)
    wide = DriftPrior(math.log(0.05), 1.2).weights()
    h50, h95 = (drift.mixture_halfwidth(wide, v0, a, lv)[0] for lv in (0.5, 0.95))
    assert h95 / h50 > 1.2 * stats.norm.ppf(0.975) / stats.norm.ppf(0.75)
    # and the mixture's coverage is what it says (Monte Carlo)
    rng = np.random.default_rng(1)
    ks = drift.sample_k(wide, 200_000, rng)
    draws = rng.normal(0, np.sqrt(1e-4 + (ks * 0.5) ** 2))
    assert np.mean(np.abs(draws) <= h95) == pytest.approx(0.95, abs=0.003)


def test_posterior_weighs_own_evidence_against_the_suite():
    prior = DriftPrior(math.log(0.03), 0.8)
    assert np.allclose(drift.posterior(prior, [], 1.0), prior.weights())
    # three nested splits that each drifted by ~0.3 per decade at one decade out
    shifts = [Shift.of([0.3 * s * 0.5], [0.5], 1e-5) for s in (1.0, -1.1, 0.9)]
    full, tempered, ignored = (drift.posterior(prior, shifts, t) for t in (1.0, 0.25, 0.0))
    med = [K_GRID[np.searchsorted(np.cumsum(w), 0.5)] for w in (prior.weights(), tempered, full)]
    assert med[0] < med[1] < med[2] and med[2] > 0.1  # more weight on its own evidence: nearer 0.3
    assert np.allclose(ignored, prior.weights())


def test_fit_prior_recovers_the_distribution_of_drift_scales():
    """60 studies whose held-out rung drifted with k ~ lognormal(median 0.08, log sd 0.7)."""
    rng = np.random.default_rng(2)
    studies = []
    for _ in range(60):
        k = math.exp(rng.normal(math.log(0.08), 0.7))
        a = np.full(4, 0.6)
        r = k * a * rng.standard_normal() + rng.normal(0, 0.002, 4)
        studies.append([Shift.of(r, a, 0.002 ** 2)])
    fitted = drift.fit_prior(studies, fit_shift=False)
    assert 0.04 < fitted.median < 0.16 and 0.3 < fitted.sigma < 1.3


def test_constants_round_trip_and_level_factors(tmp_path):
    c = CalibrationConstants(DriftPrior(-3.0, 0.7, 0.004), 0.5, {0.5: 0.9, 0.8: 1.0, 0.9: 1.1, 0.95: 1.2}, 0.5,
                             {"families": ["a", "b"]})
    back = drift.load_constants(drift.save_constants(c, tmp_path / "c.json"))
    assert back == c
    assert c.scale(0.9) == pytest.approx(1.1) and 1.1 < c.scale(0.93) < 1.2 and c.scale(0.99) == pytest.approx(1.2)


def _family(name: str, k: float, n_cases: int, rng: np.random.Generator, noise: float = 0.003) -> list[lofo.Record]:
    out = []
    for i in range(n_cases):
        a = np.full(5, 0.3)
        r = k * a * rng.standard_normal() + rng.normal(0, noise, 5)
        nested = [Shift.of([k * 0.2 * rng.standard_normal()], [0.2], noise ** 2) for _ in range(3)]
        out.append(lofo.Record(f"{name}/{i}", name, np.full(5, 3.0) * np.exp(r), r, a, np.full(5, noise ** 2), nested))
    return out


def test_leave_one_family_out_never_uses_the_family_it_scores(monkeypatch):
    """Family F's scores come from constants chosen on the others: blowing up F's own errors
    changes its coverage but not one constant it was scored with."""
    monkeypatch.setattr(lofo, "TEMPER_GRID", (0.0, 1.0))  # two values keep the test short; the logic is the same
    rng = np.random.default_rng(3)
    recs = [r for name, k in (("a", 0.05), ("b", 0.1), ("d", 0.2)) for r in _family(name, k, 2, rng)]
    scores = {s.family: s for s in lofo.leave_one_family_out({1.0: recs})}
    assert set(scores) == {"a", "b", "d"}
    wild = [lofo.Record(r.key, r.family, r.actual * np.exp(9 * r.r), 10 * r.r, r.a, r.v0, r.nested) if r.family == "d"
            else r for r in recs]
    again = {s.family: s for s in lofo.leave_one_family_out({1.0: wild})}
    assert again["d"].constants == scores["d"].constants
    assert again["d"].score[0.95] > scores["d"].score[0.95]  # its own errors did count in its score
    assert again["a"].constants != scores["a"].constants  # the others did see d
    for s in scores.values():
        assert set(s.coverage) == set(drift.LEVELS) and all(0 <= c <= 1 for c in s.coverage.values())
        assert s.median_rel_width[0.5] < s.median_rel_width[0.95]


def test_pooled_row_weighs_points_where_weighted_weighs_families():
    """The LOFO table's two summaries: 'weighted' averages the families, 'pooled' every held-out point."""
    rng = np.random.default_rng(5)
    small, large = _family("a", 0.02, 1, rng), _family("b", 0.3, 3, rng)  # 5 and 15 points
    scores = [lofo.score_family(recs, drift.FALLBACK) for recs in (small, large)]
    p = lofo.pooled(scores)
    for lv in drift.LEVELS:
        a, b = scores[0].coverage[lv], scores[1].coverage[lv]
        assert p["coverage"][lv] == pytest.approx((5 * a + 15 * b) / 20)
        assert p["score"][lv] == pytest.approx((5 * scores[0].score[lv] + 15 * scores[1].score[lv]) / 20)
    table = lofo.format_scores(scores, "t").splitlines()
    assert table[-3].startswith("weighted") and table[-2].startswith("pooled")
