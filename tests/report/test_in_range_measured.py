"""The measured MC-vs-base comparison that leads "What the ladder resolved", and the calibrated
width of far targets withheld as unpredictable. Reports are built by hand (no training), so every
number the text states is known from the points and the seed noise set here."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from scipy import stats

from scaling.fit.degenerate import diagnose_unpredictable
from scaling.fit.noise import SEED_TO_CHECKPOINT_SD_RATIO
from scaling.report.document import Heading, Table, build_document
from scaling.models.ladder import format_count
from scaling.report.in_range import (in_range_section, measured_differences, measured_sentence, measured_text,
                                     verdict_clause)
from scaling.report.schema import Report, TargetRow
from scaling.report.verdict import _far_width_text, in_range_sentence
from tests.report.factories import sample_report

SEED_STD = 0.005  # one run's seed noise, as a share of the loss (log units)


def _with_noise(report: Report, std: float = SEED_STD, source: str | None = "checkpoints", dof: int = 20) -> Report:
    """Seed noise per series as the fit's calibration records it (a checkpoint source is already
    the proxy scaled by its ratio, and says by how much)."""
    ratio = SEED_TO_CHECKPOINT_SD_RATIO if source == "checkpoints" else None
    report.settings["calibration"] = {"groups": {s: {"seed_var": std * std, "seed_dof": dof, "seed_source": source,
                                                     "seed_proxy_ratio": ratio} for s in report.series}}
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
    assert table.headers[:3] == ["series", "base", "rung"] and "noise margin or seeds needed" in table.headers
    assert "compared at" in table.headers and "seed noise from" in table.headers
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


# ---------------------------------------------------------------------------- equal sizes and seed noise
MC = "swla+grm@C32"


def _pair_report(mc_factor: float = 1.0) -> Report:
    """The Transformer, swla and one MC series over 3 rungs (8K, 16K, 32K), with the MC series'
    every size scaled by ``mc_factor`` (a ladder that misses the rung's target for one series)."""
    report = _with_noise(sample_report(n_sizes=3, segment_sweep=False))
    for p in report.points:
        if p.series == MC:
            p.params_nonembed *= mc_factor
    return report


def _rung(report: Report, series: str, label: str) -> list:
    return [p for p in report.points if p.series == series and p.size_label == label]


def _replicate(report: Report, series: str, label: str, losses: dict[int, float]) -> None:
    """Replace ``series``' runs at ``label`` by one run per seed with the given losses."""
    template = _rung(report, series, label)[0]
    report.points = [p for p in report.points if not (p.series == series and p.size_label == label)]
    report.points += [replace(template, trial_id=f"{template.trial_id}-seed{s}", seed=s, val_loss=x)
                      for s, x in losses.items()]


def test_sizes_within_ten_percent_are_compared_directly_and_both_sizes_are_stated():
    report = _pair_report(mc_factor=1.0)  # MC 1.06x the Transformer's size, swla 1.02x: 3.9% apart
    m = next(m for m in measured_differences(report) if m.series == MC)
    mc, base = _rung(report, MC, "32K")[0], _rung(report, "swla", "32K")[0]
    assert m.method == "measured" and m.at_params is None and m.size_label == "32K"
    assert m.difference == pytest.approx(mc.val_loss - base.val_loss)
    assert (m.params_series, m.params_base) == (mc.params_nonembed, base.params_nonembed)
    sizes = f"{format_count(mc.params_nonembed)} and {format_count(base.params_nonembed)} parameters"
    assert f"{MC} minus swla at 32K ({sizes}, within 10%: measured)" in measured_sentence(report)
    # just inside the tolerance: still direct; just outside: read at a common size instead
    for factor, method in ((1.09 * 1.02 / 1.06, "measured"), (1.11 * 1.02 / 1.06, "interpolated")):
        m = next(m for m in measured_differences(_pair_report(factor)) if m.series == MC)
        assert m.method == method and (m.at_params is None) == (method == "measured")


def test_unequal_sizes_are_compared_at_a_common_size_interpolated_in_log_params_with_propagated_noise():
    report = _pair_report(mc_factor=1.3)  # MC 38% larger than swla at every rung
    (lo,), (hi,), (base,) = _rung(report, MC, "16K"), _rung(report, MC, "32K"), _rung(report, "swla", "32K")
    m = next(m for m in measured_differences(report) if m.series == MC)
    # the common size: the largest both trained (swla's top; MC reaches past it), MC read between its 16K and 32K rungs
    at = base.params_nonembed
    w = math.log(at / lo.params_nonembed) / math.log(hi.params_nonembed / lo.params_nonembed)
    assert 0 < w < 1 and m.method == "interpolated" and m.at_params == pytest.approx(at)
    mc_at = (1 - w) * lo.val_loss + w * hi.val_loss
    assert m.difference == pytest.approx(mc_at - base.val_loss)
    # seed noise (the calibration's, one run per rung) carried by the weights w and 1 - w
    sd = math.sqrt(SEED_STD ** 2 * (((1 - w) * lo.val_loss) ** 2 + (w * hi.val_loss) ** 2 + base.val_loss ** 2))
    half = stats.t.ppf(0.5 + (1 - 0.05) / 2, 20) * sd  # one MC series: the family is the plain 95%
    assert (m.low, m.high) == pytest.approx((m.difference - half, m.difference + half))
    text = measured_sentence(report)
    assert f"{MC} minus swla at {format_count(at)} parameters ({MC} interpolated between " \
           f"{format_count(lo.params_nonembed)} (16K) and {format_count(hi.params_nonembed)} (32K), swla measured" in text
    assert f"at {format_count(at)} parameters (interpolated)" in verdict_clause(report)
    table = next(b for b in in_range_section(report) if isinstance(b, Table))
    assert table.rows[0][4].startswith(f"{format_count(at)} parameters ({MC} interpolated")


def test_without_a_size_inside_both_trained_ranges_the_comparison_is_refused_not_extrapolated():
    report = _pair_report(mc_factor=1.3)
    report.points = [p for p in report.points if p.series != MC or p.size_label == "32K"]  # MC: one rung, above swla
    m = next(m for m in measured_differences(report) if m.series == MC)
    assert m.method == "not comparable" and m.difference is None and m.low is None and not m.resolved
    assert "not comparable at equal size" in measured_sentence(report)
    assert f"{MC} is not comparable with swla at equal size" in verdict_clause(report)


def test_the_verdict_compares_each_series_with_the_baseline_at_equal_size():
    report = _pair_report(mc_factor=1.3)
    transformer = _rung(report, "transformer", "32K")[0]
    text = in_range_sentence(report)
    # the Transformer is the smallest at the top rung: MC is read down to its size
    assert f"{MC} " in text and f"at {format_count(transformer.params_nonembed)} parameters ({MC} interpolated" in text
    assert "swla +" in text and "within 10%" in text  # swla is 2% from the Transformer: direct


def test_shared_replicate_seeds_give_a_paired_interval_from_their_own_spread():
    report = _with_noise(_pair_report(), std=1e-6)  # the calibration's noise is negligible: not what is used
    mc = {0: 2.30, 1: 2.36, 2: 2.21}
    base = {0: 2.25, 1: 2.33, 2: 2.20}
    _replicate(report, MC, "32K", mc)
    _replicate(report, "swla", "32K", base)
    m = next(m for m in measured_differences(report) if m.series == MC)
    diffs = [mc[s] - base[s] for s in (0, 1, 2)]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert m.noise_source == "paired seeds" and m.seeds == 3 and m.noise_dof == 2
    assert m.difference == pytest.approx(mean)
    assert (m.low, m.high) == pytest.approx((mean - half, mean + half))
    assert "paired: one seed initialises the base and MC models identically" in measured_sentence(report)


def test_unshared_replicate_seeds_give_an_interval_from_their_pooled_spread():
    report = _with_noise(_pair_report(), std=1e-6)
    mc = {0: 2.30, 1: 2.36, 2: 2.21}
    base = {3: 2.25, 4: 2.33, 5: 2.20, 6: 2.28}
    _replicate(report, MC, "32K", mc)
    _replicate(report, "swla", "32K", base)
    m = next(m for m in measured_differences(report) if m.series == MC)

    def ss(xs: list[float]) -> float:
        mu = sum(xs) / len(xs)
        return sum((x - mu) ** 2 for x in xs)

    pooled = (ss(list(mc.values())) + ss(list(base.values()))) / (2 + 3)
    half = stats.t.ppf(0.975, 5) * math.sqrt(pooled * (1 / 3 + 1 / 4))
    diff = sum(mc.values()) / 3 - sum(base.values()) / 4
    assert m.noise_source == "seed spread" and m.noise_dof == 5 and m.seeds == 3
    assert (m.low, m.high) == pytest.approx((diff - half, diff + half))
    assert "the spread of repeated seeds at the compared rungs, pooled over both series" in measured_sentence(report)


def test_an_interpolated_point_carries_the_pooled_spread_of_its_bracketing_rungs_with_their_seed_counts():
    report = _with_noise(_pair_report(mc_factor=1.3), std=1e-6)
    top, b0 = _rung(report, MC, "32K")[0].val_loss, _rung(report, "swla", "32K")[0].val_loss
    mc = {0: top + 0.02, 1: top - 0.03, 2: top + 0.05}
    base = {0: b0, 1: b0 + 0.04, 2: b0 - 0.05}
    _replicate(report, MC, "32K", mc)
    _replicate(report, "swla", "32K", base)  # MC's 16K rung keeps its one run (no seed): not paired
    (lo,), hi, b = _rung(report, MC, "16K"), _rung(report, MC, "32K"), _rung(report, "swla", "32K")
    m = next(m for m in measured_differences(report) if m.series == MC)
    w = math.log(b[0].params_nonembed / lo.params_nonembed) / math.log(hi[0].params_nonembed / lo.params_nonembed)

    def ss(xs) -> float:  # noqa: ANN001
        xs = list(xs)
        mu = sum(xs) / len(xs)
        return sum((x - mu) ** 2 for x in xs)

    pooled = (ss(mc.values()) + ss(base.values())) / 4
    var = pooled * ((1 - w) ** 2 / 1 + w ** 2 / 3 + 1 / 3)  # the 16K run alone, the 32K means of 3 seeds
    diff = (1 - w) * lo.val_loss + w * sum(mc.values()) / 3 - sum(base.values()) / 3
    half = stats.t.ppf(0.975, 4) * math.sqrt(var)
    assert m.noise_source == "seed spread" and m.method == "interpolated" and m.seeds == 1
    assert m.rungs == ("16K", "32K")
    assert m.difference == pytest.approx(diff) and (m.low, m.high) == pytest.approx((diff - half, diff + half))


def test_one_seed_uses_the_checkpoint_proxy_scaled_by_the_seed_ratio_from_the_calibration():
    """End to end from the fit: the calibration scales the raw checkpoint scatter by
    SEED_TO_CHECKPOINT_SD_RATIO, and the measured interval and its text use that."""
    from scaling.fit.calibration import calibrate
    from scaling.fit.estimate import FitOptions
    from scaling.fit.laws import get_law
    from scaling.fit.noise import CheckpointNoise
    from scaling.report.analysis import _fit_data

    report = sample_report(n_sizes=4, segment_sweep=False)
    raw = 0.002
    law = get_law("power", "params_nonembed")
    model = calibrate(_fit_data(report.points, law), law, options=FitOptions(bootstrap=0), forms=("power",),
                      checkpoint_noise={s: CheckpointNoise(raw ** 2, 30, 4, 0) for s in report.series})
    report.settings["calibration"] = model.summary()
    m = next(m for m in measured_differences(report) if m.series == MC)
    (mc,), (base,) = _rung(report, MC, "64K"), _rung(report, "swla", "64K")
    seed = raw * SEED_TO_CHECKPOINT_SD_RATIO  # one run's seed noise, log units
    half = stats.t.ppf(0.975, 30) * seed * math.hypot(mc.val_loss, base.val_loss)
    assert m.noise_source == "checkpoints" and m.proxy_ratio == SEED_TO_CHECKPOINT_SD_RATIO
    assert (m.high - m.low) / 2 == pytest.approx(half)
    assert m.noise_share == pytest.approx(seed)
    text = measured_sentence(report)
    assert (f"the scatter of late checkpoints times {SEED_TO_CHECKPOINT_SD_RATIO:g} (a proxy calibrated against "
            "repeated seeds") in text


def test_the_terminal_summary_states_the_size_each_comparison_is_made_at():
    import io

    from rich.console import Console

    from scaling.cli.report import print_report_summary

    report = _pair_report(mc_factor=1.3)
    at = format_count(_rung(report, "swla", "32K")[0].params_nonembed)
    out = io.StringIO()
    print_report_summary(Console(file=out, width=400), report,
                         type("Files", (), {"uri": lambda self, n: n, "run_id": None})())
    assert f"{MC} minus swla at {at} parameters ({MC} interpolated between" in out.getvalue()


def test_points_carry_their_trials_seed_through_the_results_and_report_json(tmp_path):
    from scaling.report.inputs import load_study, select_points
    from tests.report.studies import write_study

    store = write_study(tmp_path, "seeded")
    trials = load_study(store).trials
    points, _ = select_points(load_study(store))
    recorded = dict(zip(trials["trial_id"], trials["seed"]))
    assert points and all(p.seed is not None and p.seed == int(recorded[p.trial_id]) for p in points)
    report = _pair_report()
    _replicate(report, MC, "32K", {0: 2.3, 1: 2.4})
    again = Report.from_json(report.to_json())
    assert sorted(p.seed for p in again.points if p.series == MC and p.size_label == "32K") == [0, 1]
