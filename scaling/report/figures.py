"""The report's figures, drawn from a `Report` alone, as PNG bytes keyed by file name.

Why from the `Report` and nothing else: the pages and ``report.json`` must show the same numbers
as the pictures, and a figure maker that reads only this value can be tested on a report built
by hand. Each figure is omitted (not drawn empty) when the report has no data for it, so a
study with no recall evaluations or no context costs still gets a clean report.

matplotlib is imported inside the functions, and only its object API is used (no ``pyplot``):
the CLI starts fast, and drawing touches no global state, so reports can be drawn in threads or
in tests side by side.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from scaling.formatting import sci
from scaling.models.ladder import format_count
from scaling.report.canvas import DPI, FIGSIZE, TAB10, new_figure
from scaling.report.positions import GAP_FIGURE, GAP_TITLE, GATE_FIGURE, GATE_TITLE, position_gaps
from scaling.report.recall import recall_figure
from scaling.report.schema import COMPUTE_TARGET_PREFIXES, SIZE_TARGET_PREFIXES, Band, Point, Report

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

BASELINE_COLOUR = "#000000"
KV_CACHE_LABEL = "Transformer KV cache (same width and depth)"

FIGURE_TITLES: dict[str, str] = {
    "recall_curves.png": "Recall after training on MQAR: accuracy against parameters and against state + cache bytes "
                         "per sequence",
    "loss_vs_compute.png": "Validation loss against training compute: runs, fitted laws, and at each compute target "
                           "(dotted lines) the calibrated 95% intervals of the baseline and the headline contender",
    "loss_vs_params.png": "Validation loss against non-embedding parameters: runs, fitted laws, and at each target "
                          "size (dotted lines) the calibrated 95% intervals of the baseline and the headline contender",
    "segment_effect.png": "Effect of the segment length: validation loss against the number of segments, per size",
    "recall_vs_scale.png": "Recall against model size: MQAR accuracy and mean needle-in-a-haystack accuracy",
    "cost_vs_context.png": "Inference cost against context length: forward FLOPs per token and memory per sequence",
    "residuals.png": "Fit residuals: how far each run lies from its series' fitted law",
    GAP_FIGURE: GAP_TITLE,
    GATE_FIGURE: GATE_TITLE,
}


# --- small helpers ----------------------------------------------------------------------------


def series_colours(report: Report) -> dict[str, str]:
    """One colour per series, shared by every figure: the baseline black, the others tab10 in
    the order of ``report.series`` (series seen only in the data follow, in order of appearance)."""
    names = list(dict.fromkeys([*report.series, *(p.series for p in report.points),
                                *(b.series for b in report.bands), *(c.series for c in report.costs)]))
    colours: dict[str, str] = {}
    k = 0
    for name in names:
        if name == report.baseline:
            colours[name] = BASELINE_COLOUR
        else:
            colours[name] = TAB10[k % len(TAB10)]
            k += 1
    return colours


def _finite(value: Any) -> bool:
    """True for a real, finite number (None and NaN, as JSON round trips leave them, are not)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(float(value))


def _positive(value: Any) -> bool:
    """A value that can sit on a log axis."""
    return _finite(value) and float(value) > 0


def _array(values: Sequence[Any] | None) -> np.ndarray | None:
    """A list from the report (possibly holding None) as a float array with NaN for the gaps."""
    if values is None:
        return None
    return np.array([float(v) if _finite(v) else math.nan for v in values], dtype=float)


def _series_order(report: Report, present: Iterable[str]) -> list[str]:
    """Series in the report's order, then any others that appear in the data."""
    present = list(dict.fromkeys(present))
    return [s for s in report.series if s in present] + [s for s in present if s not in report.series]


def _png(fig: "Figure") -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _line_width(report: Report, series: str) -> float:
    """The baseline a little heavier, so the eye compares the others to it."""
    return 2.2 if series == report.baseline else 1.6


# --- loss against compute / parameters ---------------------------------------------------------


def _point_x(point: Point, axis: str) -> float:
    """The run's position along ``axis`` ("flops" or "params_nonembed")."""
    return float(point.flops if axis == "flops" else point.params_nonembed)


