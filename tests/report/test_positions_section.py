"""The section "Where Memory Caching helps": MC minus its base memory by position bucket and the gate
weight on the online memory, from a report with known position profiles (tests/report/factories.py)
and from a real result store; and its absence where a study has nothing to show there."""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pytest

from scaling.report.document import FigureRef, Heading, Paragraph, Table, build_document
from scaling.report.figures import FIGURE_MAKERS, draw_figures, mc_position_gap, online_gate_mass, series_colours
from scaling.report.inputs import load_study, select_points
from scaling.report.positions import (GAP_FIGURE, GATE_FIGURE, bucket_bounds, position_gaps, position_profiles,
                                      positions_section)
from scaling.report.render import to_html, to_markdown
from scaling.report.schema import Report
from scaling.train.evaluate import position_buckets
from tests.report.factories import (EARLY_GAP, LATE_GAP, POSITION_BUCKETS, online_gates, position_profile,
                                    sample_report)
from tests.report.studies import write_study

HEADING = "Where Memory Caching helps"
MC = ("swla+grm@C32", "swla+grm@C64")


def _report(**changes) -> Report:
    report = sample_report(positions=True)
    report.figures = [GAP_FIGURE, GATE_FIGURE]
    return dataclasses.replace(report, **changes) if changes else report


def _top(report: Report) -> str:
    return max(report.points, key=lambda p: p.params_nonembed).size_label


def _text(blocks) -> str:  # noqa: ANN001
    return " ".join(b.text for b in blocks if isinstance(b, Paragraph))


# --- the numbers --------------------------------------------------------------------------------


def test_each_mc_series_minus_its_base_by_bucket_at_the_largest_rung():
    report = _report()
    gaps = {g.series: g for g in position_gaps(report)}
    assert set(gaps) == set(MC)  # the transformer has no base memory; swla is the base itself
    for series, g in gaps.items():
        segment = int(series.rsplit("C", 1)[1])
        assert g.base == "swla" and g.size_label == _top(report) and g.seeds == 1
        assert g.first_segment_end == segment
        assert g.bounds == list(range(0, 257, 32))
        expected = [EARLY_GAP if start < segment else LATE_GAP[series] for start in g.bounds[:-1]]
        assert g.difference == pytest.approx(expected, abs=1e-12)
        assert g.after_first_segment == [i for i, start in enumerate(g.bounds[:-1]) if start >= segment]
        assert g.mid_tokens == pytest.approx([15.5 + 32 * i for i in range(POSITION_BUCKETS)])
        gates, init = online_gates(segment)
        assert g.online_gate == pytest.approx(gates) and g.online_gate_init == pytest.approx(init)


def test_the_sentences_are_computed_from_the_numbers():
    text = _text(positions_section(_report()))
    assert ("swla+grm@C32 is +0.010 nats from swla in the first 32 tokens (where it reads only its online memory), "
            "-0.030 on average from token 32 on (where every token reads a cache)") in text
    assert "swla+grm@C64 is +0.010 nats from swla in the first 64 tokens (where it reads only its online memory), " \
           "-0.020 on average from token 64 on" in text
    # segments 1-7 of C32: 0.93 falling by 0.03 -> 0.75; at init 21 / (21 + s)
    assert ("the gates (mean over the gated layers) leave the online memory 0.75-0.93 of the read in swla+grm@C32's "
            "segments 1-7 (0.75-0.95 at initialisation); 0.87-0.93 of the read in swla+grm@C64's segments 1-3 "
            "(0.75-0.90 at initialisation)") in text
    assert f"at {_top(_report())}, the largest rung every MC series and its base memory trained" in text


def test_before_the_first_segment_ends_every_bucket_inside_it_counts():
    report = _report()
    top = _top(report)
    for p in report.positions:
        if p.series == "swla+grm@C64" and p.size_label == top:
            p.val_loss_pos[1] += 0.02  # the second of the two buckets inside its first 64 tokens
            p.val_loss_pos[-1] -= 0.06
    text = _text(positions_section(report))
    assert "swla+grm@C64 is +0.020 nats from swla in the first 64 tokens (where it reads only its online memory), " \
           "-0.030 on average from token 64 on (where every token reads a cache), -0.080 in the last 32 tokens" in text


