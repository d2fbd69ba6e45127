"""The report's figures: which are drawn for which data, that they are real PNGs, that gaps in
the data are skipped rather than fatal, and that a series keeps its colour in every figure."""

from __future__ import annotations

import dataclasses
import io
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scaling.formatting import sci
from scaling.report import figures
from scaling.report.figures import FIGURE_TITLES, draw_figures, series_colours
from scaling.report.schema import Report
from tests.report.factories import sample_report

REPO = Path(__file__).resolve().parents[2]
ALL_NAMES = {"loss_vs_compute.png", "loss_vs_params.png", "segment_effect.png",
             "recall_vs_scale.png", "cost_vs_context.png", "residuals.png"}


def _decode(png: bytes) -> np.ndarray:
    """The PNG as an image array; fails unless it is a PNG that decodes."""
    from matplotlib.image import imread

    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return imread(io.BytesIO(png), format="png")


def _built(report: Report) -> set[str]:
    """Names of the figures the makers produce for ``report``, without paying for PNG encoding."""
    return {name for name, make in figures.FIGURE_MAKERS.items() if make(report) is not None}


def _legend_colours(fig) -> dict[str, set[str]]:
    """Legend label -> colours of the artists it names (lines and markers)."""
    from matplotlib.collections import PathCollection
    from matplotlib.colors import to_hex
    from matplotlib.lines import Line2D

    out: dict[str, set[str]] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if isinstance(handle, Line2D):
                colour = handle.get_color()
            elif isinstance(handle, PathCollection):
                colour = handle.get_facecolor()[0]
            else:
                continue
            out.setdefault(label, set()).add(to_hex(colour))
    return out


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


@pytest.fixture(scope="module")
def full_figures() -> dict[str, bytes]:
    return draw_figures(sample_report())


# --- what is drawn ------------------------------------------------------------------------------


def test_full_sample_draws_all_six_figures(full_figures):
    assert set(full_figures) == ALL_NAMES


def test_every_figure_is_a_png_of_plausible_size(full_figures):
    for name, png in full_figures.items():
        image = _decode(png)
        height, width = image.shape[:2]
        assert 400 <= height <= 1200 and 600 <= width <= 2000, (name, image.shape)
        assert float(np.std(image[..., :3])) > 0.02, f"{name} looks blank"


def test_figure_titles_caption_every_figure():
    # recall_curves: drawn from a recall phase; the position figures: from the evaluation's position metrics
    assert set(FIGURE_TITLES) == set(figures.FIGURE_MAKERS) == ALL_NAMES | {"recall_curves.png", "mc_position_gap.png",
                                                                           "online_gate_mass.png"}
    assert all(isinstance(c, str) and len(c) > 10 for c in FIGURE_TITLES.values())


@pytest.mark.parametrize("flag, name", [("segment_sweep", "segment_effect.png"),
                                        ("recall", "recall_vs_scale.png"),
                                        ("costs", "cost_vs_context.png")])
def test_missing_data_omits_only_its_figure(flag, name):
    assert _built(sample_report(n_sizes=2, **{flag: False})) == ALL_NAMES - {name}


def test_draw_figures_returns_only_figures_with_data():
    drawn = draw_figures(sample_report(n_sizes=2, segment_sweep=False, recall=False, costs=False))
    assert set(drawn) == {"loss_vs_compute.png", "loss_vs_params.png", "residuals.png"}
    for png in drawn.values():
        _decode(png)


@pytest.mark.parametrize("fit", [{}, {"law": "power", "law_input": "flops", "groups": {}}])
def test_empty_report_draws_nothing_and_does_not_raise(fit):
    empty = dataclasses.replace(sample_report(n_sizes=1), points=[], dropped=[], bands=[], costs=[],
                                training_curves=[], targets=[], versus=[], crossovers=[], fit=fit)
    assert draw_figures(empty) == {}


def test_bands_alone_still_give_the_loss_figures():
    report = dataclasses.replace(sample_report(n_sizes=2), points=[], training_curves=[])
    # residuals cannot be placed without their points, so that figure goes too
    assert _built(report) == {"loss_vs_compute.png", "loss_vs_params.png", "cost_vs_context.png"}


def test_without_bootstrap_the_fitted_curves_are_still_drawn():
    report = sample_report(n_sizes=2, with_bootstrap=False)
    assert all(b.fit_low is None and b.pred_low is None for b in report.bands)
    for make in (figures.loss_vs_compute, figures.loss_vs_params):
        fig = make(report)
        labels = [label for ax in fig.axes for label in ax.get_legend_handles_labels()[1]]
        assert set(report.series) <= set(labels)
        assert not any("band" in label for label in labels)
        _decode(figures._png(fig))


