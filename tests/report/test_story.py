"""One story (issue 24): a fitted law that misses a measured point at a trained size is flagged there
and the measured result leads the headline; a law that does not describe its runs is labelled; the
shared floor is described by one caveat written from one set of facts; the headline has at most five
sentences and one confidence level."""

from __future__ import annotations

import re

import pytest

from scaling.report.analysis import ReportOptions, build_report
from scaling.report.document import DETAILS_HEADING, HEADLINE_HEADING, Heading, build_document
from scaling.report.inputs import load_study
from scaling.report.render import to_markdown
from scaling.report.schema import Report
from scaling.report.headline import headline
from scaling.report.story import fit_misses, floor_caveat, law_misfits
from scaling.report.verdict import caveats_for
from tests.report.factories import on_the_shared_floor, sample_report
from tests.report.studies import power_loss, write_study

MISSED = "swla+grm@C32"


def _missed_top_rung(series: str, flops: float, tokens: float, params: float) -> float:
    """The known law, except that MISSED's largest rung (128K) lands 10% below it: a point a single
    power law through every size cannot follow, as the quickstart's SWLA at 48K."""
    return power_loss(series, flops, tokens, params) * (0.9 if series == MISSED and params > 100e3 else 1.0)


def _study_report(tmp_path, loss, **extra) -> Report:  # noqa: ANN001
    store = write_study(tmp_path / "runs", "story", loss=loss, curve_steps=tuple(range(5, 101, 5)), curve_noise=0.003,
                        fit={"law": "power", "x": "compute", "bootstrap": 20, "target_sizes": ["1.3B", "70B"]}, **extra)
    results = load_study(store)
    return build_report(results, ReportOptions.from_settings(results.fit_settings))


@pytest.fixture(scope="module")
def missed_report(tmp_path_factory) -> Report:
    return _study_report(tmp_path_factory.mktemp("missed"), _missed_top_rung)


def test_a_law_that_misses_a_trained_point_is_flagged_and_the_measured_result_leads_the_headline(missed_report):
    misses = fit_misses(missed_report)
    assert [(m.series, m.size_label) for m in misses] == [(MISSED, "128K")]
    assert misses[0].fitted > misses[0].measured  # the law says worse than what was measured
    assert [m.series for m in law_misfits(missed_report)] == [MISSED]

    lines = missed_report.headline
    assert 1 <= len(lines) <= 5
    first = lines[0]
    assert first.startswith("Measured at") and f"contender {MISSED} beats transformer" in first
    assert "a real difference" in first
    text = " ".join(lines)
    assert len(re.findall(r"\d+(?:\.\d+)?%\s+(?:calibrated\s+)?interval", text)) == 1  # one confidence level, once
    assert "does not follow the measured losses of " + MISSED in text and "measured result above" in text
    assert "withheld" in text  # the targets are no prediction from a ladder this short, and it says so

    fit_quality = [c for c in missed_report.caveats if c.startswith("Fit quality")]
    assert len(fit_quality) == 1 and "does not describe the runs of " + MISSED in fit_quality[0]
    assert "at 128K" in fit_quality[0] and "the measured result stands" in fit_quality[0]

    headings = [b.text for b in build_document(missed_report) if isinstance(b, Heading)]
    assert headings[1] == HEADLINE_HEADING and DETAILS_HEADING in headings  # the answer first, the long verdict below
    prose = " ".join([missed_report.verdict, *missed_report.caveats, *lines])
    assert not re.search(r"\b(flops|params_nonembed)=", prose)  # human names in prose, raw ones in tables only
    assert "FLOPs (the compute of a 70B model)" in prose
    from scaling.report.figures import loss_vs_compute

    figure = loss_vs_compute(missed_report)  # the miss is ringed at the run it happens
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert "the law misses this run (beyond seed noise)" in labels
    md = to_markdown(build_document(missed_report))
    assert md.index(lines[0]) < md.index(missed_report.verdict[:60])


def test_a_law_that_follows_every_point_flags_none_and_targets_are_in_the_studys_terms(tmp_path):
    report = _study_report(tmp_path, power_loss, budget={"tokens_per_param": 10})
    assert fit_misses(report) == [] and law_misfits(report) == []
    # compute targets at the study's own 10 tokens/param, stated once in the header, not Chinchilla's 20
    assert report.settings["target_budgets"] == pytest.approx([6 * 10 * n * n for n in (1.3e9, 70e9)])
    assert report.settings["target_budget_rule"].startswith("C = 6 N D at 10 tokens/param, the study's own budget")
    prose = " ".join([report.verdict, *report.caveats, *report.headline])
    assert "20 tokens/param" not in prose
    assert not any("does not follow" in s for s in report.headline)
    assert not any(c.startswith("Fit quality") for c in report.caveats)
    from scaling.report.figures import loss_vs_compute

    assert "the law misses this run (beyond seed noise)" not in loss_vs_compute(report).axes[0].get_legend_handles_labels()[1]


UNPINNED = {"scope": "all", "quantity": "E", "refuses": "floor", "params": ["E"], "remedy": "larger runs",
            "problem": "= 2.00 is not identified: its bootstrap interval reaches the lower bound (0) (0.001 to 2.1), "
                       "so the runs are as well read without a floor"}