def _draw_band(ax: "Axes", band: Band, colour: str, label: str | None, width: float, shade: bool = True) -> bool:
    """Fitted curve with its prediction band (light) and confidence band (darker, only where
    ``shade``); True if drawn."""
    x, loss = _array(band.x), _array(band.loss)
    if x is None or loss is None or x.size == 0 or x.size != loss.size:
        return False
    ok = np.isfinite(x) & (x > 0) & np.isfinite(loss)
    if not ok.any():
        return False
    for low, high, alpha in ((band.pred_low, band.pred_high, 0.10), (band.fit_low, band.fit_high, 0.28)):
        if not shade:
            break
        lo, hi = _array(low), _array(high)
        if lo is None or hi is None or lo.size != x.size or hi.size != x.size:
            continue
        good = ok & np.isfinite(lo) & np.isfinite(hi)
        if good.any():
            ax.fill_between(x[good], lo[good], hi[good], color=colour, alpha=alpha, linewidth=0)
    ax.plot(x[ok], loss[ok], color=colour, lw=width, label=label)
    return True


def _draw_points(ax: "Axes", points: list[Point], axis: str, colour: str, label: str | None) -> bool:
    """The runs' final losses as markers; True if any was drawn."""
    xy = [(_point_x(p, axis), float(p.val_loss)) for p in points
          if _positive(_point_x(p, axis)) and _finite(p.val_loss)]
    if not xy:
        return False
    xs, ys = zip(*sorted(xy))
    ax.scatter(xs, ys, color=colour, s=28, zorder=3, edgecolors="white", linewidths=0.6, label=label)
    return True


def _mark_missed(ax: "Axes", report: Report, points: list[Point], axis: str) -> None:
    """Ring the runs the fitted law misses by more than seed noise allows (`scaling.report.story.fit_misses`),
    so the disagreement the text reports is visible where it happens, at that trained size."""
    from scaling.report.story import fit_misses

    missed = {(m.series, m.size_label) for m in fit_misses(report)}
    xy = [(_point_x(p, axis), float(p.val_loss)) for p in points if (p.series, p.size_label) in missed]
    if xy:
        xs, ys = zip(*xy)
        ax.scatter(xs, ys, s=150, facecolors="none", edgecolors="#d62728", linewidths=1.6, zorder=4,
                   label="the law misses this run (beyond seed noise)")


def _draw_training_curves(ax: "Axes", report: Report, colours: dict[str, str]) -> None:
    """Each trial's validation loss along training: thin faint lines, context for the final points."""
    for curve in report.training_curves:
        x, y = _array(curve.flops), _array(curve.val_loss)
        if x is None or y is None or x.size != y.size:
            continue
        ok = np.isfinite(x) & (x > 0) & np.isfinite(y)
        if ok.sum() >= 2:
            ax.plot(x[ok], y[ok], color=colours.get(curve.series, "#999999"), lw=0.7, alpha=0.3, zorder=1)


def _target_lines(report: Report, prefix: tuple[str, ...], field: str) -> list[tuple[float, str]]:
    """Distinct target positions (x, short label) from target rows whose name starts with ``prefix``
    (chinchilla comparisons name them "C=..."/"N=...", power-law ones "flops=..."/"params_nonembed=...");
    labels in the report's formats: "C=5.88e23" (scaling.formatting.sci), "N=70B" (a parameter count)."""
    found: dict[float, str] = {}
    for row in report.targets:
        value = getattr(row, field)
        if row.target.startswith(prefix) and _positive(value) and float(value) not in found:
            found[float(value)] = f"C={sci(float(value))}" if field == "flops" else f"N={format_count(float(value))}"
    return sorted(found.items())


def _mark_targets(ax: "Axes", lines: list[tuple[float, str]]) -> None:
    """Dotted vertical lines at the targets, labelled just above the axes (where no interval bar
    or curve can cover the label)."""
    for k, (x, label) in enumerate(lines):
        ax.axvline(x, color="#555555", ls=":", lw=1.0, zorder=0)
        # two rows, alternating: labels of targets a decade apart would overlap on one
        ax.text(x, 1.005 + 0.04 * (k % 2), label, transform=ax.get_xaxis_transform(), va="bottom", ha="center",
                fontsize=7.5, color="#444444")