def test_a_bucket_wider_than_the_first_segment_is_not_called_online_only():
    report = _report()
    for p in report.positions:  # 8 segments of 32 tokens -> of 16 tokens: the first bucket spans two segments
        if p.series == "swla+grm@C32":
            p.segment_bounds = list(range(0, 257, 16))
    gap = next(g for g in position_gaps(report) if g.series == "swla+grm@C32")
    assert gap.first_segment_end == 16 and gap.after_first_segment == list(range(1, POSITION_BUCKETS))
    text = _text(positions_section(report))
    assert "swla+grm@C32 is +0.010 nats from swla in the first 32 tokens," in text  # no "only its online memory"
    assert "-0.030 on average from token 32 on" in text


def test_seeds_are_averaged_bucket_by_bucket():
    report = _report()
    top = _top(report)
    extra = [position_profile(p, seed=1, early=0.03, late=-0.05) for p in report.points
             if p.size_label == top and p.series in ("swla", "swla+grm@C32")]
    report.positions += extra
    gap = next(g for g in position_gaps(report) if g.series == "swla+grm@C32")
    assert gap.seeds == 2
    assert gap.difference[0] == pytest.approx((EARLY_GAP + 0.03) / 2)
    assert gap.difference[-1] == pytest.approx((LATE_GAP["swla+grm@C32"] - 0.05) / 2)
    assert "means over up to 2 seeds" in _text(positions_section(report))


def test_the_rung_is_the_largest_one_every_pair_trained():
    report = _report()
    top = _top(report)
    labels = sorted({p.size_label for p in report.points}, key=lambda lab: float(lab[:-1]))
    report.positions = [p for p in report.positions if not (p.series == "swla+grm@C64" and p.size_label == top)]
    assert {g.size_label for g in position_gaps(report)} == {labels[-2]}  # C32 moves down with it
    # no rung common to every pair: each pair at its own largest
    report.positions = [p for p in report.positions if not (p.series == "swla+grm@C64" and p.size_label != labels[0])
                        and not (p.series == "swla+grm@C32" and p.size_label == labels[0])]
    assert {g.series: g.size_label for g in position_gaps(report)} == {"swla+grm@C32": labels[-1],
                                                                       "swla+grm@C64": labels[0]}
    assert "at each pair's largest common rung" in _text(positions_section(report))


def test_bucket_bounds_follow_the_evaluation_rule():
    for seq_len, buckets in ((256, 8), (64, 3), (100, 7), (10, 4)):
        bounds = bucket_bounds(seq_len, buckets)
        index = position_buckets(seq_len, buckets).tolist()
        assert [index.index(i) for i in range(buckets)] == bounds[:-1] and bounds[-1] == seq_len


# --- absent when there is nothing to show ---------------------------------------------------------


@pytest.mark.parametrize("keep", [
    lambda p: False,  # an old study: no position metrics at all
    lambda p: p.series != "swla",  # MC series without their base
    lambda p: p.strategy == "none",  # bases without an MC series
])
def test_the_section_and_its_figures_are_omitted_without_a_pair(keep):
    report = _report()
    report.positions = [p for p in report.positions if keep(p)]
    assert positions_section(report) == []
    assert mc_position_gap(report) is None and online_gate_mass(report) is None
    assert HEADING not in [b.text for b in build_document(report) if isinstance(b, Heading)]


def test_ungated_mc_gets_the_position_figure_but_no_gate_figure():
    report = _report()
    for p in report.positions:
        p.online_gate_seg, p.online_gate_init_seg = [], []
    blocks = positions_section(report)
    assert [b.name for b in blocks if isinstance(b, FigureRef)] == [GAP_FIGURE]
    assert mc_position_gap(report) is not None and online_gate_mass(report) is None
    assert "the gates" not in _text(blocks)


# --- the figures and the pages -----------------------------------------------------------------


def test_the_figures_draw_the_section_numbers_in_the_series_colours():
    from matplotlib.colors import to_hex
    from matplotlib.image import imread

    report = _report()
    gaps = {g.series: g for g in position_gaps(report)}
    colours = series_colours(report)
    fig = mc_position_gap(report)
    (ax,) = fig.axes
    lines = {line.get_label().split(" - ")[0]: line for line in ax.get_lines() if line.get_label().startswith("swla+")}
    assert set(lines) == set(MC)
    for series, line in lines.items():
        assert list(line.get_ydata()) == pytest.approx(gaps[series].difference)
        assert list(line.get_xdata()) == pytest.approx(gaps[series].mid_tokens)
        assert to_hex(line.get_color()) == colours[series]
    assert any(list(line.get_ydata()) == [0.0, 0.0] for line in ax.get_lines())  # the zero line

    fig = online_gate_mass(report)
    (ax,) = fig.axes
    assert ax.get_ylim() == (0.0, 1.0)
    solid = {line.get_label(): line for line in ax.get_lines() if line.get_linestyle() == "-"}
    for series in MC:
        assert list(solid[series].get_ydata()) == pytest.approx(gaps[series].online_gate)
    pngs = draw_figures(report)
    for name in (GAP_FIGURE, GATE_FIGURE):
        image = imread(io.BytesIO(pngs[name]), format="png")
        assert float(np.std(image[..., :3])) > 0.02, name