def _floor_sentences(caveats: list[str]) -> list[str]:
    return [c for c in caveats if re.search(r"\bfloor\b", c) and "separate floors" not in c.split(";")[0]
            or c.startswith("Shared loss floor")]


@pytest.mark.parametrize("state", ["pinned", "unpinned", "none"])
def test_the_floor_is_described_once_and_never_contradicted(state):
    report = on_the_shared_floor(sample_report())
    if state == "unpinned":
        report.settings["unidentified"].append(dict(UNPINNED))
    if state == "none":  # E at its lower bound: no floor, so nothing can sit on it
        for group in report.fit["groups"].values():
            group["params"]["E"] = 1e-44
        report.settings["floor_bound_targets"] = []
        report.settings["unidentified"] = [dict(UNPINNED, problem="= 1e-44 is pinned at its lower bound (0)")]
    caveats = caveats_for(report)
    floor = [c for c in caveats if "floor" in c.lower()]
    assert len(floor) == 1, floor  # one caveat, written from one set of facts
    sentence = floor[0]
    assert sentence == floor_caveat(report)
    if state == "none":
        assert "none identified" in sentence and "without a floor" in sentence and "within 1%" not in sentence
        assert "E = " not in sentence
    else:
        assert "E = 2.000" in sentence and "within 1% of it" in sentence  # the floor quoted is the one that binds
        assert "without one" not in sentence and "no floor is reported" not in sentence
        assert ("do not pin it" in sentence) == (state == "unpinned")


def test_the_headline_states_one_confidence_level_and_at_most_five_sentences():
    report = sample_report()
    lines = headline(report).sentences
    assert 1 <= len(lines) <= 5
    assert sum(line.count("95%") for line in lines) <= 1


def test_withheld_targets_are_markers_at_the_edge_not_intervals_that_set_the_scale(missed_report):
    from scaling.report.figures import loss_vs_compute

    assert any(t.unidentified for t in missed_report.targets)  # this ladder predicts no loss at 70B
    ax = loss_vs_compute(missed_report).axes[0]
    assert "target withheld (no prediction)" in ax.get_legend_handles_labels()[1]
    curve_top = max(max(b.loss) for b in missed_report.bands if b.axis == "flops")
    predicted_top = max((t.high for t in missed_report.targets if not t.unidentified and t.high is not None), default=0.0)
    top = max([p.val_loss for p in missed_report.points] + [curve_top, predicted_top])
    withheld_top = max(t.high for t in missed_report.targets if t.unidentified and t.high is not None)
    assert ax.get_ylim()[1] <= 1.1 * top  # runs, curves and predicted targets set the scale...
    assert ax.get_ylim()[1] < withheld_top  # ...the withheld intervals (up to ~7 nats here) do not


def test_a_recall_metric_with_no_signal_is_one_sentence_not_a_panel_or_a_column_of_zeros():
    from scaling.report.document import Paragraph, Table
    from scaling.report.figures import recall_vs_scale

    report = sample_report()
    assert any(p.needle_acc for p in report.points)
    drawn = len(recall_vs_scale(report).axes)
    for p in report.points:
        p.needle_acc = {k: 0.0 for k in p.needle_acc}
    assert len(recall_vs_scale(report).axes) == drawn - 1  # the needle panel is gone, MQAR stays
    blocks = build_document(report)
    assert any(isinstance(b, Paragraph) and b.text.startswith("Needle-in-a-haystack accuracy") and "no panel" in b.text
               for b in blocks)
    recall_tables = [b for b in blocks if isinstance(b, Table) and "MQAR accuracy" in b.headers]
    assert recall_tables and not any(h.startswith("needle @") for h in recall_tables[0].headers)


def test_recall_phase_points_are_markers_per_width_not_lines_across_widths():
    from scaling.report.recall import recall_figure
    from tests.report.test_recall_section import _with_recall

    figure = recall_figure(_with_recall(sample_report()))
    lines = [line for ax in figure.axes for line in ax.get_lines() if line.get_label() and not line.get_label().startswith("_")]
    assert lines and all(line.get_linestyle() in ("None", "none", "") for line in lines)


def test_each_chance_is_quoted_with_its_own_task_and_the_figure_draws_the_same_one():
    from scaling.report.figures import recall_vs_scale
    from scaling.report.verdict import in_range_sentence
    from tests.report.test_recall_section import _with_recall

    report = _with_recall(sample_report())
    report.settings["recall_chance"] = {"mqar": 1 / 32}
    for p in report.points:
        p.mqar_acc = 0.0 if p.size_label != "8K" else 0.033  # the language-model runs did not learn MQAR
    text = in_range_sentence(report)
    assert "chance 3.1%, the line in the recall figure" in text
    lm, phase = text.split("recall phase instead:")
    assert "34.0%" not in lm and "in the recall phase" in phase
    labels = [t.get_text() for ax in recall_vs_scale(report).axes for t in ax.texts]
    assert " chance (3.1%)" in labels