def _shade_extrapolated(ax: "Axes", observed_max: float | None) -> None:
    """Grey out everything right of the largest run: the numbers there are extrapolations."""
    if observed_max is None:
        return
    left, right = ax.get_xlim()
    if right <= observed_max:
        return
    ax.axvspan(observed_max, right, color="#888888", alpha=0.07, lw=0, zorder=0)
    ax.text(observed_max, 0.02, "  extrapolated \u2192", transform=ax.get_xaxis_transform(),
            va="bottom", ha="left", fontsize=8, color="#555555")
    ax.set_xlim(left, right)


def _loss_limits(ax: "Axes", points: list[Point], bands: list[Band], extra: Sequence[float] = ()) -> None:
    """Y range from the runs, fitted curves and interval bars (``extra``), so early-training losses
    do not squash the plot."""
    values = [float(p.val_loss) for p in points if _finite(p.val_loss)] + [float(v) for v in extra if _finite(v)]
    for band in bands:
        for arr in (band.loss, band.pred_low, band.pred_high):
            a = _array(arr)
            if a is not None:
                values.extend(a[np.isfinite(a)].tolist())
    if not values:
        return
    low, high = min(values), max(values)
    pad = 0.06 * (high - low) if high > low else 0.1 * max(abs(high), 1.0)
    ax.set_ylim(low - pad, high + pad)


def _outside_legend(ax: "Axes", handles: list[Any] | None = None, labels: list[str] | None = None) -> None:
    """Legend to the right of the axes: curves and target labels fill the whole plot area."""
    if handles is None or labels is None:
        handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def shaded_series(report: Report) -> list[str]:
    """The series whose intervals are drawn: the baseline and the headline contender (the one the
    advice and the verdict lead with), so bands of many series do not merge into one block."""
    advice = report.settings.get("advice") or {}
    chosen = [report.baseline] + ([advice["series"]] if advice.get("series") else [])
    if len(chosen) == 1:
        others = [s for s in report.series if s != report.baseline]
        chosen += others[:1]
    return [s for s in dict.fromkeys(chosen) if s]


def _legend_with_intervals(ax: "Axes", shown: list[str], colours: dict[str, str], new_run: bool) -> None:
    """The series' lines plus, per series whose intervals are drawn, swatches in its own colour for
    the interval bars (the expected loss's, and a new run's where it is wider)."""
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    for series in shown:
        colour = colours.get(series, "#555555")
        handles.append(Line2D([], [], color=colour, lw=6, alpha=0.45, solid_capstyle="butt"))
        labels.append(f"{series}: 95% interval, expected loss")
        if new_run:
            handles.append(Line2D([], [], color=colour, lw=1.2, alpha=0.9))
            labels.append(f"{series}: 95% interval, a new run")
    if handles:
        _outside_legend(ax, handles, labels)


def _interval_at(band: Band, x: float, low: list | None, high: list | None) -> tuple[float, float] | None:
    """A band's interval at ``x`` (log-linear interpolation), None outside it or without one."""
    xs, lo, hi = _array(band.x), _array(low), _array(high)
    if xs is None or lo is None or hi is None or xs.size < 2 or not (xs.min() <= x <= xs.max()):
        return None
    ok = np.isfinite(xs) & (xs > 0) & np.isfinite(lo) & np.isfinite(hi)
    if ok.sum() < 2:
        return None
    lx = np.log(xs[ok])
    return float(np.interp(np.log(x), lx, lo[ok])), float(np.interp(np.log(x), lx, hi[ok]))


def withheld_positions(report: Report, axis: str) -> set[float]:
    """Target positions on `axis` where every row is withheld (unidentified): not a prediction."""
    field = "flops" if axis == "flops" else "params_nonembed"
    rows: dict[float, list[bool]] = {}
    for t in report.targets:
        value = getattr(t, field)
        if _positive(value):
            rows.setdefault(float(value), []).append(bool(t.unidentified))
    return {x for x, flags in rows.items() if flags and all(flags)}


