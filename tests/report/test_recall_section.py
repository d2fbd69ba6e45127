"""The recall section: it leads the report, its table and figure carry a chance line and a bytes
axis, and a study with only a recall phase still gets a report. Reports are built by hand (no
training), the recall points from the exact byte model, so the numbers are known."""

from __future__ import annotations

import io

import numpy as np
import pytest

from scaling.models.config import ModelConfig
from scaling.models.flops import sequence_bytes
from scaling.models.ladder import count_params
from scaling.report.document import FigureRef, Heading, Table, build_document
from scaling.report.figures import FIGURE_MAKERS, _png
from scaling.report.recall import FIGURE, recall_figure, table_rows, wilson
from scaling.report.render import to_markdown
from scaling.report.schema import RecallPoint, Report
from tests.report.factories import sample_report

CHANCE = {"in_context": 0.34, "one_of_pairs": 1 / 8, "vocabulary": 1 / 16}
ACCURACY = {"transformer": 0.99, "swla": 0.31, "swla+grm@C16": 0.74}  # at d=32, L=128


def _point(series: str, width: int, seq_len: int, acc: float) -> RecallPoint:
    arch = series.split("@")[0]
    mixer = "attention" if arch == "transformer" else "swla"
    caching = "grm" if "+grm" in arch else "none"
    model = ModelConfig(vocab_size=33, d_model=width, n_heads=width // 8, n_layers=2, seq_len=seq_len,
                        chunk_len=min(64, seq_len), mixer=mixer, caching=caching,
                        segment_len=16 if caching != "none" else None)
    nbytes = sequence_bytes(model)
    return RecallPoint(trial_id=f"recall-{series}-L{seq_len}-d{width}", series=series, arch=arch, strategy=caching,
                       segment_len="16" if caching != "none" else "-",
                       n_segments=model.n_segments() if caching != "none" else 1, d_model=width, seq_len=seq_len,
                       seed=0, params_nonembed=count_params(model)["params_nonembed"], state_bytes=nbytes.state_bytes,
                       cache_bytes=nbytes.cache_bytes, mqar_acc=acc, queries_scored=2048)


def _recall_points() -> list[RecallPoint]:
    points = []
    for seq_len in (64, 128):
        for width in (16, 32):
            for series, acc in ACCURACY.items():
                points.append(_point(series, width, seq_len, acc * (0.8 if width == 16 else 1.0)))
    return points


def _with_recall(report: Report) -> Report:
    report.recall = _recall_points()
    report.settings["recall_phase"] = {"n_pairs": 8, "n_queries": 8, "key_vocab": 16, "value_vocab": 16,
                                       "steps": 800, "batch_size": 32, "lr": 0.01, "layers": 2, "head_dim": 8,
                                       "chance": CHANCE}
    return report


def test_recall_section_leads_the_report_with_its_table_and_figure():
    report = _with_recall(sample_report(n_sizes=3))
    report.figures = [FIGURE]  # as render_files records it once the figure is drawn (below)
    blocks = build_document(report)
    headings = [b.text for b in blocks if isinstance(b, Heading)]
    assert headings.index("Recall: models trained on MQAR") < headings.index("Details")
    start = headings.index("Recall: models trained on MQAR")
    section = blocks[[i for i, b in enumerate(blocks) if isinstance(b, Heading)][start]:]
    assert any(isinstance(b, FigureRef) and b.name == FIGURE for b in section[:4])
    table = next(b for b in section if isinstance(b, Table))
    # one row per series and context length; cells hold accuracy, its interval and bytes per sequence
    assert len(table.rows) == 6 and table.headers[3:] == ["d=16: accuracy, bytes/seq", "d=32: accuracy, bytes/seq"]
    row = next(r for r in table.rows if r[0] == "swla+grm@C16" and r[1] == "128")
    assert row[2] == "8" and row[4].startswith("74.0% [")
    expected_bytes = sequence_bytes(ModelConfig(vocab_size=33, d_model=32, n_heads=4, n_layers=2, seq_len=128,
                                                chunk_len=64, mixer="swla", caching="grm", segment_len=16)).total_bytes
    from scaling.formatting import byte_size

    assert row[4].endswith(byte_size(expected_bytes))
    assert "34.0% (guessing among the sequence's values not yet answered" in table.caption
    markdown = to_markdown(blocks)
    # the headline: each series' best width at L=128, the other widths beside it
    assert "transformer 99% at d=32" in markdown and "swla 31% at d=32" in markdown and "25% at d=16" in markdown


def test_recall_figure_has_a_chance_line_and_a_bytes_axis_and_is_1400px_wide():
    report = _with_recall(sample_report(n_sizes=2))
    fig = recall_figure(report)
    axes = fig.axes
    assert len(axes) == 4  # two context lengths x (parameters, bytes)
    assert {ax.get_xlabel() for ax in axes} == {"non-embedding parameters", "state + cache bytes per sequence (bf16)"}
    for ax in axes:
        assert any(abs(line.get_ydata()[0] - CHANCE["in_context"]) < 1e-12 and line.get_linestyle() == "--"
                   for line in ax.get_lines() if len(line.get_ydata()) == 2)
        assert any("chance (34.0%)" in t.get_text() for t in ax.texts)
    bytes_ax = [ax for ax in axes if ax.get_xlabel().startswith("state")][1]
    transformer = next(line for line in bytes_ax.get_lines() if line.get_label() == "transformer")
    swla = next(line for line in bytes_ax.get_lines() if line.get_label() == "swla")
    assert min(transformer.get_xdata()) > max(swla.get_xdata())  # a KV cache outweighs a fixed state
    from matplotlib.image import imread

    png = _png(fig)
    height, width = imread(io.BytesIO(png), format="png").shape[:2]
    assert 1300 <= width <= 1500 and height <= 1000


