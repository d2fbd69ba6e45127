"""The difference backtests (`scaling.fit.pair_suite`): which pairs of public runs are compared,
and how coverage is counted. The full run (a calibration per pair) is the benchmark's
(`python benchmarks/calibration.py --pairs`); here only what is cheap to prove."""

from __future__ import annotations

import numpy as np

from scaling.fit.pair_suite import PairResult, format_pairs, pair_coverage, pair_cases


def test_pairs_are_matched_held_out_runs_of_the_two_variants():
    cases = pair_cases()
    assert {c.family for c in cases} == {"gadre", "isoflops", "porian"} and len(cases) == 12
    for c in cases:
        assert c.pairs and c.fit_mask.sum() > 0
        for i, j in c.pairs:
            assert (c.data.group[i], c.data.group[j]) == ("a", "b")
            assert not c.fit_mask[i] and not c.fit_mask[j]  # both held out
            for k in ("params_nonembed", "tokens"):
                assert np.isclose(c.data.features[k][i], c.data.features[k][j], rtol=1e-5)
        assert set(c.data.subset(c.fit_mask).group) == {"a", "b"}  # both variants in the fitted part


def test_coverage_counts_differences_inside_their_interval_per_family():
    def result(family: str, actual: list[float], half: float) -> PairResult:
        a = np.array(actual)
        iv = {0.5: (np.full(a.size, -half), np.full(a.size, half))}
        return PairResult(f"{family}/x", family, a, iv, iv, 1.0)

    results = [result("gadre", [0.0, 0.2], 0.1), result("porian", [0.05, 0.05, 0.5, -0.5], 0.1)]
    cov = pair_coverage(results, levels=(0.5,))
    assert cov["gadre"][0.5] == 0.5 and cov["porian"][0.5] == 0.5 and cov["weighted"][0.5] == 0.5
    assert "calibrated" in format_pairs(results, levels=(0.5,))