def _mark_withheld(ax: "Axes", report: Report, axis: str, positions: list[float]) -> None:
    """A marker at the top edge for each withheld target: where the user asked, and that nothing is
    predicted there, without an interval that would stretch the loss axis."""
    withheld = withheld_positions(report, axis)
    xs = [x for x in positions if x in withheld]
    if xs:
        ax.scatter(xs, [0.97] * len(xs), transform=ax.get_xaxis_transform(), marker="v", s=40, color="#777777",
                   zorder=5, label="target withheld (no prediction)", clip_on=False)


def _target_intervals(report: Report, axis: str, series: str, positions: list[float],
                      bands: list[Band]) -> list[tuple[float, tuple[float, float] | None, tuple[float, float] | None]]:
    """(x, expected-loss interval, new-run interval) at each target position: the target rows' own
    numbers where the report has rows on this axis (so the figure shows the table's intervals), else
    the series' band read at that position."""
    field = "flops" if axis == "flops" else "params_nonembed"
    prefix = COMPUTE_TARGET_PREFIXES if axis == "flops" else SIZE_TARGET_PREFIXES
    rows = {float(getattr(t, field)): t for t in report.targets
            if t.series == series and t.target.startswith(prefix) and not t.unidentified
            and _positive(getattr(t, field)) and (not t.target.startswith("N=") or "tokens/param" in t.target)}
    band = next((b for b in bands if b.series == series and b.axis == axis), None)
    withheld = withheld_positions(report, axis)
    out = []
    for x in positions:
        row = rows.get(x)
        if x in withheld:  # no prediction there: its interval would only set the scale (drawn as a marker)
            fit = new = None
        elif row is not None:
            fit = (row.low, row.high) if _finite(row.low) and _finite(row.high) else None
            new = (row.pred_low, row.pred_high) if _finite(row.pred_low) and _finite(row.pred_high) else None
        elif band is not None:
            fit = _interval_at(band, x, band.fit_low, band.fit_high)
            new = _interval_at(band, x, band.pred_low, band.pred_high)
        else:
            fit = new = None
        out.append((x, fit, new))
    return out


def _draw_target_intervals(ax: "Axes", report: Report, axis: str, positions: list[float], colours: dict[str, str],
                           bands: list[Band]) -> tuple[list[str], bool, list[float]]:
    """Interval bars at the targets for the shaded series, side by side (offset along the log
    axis) so they never merge: (series drawn, whether any new-run bar was wider, y values drawn)."""
    shown, new_run, ys = [], False, []
    shaded = shaded_series(report)
    for k, series in enumerate(shaded):
        offset = 10 ** (0.09 * (k - (len(shaded) - 1) / 2.0))
        drawn = False
        for x, fit, new in _target_intervals(report, axis, series, positions, bands):
            colour = colours.get(series, "#555555")
            if new is not None and (fit is None or new[1] - new[0] > 1.02 * (fit[1] - fit[0])):
                ax.plot([x * offset] * 2, new, color=colour, lw=1.2, alpha=0.9, zorder=4)
                new_run, drawn = True, True
                ys += list(new)
            if fit is not None:
                ax.plot([x * offset] * 2, fit, color=colour, lw=6, alpha=0.45, solid_capstyle="butt", zorder=4)
                drawn = True
                ys += list(fit)
        if drawn:
            shown.append(series)
    return shown, new_run, ys


def _loss_vs_axis(report: Report, axis: str, with_curves: bool, targets: list[tuple[float, str]],
                  xlabel: str, title: str) -> "Figure | None":
    """Shared body of the compute and size plots: runs, fitted laws, targets with their intervals."""
    colours = series_colours(report)
    bands = [b for b in report.bands if b.axis == axis]
    points = [p for p in report.points if _positive(_point_x(p, axis)) and _finite(p.val_loss)]
    if not points and not bands:
        return None
    fig = new_figure()
    ax = fig.add_subplot()
    ax.set_xscale("log")
    if with_curves:
        _draw_training_curves(ax, report, colours)
    for series in _series_order(report, [*(p.series for p in points), *(b.series for b in bands)]):
        colour = colours[series]
        labelled = False
        for band in (b for b in bands if b.series == series):
            if _draw_band(ax, band, colour, None if labelled else series, _line_width(report, series), shade=False):
                labelled = True
        _draw_points(ax, [p for p in points if p.series == series], axis, colour, None if labelled else series)
    _mark_missed(ax, report, points, axis)
    _mark_targets(ax, targets)
    shown, new_run, ys = _draw_target_intervals(ax, report, axis, [x for x, _ in targets], colours, bands)
    _loss_limits(ax, points, [Band(b.series, b.axis, b.x, b.loss) for b in bands], ys)
    _mark_withheld(ax, report, axis, [x for x, _ in targets])
    _shade_extrapolated(ax, max((_point_x(p, axis) for p in points), default=None))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(title, pad=(26 if len(targets) > 1 else 16) if targets else 6)
    ax.grid(True, which="major", alpha=0.3)
    _legend_with_intervals(ax, shown, colours, new_run)
    return fig


