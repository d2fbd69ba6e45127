"""The measured MC-vs-base comparison that leads "What the ladder resolved", and the calibrated
width of far targets withheld as unpredictable. Reports are built by hand (no training), so every
number the text states is known from the points and the seed noise set here."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from scaling.fit.degenerate import diagnose_unpredictable
from scaling.report.document import Heading, Table, build_document
from scaling.report.in_range import measured_differences, measured_sentence, verdict_clause
from scaling.report.schema import Report, TargetRow
from scaling.report.verdict import _far_width_text
from tests.report.factories import sample_report

SEED_STD = 0.005  # one run's seed noise, as a share of the loss (log units)


def _with_noise(report: Report, std: float = SEED_STD, source: str = "checkpoints", dof: int = 20) -> Report:
    report.settings["calibration"] = {"groups": {s: {"seed_var": std * std, "seed_dof": dof, "seed_source": source}
                                                 for s in report.series}}
    return report


def _top(report: Report, series: str) -> float:
    label = max({p.size_label for p in report.points if p.series == series},
                key=lambda lab: max(p.params_nonembed for p in report.points if p.size_label == lab))
    return next(p.val_loss for p in report.points if p.series == series and p.size_label == label)


def _set_top(report: Report, series: str, loss: float) -> None:
    top = max(p.params_nonembed for p in report.points if p.series == series)
    for p in report.points:
        if p.series == series and p.params_nonembed == top:
            p.val_loss = loss


def test_a_difference_far_beyond_seed_noise_is_resolved_with_its_interval_and_noise_margin():
    report = _with_noise(sample_report(n_sizes=3))
    base = _top(report, "swla")
    _set_top(report, "swla+grm@C32", base + 0.30)  # trails its base by 0.3 nats
    rows = {m.series: m for m in measured_differences(report)}
    assert set(rows) == {"swla+grm@C32", "swla+grm@C64"}  # MC series against their base; not the Transformer
    m = rows["swla+grm@C32"]
    assert m.base == "swla" and m.difference == pytest.approx(0.30)
    # the interval is seed noise alone, at the family-wise level over the 2 MC series (Bonferroni)
    level = 1 - 0.05 / 2
    sd = math.sqrt(((base + 0.3) * SEED_STD) ** 2 + (base * SEED_STD) ** 2)
    half = stats.t.ppf(0.5 + level / 2, 20) * sd
    assert (m.low, m.high) == pytest.approx((0.30 - half, 0.30 + half))
    assert m.resolved and m.noise_tolerance == pytest.approx(0.30 / half)
    assert m.seeds_to_resolve is None
    text = measured_sentence(report)
    assert "swla+grm@C32 minus swla" in text and "resolved: swla+grm@C32 trails swla" in text
    assert f"more than {0.30 / half:.1f}x this estimate" in text and "late checkpoints" in text
    assert "trails swla by 0.300 nats" in verdict_clause(report)


def test_a_difference_within_seed_noise_is_not_resolved_and_says_how_many_seeds_would_resolve_it():
    report = _with_noise(sample_report(n_sizes=3))
    base = _top(report, "swla")
    _set_top(report, "swla+grm@C64", base - 0.04)
    m = {m.series: m for m in measured_differences(report)}["swla+grm@C64"]
    assert not m.resolved and m.low < 0 < m.high
    need = m.seeds_to_resolve
    # with `need` seeds per series the interval (1/sqrt(seeds)) is narrower than the difference; with one fewer not
    half = (m.high - m.low) / 2
    assert half / math.sqrt(need) < abs(m.difference) <= half / math.sqrt(need - 1)
    assert 2 <= need <= 64 and f"{need} seeds per series at {m.size_label} would resolve" in measured_sentence(report)
    _set_top(report, "swla+grm@C64", base - 0.001)  # too small to chase with seeds: said so, no count given
    assert "needs more than 64 seeds per series" in measured_sentence(report)


def test_without_measured_seed_noise_nothing_is_claimed():
    report = _with_noise(sample_report(n_sizes=3), std=0.0, source=None, dof=0)
    rows = measured_differences(report)
    assert rows and all(m.low is None and not m.resolved for m in rows)
    assert "not tested" in measured_sentence(report) and verdict_clause(report) == ""


def test_the_measured_comparison_leads_the_in_range_section_of_the_document():
    report = _with_noise(sample_report(n_sizes=3))
    blocks = build_document(report)
    heading = next(i for i, b in enumerate(blocks) if isinstance(b, Heading) and b.text.startswith("What the ladder"))
    table = next(b for b in blocks[heading:] if isinstance(b, Table))
    assert table.headers[:3] == ["series", "base", "size"] and "noise margin or seeds needed" in table.headers
    assert {row[0] for row in table.rows} == {"swla+grm@C32", "swla+grm@C64"}


def test_far_targets_withheld_as_unpredictable_keep_their_calibrated_width():
    report = _with_noise(sample_report(n_sizes=3))
    far = "params_nonembed=7e10"
    reason = "the predicted losses at params_nonembed=7e10 are not predictable from these runs"
    report.targets = [TargetRow(far, s, 7e10, None, None, math.nan, 0.01, 5.0, 0.01 * (i + 1), 5.0, {}, reason)
                      for i, s in enumerate(report.series)]
    report.versus = []
    _, found = diagnose_unpredictable({far: {t.series: (t.pred_low, t.pred_high) for t in report.targets}})
    report.settings["unidentified"] = [f.to_dict() for f in found]
    text = _far_width_text(report)
    assert "transformer 0.010 to 5.000 (500x)" in text and "swla 0.020 to 5.000 (250x)" in text
    tables = [b for b in build_document(report) if isinstance(b, Table) and "high / low" in b.headers]
    assert len(tables) == 1 and len(tables[0].rows) == len(report.series)


def test_a_crossing_outside_the_interval_of_the_draws_that_cross_is_called_unsettled():
    from scaling.report.schema import CrossoverRow
    from scaling.report.verdict import _crossing_sentence

    report = sample_report(n_sizes=3)
    series = next(s for s in report.series if s != report.baseline)
    # as measured in the quickstart: the averaged curves cross at 1.21M, the 69% of draws that cross
    # do so between 3.34K and 1.1M
    report.crossovers = [CrossoverRow(series, report.baseline, "params_nonembed", 1.21e6, 3.34e3, 1.1e6, 0.69,
                                      "curves cross")]
    text = _crossing_sentence(report, series)
    assert "at 1.21M parameters on the averaged curves; 69% of calibrated draws cross" in text
    assert "95% of those between 3.34K and 1.1M, which leaves out the averaged curves' crossing" in text
    report.crossovers[0].at = 5.0e5
    text = _crossing_sentence(report, series)
    assert text.endswith("95% of those between 3.34K and 1.1M.") and "not settled" not in text