def test_gaps_in_the_data_are_skipped():
    report = sample_report(n_sizes=3)
    report.points[0].val_loss = math.nan
    report.points[1].mqar_acc = None
    report.points[2].needle_acc = {"1024": None, "4096": math.nan}
    report.bands[0].loss[5] = None  # what a strict-JSON round trip leaves for NaN
    report.bands[0].fit_low = [None] * len(report.bands[0].x)
    report.bands[1].pred_high = report.bands[1].pred_high[:3]  # wrong length: band skipped, curve kept
    report.training_curves[0].flops[0] = 0.0
    report.training_curves[1].val_loss = report.training_curves[1].val_loss[:2]
    report.costs[0].state_bytes = math.nan
    report.costs[1].forward_flops_per_token = None
    report.fit["groups"]["swla"]["residuals_log"][0] = None
    report.targets[0].flops = None
    assert set(draw_figures(report)) == ALL_NAMES


def test_figures_module_imports_no_matplotlib_and_never_pyplot():
    code = (
        "import sys\n"
        "import scaling.report.figures as f\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'\n"
        "from tests.report.factories import sample_report\n"
        "f._png(f.residuals(sample_report(n_sizes=2)))\n"
        "assert 'matplotlib' in sys.modules\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# --- what the figures show ----------------------------------------------------------------------


def test_series_colours_baseline_black_others_distinct():
    report = sample_report()
    colours = series_colours(report)
    assert set(colours) == set(report.series)
    assert colours[report.baseline] == "#000000"
    assert len(set(colours.values())) == len(colours)
    # the baseline is black wherever it sits in the series list; the others keep distinct colours
    moved = dataclasses.replace(report, series=[*report.series[1:], report.series[0]])
    recoloured = series_colours(moved)
    assert recoloured[report.baseline] == "#000000"
    assert len(set(recoloured.values())) == len(recoloured)


def test_each_series_has_the_same_colour_in_every_figure():
    report = sample_report(n_sizes=2)
    colours = series_colours(report)
    makers = (figures.loss_vs_compute, figures.loss_vs_params, figures.recall_vs_scale,
              figures.cost_vs_context, figures.residuals)
    for make in makers:
        used = _legend_colours(make(report))
        for series in report.series:
            assert used.get(series) == {colours[series]}, (make.__name__, series, used.get(series))


def test_compute_figure_marks_targets_and_the_extrapolated_region():
    report = sample_report(n_sizes=2)
    texts = _texts(figures.loss_vs_compute(report))
    budgets = {row.target.split(",")[0].replace(" FLOPs", "") for row in report.targets if row.target.startswith("C=")}
    assert budgets and all(any(b in t for t in texts) for b in budgets)
    assert any("extrapolated" in t for t in texts)
    assert not any(t.strip().startswith("N=") for t in texts)
    size_texts = _texts(figures.loss_vs_params(report))
    assert any(t.strip() == "N=1.3B" for t in size_texts)


def test_power_law_target_names_are_marked_too():
    """A power-law comparison names its targets "flops=..." / "params_nonembed=...": same lines, short labels."""
    report = sample_report(n_sizes=2)
    renamed = []
    for row in report.targets:
        if row.target.startswith("C="):
            renamed.append(dataclasses.replace(row, target=f"flops={sci(row.flops)}"))
        elif row.target.startswith("N="):
            renamed.append(dataclasses.replace(row, target=f"params_nonembed={sci(row.params_nonembed)}"))
    report = dataclasses.replace(report, targets=renamed)
    compute_texts = [t.strip() for t in _texts(figures.loss_vs_compute(report))]
    assert sum(t.startswith("C=") for t in compute_texts) == len({r.flops for r in renamed if r.target.startswith("flops=")})
    assert any(t.strip() == "N=70B" for t in _texts(figures.loss_vs_params(report)))


def test_segment_effect_has_one_panel_per_swept_arch_and_counts_no_caching_as_one_segment():
    report = sample_report(n_sizes=2)
    assert len(figures.segment_effect(report).axes) == 1
    # make the plain swla runs part of the swla+grm sweep: no caching ("-") is one segment
    points = [dataclasses.replace(p, arch="swla+grm") if p.series == "swla" else p for p in report.points]
    fig = figures.segment_effect(dataclasses.replace(report, points=points))
    (ax,) = fig.axes
    assert 1.0 in set(ax.get_xticks())
    assert [line.get_label() for line in ax.get_lines()] == ["8K", "16K"]


def test_recall_figure_drops_a_panel_without_data():
    report = sample_report(n_sizes=2)
    assert len(figures.recall_vs_scale(report).axes) == 2
    no_needle = dataclasses.replace(report, points=[dataclasses.replace(p, needle_acc={}) for p in report.points])
    assert len(figures.recall_vs_scale(no_needle).axes) == 1


def test_cost_figure_shows_the_kv_cache_and_the_reference_size():
    fig = figures.cost_vs_context(sample_report(n_sizes=1))
    assert figures.KV_CACHE_LABEL in _legend_colours(fig)
    assert "1.3B" in fig.get_suptitle()


def test_residuals_are_plotted_as_percent_against_the_law_input():
    report = sample_report(n_sizes=3)
    k = sum(p.series == "transformer" for p in report.points)
    report.fit["groups"]["transformer"]["residuals_log"] = [0.1] * k
    report.fit["groups"]["swla"]["residuals_log"] = [0.0]  # wrong count: cannot be matched to points
    fig = figures.residuals(report)
    (ax,) = fig.axes
    by_label = {c.get_label(): c.get_offsets() for c in ax.collections}
    assert "swla" not in by_label
    xy = np.asarray(by_label["transformer"])
    assert np.allclose(xy[:, 1], 100 * math.expm1(0.1))
    assert np.allclose(sorted(xy[:, 0]), sorted(p.flops for p in report.points if p.series == "transformer"))


# --- the factory ---------------------------------------------------------------------------------


@pytest.mark.parametrize("with_bootstrap", [True, False])
def test_sample_report_round_trips_through_json(with_bootstrap):
    report = sample_report(with_bootstrap=with_bootstrap)
    assert Report.from_dict(report.to_dict()).to_dict() == report.to_dict()
    assert Report.from_json(report.to_json()) == report


def test_only_the_headline_pair_gets_interval_bars_at_the_targets_in_its_colours():
    """Bands of every series would merge into one block: only the baseline's and the headline
    contender's intervals are drawn, as bars at the targets (side by side, never overlapping),
    and the legend's swatches are in those series' colours."""
    from matplotlib.colors import to_hex

    report = sample_report()
    contender = next(s for s in report.series if s != report.baseline)
    report.settings["advice"] = {"series": contender}
    assert figures.shaded_series(report) == [report.baseline, contender]
    fig = figures.loss_vs_compute(report)
    ax = fig.axes[0]
    colours = series_colours(report)
    assert not ax.collections or all(len(c.get_paths()) == 0 or c.get_offsets().size for c in ax.collections)  # no fills
    bars = [ln for ln in ax.get_lines() if ln.get_linewidth() >= 6 and len(ln.get_xdata()) == 2]
    budgets = {r.flops for r in report.targets if r.target.startswith("C=")}
    assert len(bars) == 2 * len(budgets)  # one expected-loss bar per target for each of the two series
    assert {to_hex(b.get_color()) for b in bars} == {to_hex(colours[report.baseline]), to_hex(colours[contender])}
    xs = sorted(b.get_xdata()[0] for b in bars)
    assert all(b / a > 1.1 for a, b in zip(xs, xs[1:]))  # offset: no two bars on top of each other
    row = next(r for r in report.targets if r.series == contender and r.target.startswith("C="))
    bar = next(b for b in bars if to_hex(b.get_color()) == to_hex(colours[contender])
               and abs(np.log(b.get_xdata()[0] / row.flops)) < 0.5)
    assert list(bar.get_ydata()) == pytest.approx([row.low, row.high])  # the table's numbers
    legend = ax.get_legend()
    swatches = {t.get_text(): to_hex(h.get_color()) for h, t in zip(legend.legend_handles, legend.get_texts())
                if "interval" in t.get_text()}
    assert swatches[f"{contender}: 95% interval, a new run"] == to_hex(colours[contender])
    assert swatches[f"{report.baseline}: 95% interval, expected loss"] == to_hex(colours[report.baseline])
    assert len(swatches) == 4


def test_recall_plot_draws_the_chance_line():
    report = sample_report()
    report.settings["recall_chance"] = {"mqar": 1 / 32}
    fig = figures.recall_vs_scale(report)
    assert any(t.startswith(" chance (3.1%)") for t in _texts(fig))