def loss_vs_compute(report: Report) -> "Figure | None":
    """Loss against training FLOPs: the view in which budgets (C=...) are compared."""
    return _loss_vs_axis(report, "flops", True, _target_lines(report, COMPUTE_TARGET_PREFIXES, "flops"),
                         "training compute (FLOPs)", "Validation loss against training compute")


def loss_vs_params(report: Report) -> "Figure | None":
    """Loss against non-embedding parameters: the view in which target sizes (N=...) are compared."""
    # a power law in compute has no size targets: mark the target sizes themselves (bars read from the bands),
    # unless every target is withheld (then nothing at the targets is a result)
    withheld = bool(report.targets) and all(t.unidentified for t in report.targets)
    lines = _target_lines(report, SIZE_TARGET_PREFIXES, "params_nonembed") or ([] if withheld else [
        (float(n), f"N={format_count(float(n))}") for n in report.settings.get("target_sizes", []) if _positive(n)])
    return _loss_vs_axis(report, "params_nonembed", False, lines, "non-embedding parameters",
                         "Validation loss against model size")


# --- segment length -------------------------------------------------------------------------


def _segment_archs(points: list[Point]) -> dict[str, list[Point]]:
    """Architectures whose runs cover at least two segment lengths, with those runs."""
    by_arch: dict[str, list[Point]] = defaultdict(list)
    for p in points:
        by_arch[p.arch].append(p)
    return {arch: ps for arch, ps in by_arch.items() if len({p.segment_len for p in ps}) >= 2}


def _n_segments(point: Point) -> float:
    """Number of segments; a run without caching ("-") counts as one segment."""
    return 1.0 if point.segment_len == "-" else float(point.n_segments)