def test_wilson_interval_brackets_the_measured_accuracy():
    lo, hi = wilson(0.5, 2048)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(2 * 1.96 * np.sqrt(0.25 / 2048), rel=0.01)
    assert wilson(1.0, 100)[1] == 1.0 and wilson(1.0, 100)[0] > 0.95


def test_a_report_without_a_recall_phase_has_no_recall_section():
    report = sample_report(n_sizes=2)
    assert "Recall: models trained on MQAR" not in [b.text for b in build_document(report) if isinstance(b, Heading)]
    assert table_rows(report) == (["series", "context L", "segments"], [])
    assert recall_figure(report) is None and FIGURE_MAKERS[FIGURE](report) is None


def _difference(target: str, a: str, b: str, value: float, low: float, high: float, p_a: float) -> dict:
    return {"target": target, "group_a": a, "group_b": b, "p_a_better": p_a,
            "difference": {"value": value, "low": low, "high": high},
            "family_low": low - 0.005, "family_high": high + 0.005, "family_level": 0.995}


def test_in_range_section_says_which_mc_series_beats_its_base_and_where_the_rest_would_resolve():
    from scaling.report.in_range import in_range_rows, sentence

    report = _with_recall(sample_report(n_sizes=3))  # ladder sizes 8K, 16K, 32K
    report.comparison = {"differences": [
        # stored as swla minus grm (the pair's order in the fit); the section orients it MC minus base
        _difference("params_nonembed=3.2e+04", "swla", "swla+grm@C32", 0.02, 0.01, 0.03, 0.01),
        _difference("params_nonembed=3.2e+04", "swla+grm@C64", "swla", -0.005, -0.02, 0.01, 0.7),
        _difference("params_nonembed=1.3e+09", "swla+grm@C64", "swla", -0.05, -0.08, -0.02, 0.99),
        _difference("params_nonembed=3.2e+04", "transformer", "swla", -0.1, -0.2, -0.05, 1.0),  # not MC vs base
    ]}
    rows = {here.series: (here, ok, first) for here, ok, first in in_range_rows(report)}
    assert set(rows) == {"swla+grm@C32", "swla+grm@C64"}
    here, ok, _ = rows["swla+grm@C32"]
    assert ok and here.baseline == "swla" and here.difference == pytest.approx(-0.02)
    assert (here.low, here.high) == pytest.approx((-0.03, -0.01)) and here.p_better == pytest.approx(0.99)
    here, ok, first = rows["swla+grm@C64"]
    assert not ok and first.target == "params_nonembed=1.3e+09"
    text = sentence(report)
    assert "swla+grm@C32 minus swla at 32K parameters" in text and "resolved: swla+grm@C32 beats swla" in text
    assert "first resolve it at 1.3B parameters" in text
    headings = [b.text for b in build_document(report) if isinstance(b, Heading)]
    assert headings.index("What the ladder resolved: Memory Caching against its base memory") < headings.index("Details")


def test_the_verdict_states_the_recall_phase_and_never_calls_recall_unlearned_when_the_phase_learned_it():
    from scaling.report.verdict import _recall_phase_text

    report = _with_recall(sample_report(n_sizes=3))
    text = _recall_phase_text(report)
    # each series' best accuracy over widths and contexts, with its width, against the phase's chance level
    assert "transformer 99.0% (width 32)" in text and "swla+grm@C16 74.0% (width 32)" in text
    assert "swla 31.0% (width 32)" in text and "chance 34.0%" in text
    assert _recall_phase_text(sample_report(n_sizes=3)) == ""  # no recall phase, nothing said


def test_a_wider_model_at_chance_is_called_a_training_plateau_not_a_capacity_limit():
    from scaling.report.recall import headline

    report = _with_recall(sample_report(n_sizes=3))
    report.recall = [_point("transformer", 32, 128, 0.99), _point("transformer", 64, 128, 0.35),
                     _point("swla", 32, 128, 0.34), _point("swla", 64, 128, 0.35),
                     _point("swla+grm@C16", 32, 128, 0.34), _point("swla+grm@C16", 64, 128, 0.98)]
    text = headline(report)
    # the transformer recalls at 32 and sits at chance (34%) at 64: named, with the width that recalls
    assert "At chance although a narrower model of the same architecture recalls: transformer at d=64 " \
           "(it recalls at d=32)." in text
    # swla never recalls and swla+grm recalls only at the wider width: neither is a plateau
    assert text.count("recalls at d=") == 1
    # a few points above chance is not recalling: titans at 37% beside 35.8% is not named
    report.recall += [_point("titans", 32, 128, 0.37), _point("titans", 64, 128, 0.358)]
    assert "titans" not in headline(report).split("At chance although")[1]
    report.recall[1] = _point("transformer", 64, 128, 0.97)
    assert "plateau" not in headline(report)