def test_the_section_follows_the_segment_section_in_both_pages_and_the_json():
    report = _report()
    blocks = build_document(report)
    headings = [b.text for b in blocks if isinstance(b, Heading) and b.level == 2]
    assert headings.index(HEADING) == headings.index("Segment length (number of cached segments)") + 1
    assert {GAP_FIGURE, GATE_FIGURE} <= {b.name for b in blocks if isinstance(b, FigureRef)}
    tables = [b for b in blocks if isinstance(b, Table) and "tokens 0-31" in b.headers]
    assert len(tables) == 1 and [row[0] for row in tables[0].rows] == list(MC)
    markdown, html = to_markdown(blocks), to_html(blocks, {}, title="t")
    for text in (markdown, html):
        assert HEADING in text and "-0.030" in text and "0.75 (0.75)" in text
    assert Report.from_json(report.to_json()) == report
    assert set(FIGURE_MAKERS) >= {GAP_FIGURE, GATE_FIGURE}


# --- from the result store ---------------------------------------------------------------------


def _diagnostics(planned) -> dict:  # noqa: ANN001 - a PlannedTrial
    """What the evaluation would record: a loss per bucket and, with gates, the gate mass per segment."""
    model = planned.config.model
    out = {f"val_loss_pos{i}": 3.0 - 0.05 * i - (0.02 if model.caching != "none" and i else 0.0)
           for i in range(planned.config.eval_position_buckets)}
    if model.caching in ("grm", "soup", "ssc"):
        out.update({f"online_gate_seg{s}": 1.0 - 0.02 * s for s in range(model.n_segments())})
        out.update({f"online_gate_l0_seg{s}": 1.0 - 0.02 * s for s in range(model.n_segments())})
    return out


def test_profiles_come_from_the_store_with_the_gate_rule_at_init(tmp_path):
    architectures = [{"name": "swla"}, {"name": "swla+grm", "segment_lens": [32]},
                     {"name": "swla+ssc", "segment_lens": [32], "top_k": 2}]
    store = write_study(tmp_path, "positions", sizes=["8K", "16K", "32K"], architectures=architectures,
                        loss=lambda series, flops, tokens, params: 2.0 + 2000.0 * flops ** -0.3,
                        extra_metrics=_diagnostics)
    results = load_study(store)
    points, _ = select_points(results)
    profiles = {p.trial_id: p for p in position_profiles(results, points)}
    assert set(profiles) == {p.trial_id for p in points}
    trials = results.trials.set_index("trial_id")
    for trial_id, p in profiles.items():
        assert p.val_loss_pos == pytest.approx([trials.loc[trial_id, f"val_loss_pos{i}"] for i in range(8)])
        assert p.seq_len == 256 and p.segment_bounds == ([0, 256] if p.strategy == "none" else list(range(0, 257, 32)))
        if p.strategy == "none":
            assert p.online_gate_seg == [] and p.online_gate_init_seg == []
            continue
        assert p.online_gate_seg == pytest.approx([1.0 - 0.02 * s for s in range(8)])
        n_max = 7 if p.strategy == "grm" else 2  # SSC's gate covers at most top_k caches
        share = 3.0 * n_max  # the bias rule: e^b = 3 n_max
        caches = [s if p.strategy == "grm" else min(s, 2) for s in range(8)]
        assert p.online_gate_init_seg == pytest.approx([share / (share + n) for n in caches])
    report = _report(points=points, positions=list(profiles.values()), series=["swla", "swla+grm@C32", "swla+ssc@C32"])
    gaps = {g.series: g for g in position_gaps(report)}
    assert set(gaps) == {"swla+grm@C32", "swla+ssc@C32"} and {g.size_label for g in gaps.values()} == {"32K"}
    assert gaps["swla+ssc@C32"].difference == pytest.approx([0.0] + [-0.02] * 7)


def test_an_old_study_without_the_metrics_has_no_profiles(tmp_path):
    store = write_study(tmp_path, "old", sizes=["8K", "16K", "32K"])
    results = load_study(store)
    points, _ = select_points(results)
    assert position_profiles(results, points) == []
    assert not any(math.isnan(p.val_loss) for p in points)  # the points themselves are fine