def _size_lines(points: list[Point]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Per size label (ordered by parameters): mean loss at each number of segments."""
    by_size: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    params: dict[str, list[float]] = defaultdict(list)
    for p in points:
        n = _n_segments(p)
        if _positive(n) and _finite(p.val_loss):
            by_size[p.size_label][n].append(float(p.val_loss))
            if _finite(p.params_nonembed):
                params[p.size_label].append(float(p.params_nonembed))
    order = sorted(by_size, key=lambda s: float(np.median(params[s])) if params[s] else math.inf)
    lines = []
    for label in order:
        ns = sorted(by_size[label])
        lines.append((label, np.array(ns), np.array([np.mean(by_size[label][n]) for n in ns])))
    return lines


def segment_effect(report: Report) -> "Figure | None":
    """Loss against the number of segments per size: does more (shorter) segments help or hurt?"""
    from matplotlib import colormaps
    from matplotlib.ticker import NullFormatter

    archs = {a: ps for a, ps in _segment_archs(report.points).items() if _size_lines(ps)}
    if not archs:
        return None
    fig = new_figure(min(16.0, max(FIGSIZE[0], 4.5 * len(archs))), FIGSIZE[1])
    axes = fig.subplots(1, len(archs), squeeze=False)[0]
    for ax, (arch, points) in zip(axes, archs.items()):
        lines = _size_lines(points)
        cmap = colormaps["viridis"]
        for i, (label, n, loss) in enumerate(lines):
            colour = cmap(0.85 * i / max(1, len(lines) - 1))
            ax.plot(n, loss, marker="o", color=colour, lw=1.5, label=label)
        ax.set_xscale("log", base=2)
        ticks = sorted({float(v) for _, n, _ in lines for v in n})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("number of segments")
        ax.set_ylabel("validation loss (nats/token)")
        ax.set_title(arch)
        ax.grid(True, alpha=0.3)
        ax.legend(title="size", fontsize=8, title_fontsize=8)
    fig.suptitle("Effect of the segment length (fewer, longer segments to the left)")
    return fig


# --- recall -----------------------------------------------------------------------------------


def _mean_needle(point: Point) -> float | None:
    """Mean needle-in-a-haystack accuracy over context lengths, None without any."""
    values = [float(v) for v in (point.needle_acc or {}).values() if _finite(v)]
    return float(np.mean(values)) if values else None


def _sorted_by_series(report: Report, pairs: dict[str, list[tuple[float, float]]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per series in report order: its (x, y) pairs sorted by x, as two arrays ready to plot."""
    result = {}
    for series in _series_order(report, pairs):
        xy = sorted(pairs[series])
        result[series] = (np.array([a for a, _ in xy]), np.array([b for _, b in xy]))
    return result


def _recall_series(report: Report, metric: Callable[[Point], Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per series: (params, metric) sorted by params, skipping runs without the metric."""
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for p in report.points:
        value = metric(p)
        if _finite(value) and _positive(p.params_nonembed):
            out[p.series].append((float(p.params_nonembed), float(value)))
    return _sorted_by_series(report, out)


RECALL_PANELS = (("MQAR accuracy", "mqar"), ("needle-in-a-haystack accuracy (mean over context lengths)", "needle"))


def _no_signal(values: Sequence[float], chance: float | None) -> bool:
    """Every value 0, or none above chance: a panel of it shows nothing but the chance line."""
    return bool(values) and (max(values) <= 0.0 or (chance is not None and max(values) <= chance))


def recall_panels_without_signal(report: Report) -> list[str]:
    """One sentence per recall metric whose every run sits at 0 or at chance: said, not drawn."""
    chance = report.settings.get("recall_chance") or {}
    out = []
    for title, key in RECALL_PANELS:
        metric = (lambda p: p.mqar_acc) if key == "mqar" else _mean_needle
        values = [float(v) for p in report.points if _finite(v := metric(p))]
        if _no_signal(values, chance.get(key)):
            level = chance.get(key)
            out.append(f"{title[0].upper()}{title[1:]}: every run scores {100 * max(values):.1f}% at most"
                       + (f", at or below chance ({100 * level:.1f}%)" if level is not None and max(values) > 0 else "")
                       + ", so the runs did not learn it at these sizes; no panel is drawn for it.")
    return out


def recall_vs_scale(report: Report) -> "Figure | None":
    """MQAR and needle accuracy against size: recall is where caching should pay off. A metric with no
    signal (every run at 0 or at chance) gets no panel (`recall_panels_without_signal` says it)."""
    colours = series_colours(report)
    chance_levels = report.settings.get("recall_chance") or {}
    panels = [(title, data) for (title, key), data in zip(RECALL_PANELS, (
        _recall_series(report, lambda p: p.mqar_acc), _recall_series(report, _mean_needle)))
        if data and not _no_signal([float(v) for _, y in data.values() for v in y], chance_levels.get(key))]
    if not panels:
        return None
    fig = new_figure(FIGSIZE[0] if len(panels) == 1 else 11.0, FIGSIZE[1])
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    chance = (report.settings.get("recall_chance") or {})
    markers = "osD^vP*X"
    for ax, (title, data) in zip(axes, panels):
        for k, (series, (x, y)) in enumerate(data.items()):
            # distinct markers and a small horizontal offset per series: equal accuracies (often all
            # at chance) would otherwise hide every series but the last one drawn
            offset = 1.0 + 0.025 * (k - (len(data) - 1) / 2.0)
            ax.plot(x * offset, y, marker=markers[k % len(markers)], color=colours[series],
                    lw=_line_width(report, series), label=series, alpha=0.9)
        level = chance.get("mqar" if title.startswith("MQAR") else "needle")
        if level is not None:
            ax.axhline(level, color="#555555", ls="--", lw=1.0, zorder=0)
            ax.text(0.01, level, f" chance ({100 * level:.1f}%)", transform=ax.get_yaxis_transform(), va="bottom",
                    fontsize=7.5, color="#444444")
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("non-embedding parameters")
        ax.set_ylabel("accuracy")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Recall against model size")
    return fig


# --- inference cost ---------------------------------------------------------------------------


def _cost_lines(report: Report, value: Callable[[Any], float]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per series: (seq_len, value) sorted by seq_len, keeping only what fits a log-log plot."""
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for c in report.costs:
        v = value(c)
        if _positive(c.seq_len) and _positive(v):
            out[c.series].append((float(c.seq_len), float(v)))
    return _sorted_by_series(report, out)


def _cost_total_bytes(cost: Any) -> float:
    """Bytes a sequence holds at inference: recurrent state plus cached segment memories."""
    parts = [cost.state_bytes, cost.cache_bytes]
    return sum(float(v) for v in parts if _finite(v)) if any(_finite(v) for v in parts) else math.nan


def cost_vs_context(report: Report) -> "Figure | None":
    """FLOPs and memory per token against context length: what the loss gains cost at inference."""
    if not report.costs:
        return None
    colours = series_colours(report)
    flops = _cost_lines(report, lambda c: c.forward_flops_per_token)
    memory = _cost_lines(report, _cost_total_bytes)
    if not flops and not memory:
        return None
    fig = new_figure(12.0, FIGSIZE[1])
    left, right = fig.subplots(1, 2)
    for series, (x, y) in flops.items():
        left.plot(x, y, marker=".", color=colours[series], lw=_line_width(report, series), label=series)
    for series, (x, y) in memory.items():
        right.plot(x, y, marker=".", color=colours[series], lw=_line_width(report, series), label=series)
    first = _series_order(report, (c.series for c in report.costs))[0]
    kv = [(float(c.seq_len), float(c.transformer_kv_cache_bytes)) for c in report.costs
          if c.series == first and _positive(c.seq_len) and _positive(c.transformer_kv_cache_bytes)]
    if kv:
        x, y = zip(*sorted(kv))
        right.plot(x, y, ls="--", color="#888888", lw=1.4, label=KV_CACHE_LABEL)
    for ax, ylabel, title in ((left, "forward FLOPs per token", "Compute per token"),
                              (right, "bytes per sequence (state + cache)", "Memory per sequence")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    sizes = [float(c.params_nonembed) for c in report.costs if _positive(c.params_nonembed)]
    at = f" at {format_count(float(np.median(sizes)))} non-embedding parameters" if sizes else ""
    fig.suptitle(f"Inference cost against context length{at}")
    return fig


# --- fit diagnostics --------------------------------------------------------------------------


def _residual_series(report: Report) -> tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(x axis name, per series (x, residual %)). A series whose residual count differs from its
    point count is skipped: residuals are matched to points by position, so a mismatch would
    put them on the wrong runs."""
    fit = report.fit or {}
    axis = "flops" if fit.get("law_input") == "flops" else "params_nonembed"
    groups = fit.get("groups") or {}
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for series in _series_order(report, groups):
        residuals = _array((groups.get(series) or {}).get("residuals_log") or [])
        points = [p for p in report.points if p.series == series]
        if residuals is None or residuals.size == 0 or residuals.size != len(points):
            continue
        x = np.array([_point_x(p, axis) if _finite(_point_x(p, axis)) else math.nan for p in points])
        ok = np.isfinite(x) & (x > 0) & np.isfinite(residuals)
        if ok.any():
            out[series] = (x[ok], 100.0 * np.expm1(residuals[ok]))
    return axis, out


def residuals(report: Report) -> "Figure | None":
    """Each run's distance from its fitted law: a trend here means the law's form is wrong."""
    axis, data = _residual_series(report)
    if not data:
        return None
    colours = series_colours(report)
    fig = new_figure()
    ax = fig.add_subplot()
    ax.axhline(0.0, color="#000000", lw=0.8)
    for series, (x, y) in data.items():
        ax.scatter(x, y, color=colours[series], s=30, label=series, zorder=3, edgecolors="white", linewidths=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("training compute (FLOPs)" if axis == "flops" else "non-embedding parameters")
    ax.set_ylabel("actual / predicted loss - 1 (%)")
    ax.set_title(f"Fit residuals ({(report.fit or {}).get('law', 'fit')} law)")
    ax.grid(True, alpha=0.3)
    _outside_legend(ax)
    return fig


# --- where Memory Caching helps (scaling.report.positions) ------------------------------------


def mc_position_gap(report: Report) -> "Figure | None":
    """MC minus its base memory's validation loss per position bucket, one line per MC series, with
    a zero line and a dotted mark where each series' first segment ends (before it: no cache read)."""
    gaps = position_gaps(report)
    if not gaps:
        return None
    colours = series_colours(report)
    fig = new_figure()
    ax = fig.add_subplot()
    ax.axhline(0.0, color="#000000", lw=0.9, zorder=1)
    for g in gaps:
        colour = colours.get(g.series, TAB10[0])
        ax.plot(g.mid_tokens, g.difference, color=colour, marker="o", ms=4.5, lw=1.6,
                label=f"{g.series} - {g.base} ({g.size_label})", zorder=3)
        if g.first_segment_end < g.seq_len:
            ax.axvline(g.first_segment_end - 0.5, color=colour, ls=":", lw=1.1, zorder=2)
    ax.plot([], [], color="#555555", ls=":", lw=1.1, label="first segment ends (before: no cache to read)")
    ax.set_xlim(0, max(g.seq_len for g in gaps))
    ax.set_xlabel("position in the sequence (tokens; each point is a bucket's middle)")
    ax.set_ylabel("MC minus base validation loss (nats/token)")
    ax.set_title("Where Memory Caching helps: the loss difference by position")
    ax.grid(True, alpha=0.3)
    _outside_legend(ax)
    return fig


def online_gate_mass(report: Report) -> "Figure | None":
    """The online memory's mean gate weight per segment index, one line per gated MC series (mean over
    layers and seeds), its value at initialisation dotted; y from 0 to 1."""
    gaps = [g for g in position_gaps(report) if g.online_gate]
    if not gaps:
        return None
    colours = series_colours(report)
    fig = new_figure()
    ax = fig.add_subplot()
    for g in gaps:
        colour = colours.get(g.series, TAB10[0])
        segments = list(range(len(g.online_gate)))
        ax.plot(segments, g.online_gate, color=colour, marker="o", ms=4.5, lw=1.6, label=g.series, clip_on=False,
                zorder=3)
        if g.online_gate_init:
            ax.plot(segments, g.online_gate_init, color=colour, ls=":", lw=1.1, zorder=2)
    if any(g.online_gate_init for g in gaps):
        ax.plot([], [], color="#555555", ls=":", lw=1.1, label="at initialisation")
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("segment index (segment s reads the caches of segments 0 to s-1)")
    ax.set_ylabel("gate weight on the online memory")
    ax.set_title("How much of the read stays with the online memory")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, alpha=0.3)
    _outside_legend(ax)
    return fig


# --- all together -----------------------------------------------------------------------------

def recall_curves(report: Report) -> "Figure | None":
    """The recall phase's accuracy against parameters and bytes (scaling.report.recall)."""
    return recall_figure(report)


FIGURE_MAKERS: dict[str, Callable[[Report], "Figure | None"]] = {
    "recall_curves.png": recall_curves,
    "loss_vs_compute.png": loss_vs_compute,
    "loss_vs_params.png": loss_vs_params,
    "segment_effect.png": segment_effect,
    "recall_vs_scale.png": recall_vs_scale,
    "cost_vs_context.png": cost_vs_context,
    "residuals.png": residuals,
    GAP_FIGURE: mc_position_gap,
    GATE_FIGURE: online_gate_mass,
}


def draw_figures(report: Report) -> dict[str, bytes]:
    """Every figure the report has data for, as ``{file name: PNG bytes}`` in a fixed order."""
    out: dict[str, bytes] = {}
    for name, make in FIGURE_MAKERS.items():
        fig = make(report)
        if fig is not None:
            out[name] = _png(fig)
    return out
