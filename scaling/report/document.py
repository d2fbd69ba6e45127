"""The report's content as a list of blocks (headings, paragraphs, tables, figures, lists).

Why a neutral document: `report.md` and `report.html` must say the same thing. The sections
are written once here from a `Report`; `render.py` only turns blocks into Markdown or HTML.
"""

from __future__ import annotations

import math
from typing import Any

from scaling.fit.degenerate import consolidate
from scaling.formatting import ACCURACY_DIGITS, byte_size, interval, loss, percent, sci, signed
from scaling.models.ladder import format_count
from scaling.report.blocks import Block, Bullets, FigureRef, Heading, Paragraph, Table
from scaling.report.figures import FIGURE_TITLES
from scaling.report.in_range import in_range_section
from scaling.report.positions import positions_section
from scaling.report.recall import recall_section
from scaling.report.schema import Report


def _count(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else format_count(value)


_EMPTY_CELLS = ("n/a", "")


def _table(headers: list[str], rows: list[list[str]], caption: str = "", optional: tuple[str, ...] = ()) -> Table:
    """A table without the ``optional`` columns whose every cell is empty or n/a (a power law in
    compute has no N or D at its targets: a column of n/a tells a reader nothing)."""
    keep = [i for i, h in enumerate(headers) if h not in optional or any(row[i] not in _EMPTY_CELLS for row in rows)]
    return Table([headers[i] for i in keep], [[row[i] for i in keep] for row in rows], caption)


def _series_rank(report: Report, series: str) -> int:
    """Position of a series in the report's stable order: the baseline first, then as in the spec."""
    order = [report.baseline] + [s for s in report.series if s != report.baseline]
    return order.index(series) if series in order else len(order)


def _figure(report: Report, name: str, blocks: list[Block], note: str = "") -> None:
    if name in report.figures:
        blocks.append(FigureRef(name, FIGURE_TITLES.get(name, name) + note))


HEADLINE_HEADING = "In short"
DETAILS_HEADING = "Details"  # the full verdict, below the headline


def headline_blocks(report: Report) -> list[Block]:
    """The answer first: the report's headline (at most five sentences), before any setting or table."""
    return [Heading(HEADLINE_HEADING), Paragraph(" ".join(report.headline))] if report.headline else []


def build_document(report: Report) -> list[Block]:
    """Every section of the report, in reading order."""
    if not report.points and report.recall:
        from scaling.report.recall import recall_only_document

        blocks = recall_only_document(report)
        return blocks[:1] + headline_blocks(report) + blocks[1:]
    s = report.settings
    blocks: list[Block] = [Heading(f"Scaling report: {report.study}", 1)]
    blocks += headline_blocks(report)
    law_text = s.get("formula", "")
    blocks.append(Paragraph(
        f"Generated {report.generated_at}. Law: {law_text}"
        + (f", shared {', '.join(s['shared'])}" if s.get("shared") else "")
        + f"; {s.get('bootstrap', 0)} bootstrap resamples of whole runs; 95% intervals calibrated by nested "
        "leave-top-rung-out backtests and averaged over functional forms (see Calibration). Compute: "
        f"{s.get('flops_source', '')}. Compute targets: {s.get('target_budget_rule', '')}. Baseline: {report.baseline}."))
    blocks += recall_section(report)  # what the study resolved leads: recall, MC against its base, then the verdict
    blocks += in_range_section(report)
    blocks += [Heading(DETAILS_HEADING), Paragraph(report.verdict)]
    blocks += _predictions(report)
    blocks += _calibration(report)
    blocks += _curves(report)
    blocks += _segments(report)
    blocks += positions_section(report)
    blocks += _recall(report)
    blocks += _costs(report)
    blocks += _backtest(report)
    blocks += _advice(report)
    blocks += _diagnostics(report)
    blocks += [Heading("Caveats"), Bullets(list(report.caveats))]
    blocks += _data(report)
    return blocks


def _far_widths(report: Report) -> list[Block]:
    """Targets withheld as unpredictable still show their calibrated width: the extrapolation a user
    asked for, and how far from a prediction it is (the factor between the interval's ends)."""
    rows = [[t.target, t.series, _count(t.params_nonembed), interval(t.low, t.high), interval(t.pred_low, t.pred_high),
             f"{t.pred_high / t.pred_low:,.0f}x"]
            for t in report.targets if t.unidentified and t.pred_low and t.pred_high and t.pred_low > 0]
    if not rows:
        return []
    return [_table(["target", "series", "N (params)", "95% interval (expected loss)", "95% interval (a new run)",
                    "high / low"], rows,
                   "The extrapolation beyond the data: calibrated 95% intervals at the withheld targets. An interval "
                   "spanning more than a factor of 10 is not a prediction, so no point value or difference is given; "
                   "its width is what these runs can say there.", optional=("N (params)",))]


def _predictions(report: Report) -> list[Block]:
    versus = {(v.target, v.series): v for v in report.versus}
    rows = []
    bound = set(report.settings.get("floor_bound_targets") or [])
    withheld = sorted({t.target for t in report.targets if t.unidentified}, key=[t.target for t in report.targets].index)
    for t in report.targets:
        if t.unidentified:
            continue
        v = versus.get((t.target, t.series))
        rows.append([
            t.target, t.series, _count(t.params_nonembed), sci(t.tokens), sci(t.flops), loss(t.loss),
            interval(t.low, t.high), interval(t.pred_low, t.pred_high),
            "baseline" if t.series == report.baseline else (signed(v.difference) if v else
                                                           "withheld" if t.target in bound else "n/a"),
            "" if v is None else interval(v.low, v.high, signed), "" if v is None or v.p_better is None else percent(v.p_better),
        ])
    blocks: list[Block] = [Heading("Predictions at the targets")]
    if rows:
        blocks.append(_table(
            ["target", "series", "N (params)", "D (tokens)", "C (FLOPs)", "loss", "95% interval (expected loss)",
             "95% interval (a new run)", f"minus {report.baseline}", "difference 95% interval",
             f"P(lower than {report.baseline})"], rows,
            "Loss: the forms' predictions averaged by their backtest record. Intervals: calibrated against nested "
            "leave-top-rung-out backtests (lack of fit, parameter, form and extrapolation uncertainty; a new run adds "
            "seed noise). P: share of calibrated joint draws in which the series' loss is lower than the baseline's. "
            f"\"Resolved\" in the verdict uses the family-wise level {percent(report.settings.get('family_level'), 2)} "
            "(95% over every series x target compared).", optional=("N (params)", "D (tokens)", "C (FLOPs)")))
    floor_bound = consolidate(f for f in report.settings.get("unidentified", []) if f.get("refuses") == "difference")
    if floor_bound:
        blocks.append(Paragraph(f"Differences withheld: {floor_bound[0]}."))
    if withheld:
        reasons = "; ".join(dict.fromkeys(t.unidentified or "" for t in report.targets if t.unidentified))
        blocks.append(Paragraph(f"Withheld ({len(withheld)} target{'s' if len(withheld) > 1 else ''}: "
                                f"{', '.join(withheld[:4])}{', ...' if len(withheld) > 4 else ''}): {reasons}."))
        blocks += _far_widths(report)
    def crossing_interval(c: Any) -> str:
        if c.low is not None and c.high is not None:
            return interval(c.low, c.high, sci if "flops" in c.axis else _count)
        if c.fraction_of_draws_crossing is None:
            return "no interval (no bootstrap)"
        return "none: most draws do not cross"

    cross = [[c.series, c.baseline, c.axis, sci(c.at) if "flops" in c.axis else _count(c.at), crossing_interval(c),
              percent(c.fraction_of_draws_crossing), c.status] for c in report.crossovers]
    if cross:
        blocks += [Heading("Where the curves cross", 3), Table(
            ["series", "baseline", "axis", "crossing (averaged curves)", "95% interval (draws that cross)",
             "draws crossing", "status"], cross,
            "First crossing of the series' averaged curve with the baseline's, searched from the smallest run to 10x "
            "the largest target; the interval is given only when most calibrated draws cross.")]
    frontier = report.comparison.get("frontier", []) if report.settings.get("law") == "chinchilla" else []
    if frontier:
        frontier = sorted(frontier, key=lambda f: (_series_rank(report, f["group"]), f["flops"]))
        withheld_why = next((f.get("interval_withheld") for f in frontier if f.get("interval_withheld")), None)
        rows = [[f["group"], sci(f["flops"]), _count(f["params_nonembed"]["value"]), sci(f["tokens"]["value"]),
                 loss(f["loss"]["value"]), interval(f["loss"].get("low"), f["loss"].get("high"))] for f in frontier]
        caption = ("With each series' exact FLOPs per token, C = f(N) D; N_opt minimises the chinchilla fit's loss at "
                   "fixed C. Loss interval: the calibrated 95% interval of the expected loss at that budget.")
        blocks += [Heading("Compute-optimal allocation", 3), Table(
            ["series", "C (FLOPs)", "N_opt", "D_opt (tokens)", "loss", "loss 95% interval"], rows,
            caption + (f" N_opt and D_opt: {withheld_why}." if withheld_why else ""))]
    return blocks


_COMPONENTS = ("seed noise", "lack of fit", "parameters", "form", "extrapolation")

#: What the calibration does and what checks it, in the report's own words.
METHOD_TEXT = (
    "Method: each functional form is fitted to the study's runs and backtested inside them (each series' top 1 to 3 "
    "compute rungs held out in turn, refitted and predicted). The errors of those nested backtests weight the forms "
    "and set how fast every interval widens with the distance beyond the largest run; seed noise, lack of fit, "
    "parameter (bootstrap) and form uncertainty are added in quadrature (scaling.fit.calibration). The method is "
    "checked on public scaling-law data by benchmarks/calibration.py (25 leave-top-rung-out backtests over six "
    "published families; every constant of the calibration chosen with the scored family left out), which measures "
    "the coverage of intervals of losses. Intervals of differences between "
    "series use the same inflation, drawn jointly for both series (the same form and bootstrap resample, drift "
    "correlated as the series' nested errors are). The public data hold no pairs of architectures on one ladder; "
    "on 12 pairs of variants trained side by side on one grid (benchmarks/calibration.py --pairs: three corpora in "
    "Gadre et al. and in Marin's isoFLOPs, one-choice-apart configurations in Porian et al.), these difference "
    "intervals covered 85% of 83 held-out differences at 50% and all of them at 80-95%: conservative, about 2.8x "
    "wider than the plain bootstrap's (which covered 76% at 95%). A difference called resolved here is therefore "
    "resolved with room to spare, and some real differences will not be called.")


def _calibration(report: Report) -> list[Block]:
    """Each form's weight and prediction, and where the interval width comes from."""
    cal = report.settings.get("calibration") or {}
    forms: dict[str, Any] = cal.get("forms", {})
    if not forms:
        return []
    blocks: list[Block] = [Heading("Calibration: functional forms and variance components", 3), Paragraph(METHOD_TEXT)]
    # e.g. where the drift beyond the data comes from other families' histories (too few rungs to measure it here)
    blocks += [Paragraph(f"Note: {note}.") for note in cal.get("notes") or []]
    blocks.append(Table(["form", "formula", "weight", "nested backtest RMS error", "nested points", "why no weight"],
                        [[name, f.get("formula") or "", percent(f.get("weight"), 0),
                          percent(f.get("nested_rmse"), 2) if f.get("nested_rmse") is not None else "n/a",
                          str(f.get("n_nested", 0)), f.get("excluded") or ""] for name, f in forms.items()],
                        "Weights: inverse mean squared error of each form's nested leave-top-rung-out backtests "
                        "(the top 1-3 compute rungs of every series held out in turn and predicted)."))
    names = [n for n, f in forms.items() if f.get("formula")]
    large = max((t for t in report.targets if not t.unidentified and t.forms),
                key=lambda t: (t.flops or 0.0, t.params_nonembed or 0.0), default=None)
    if large is not None:
        rows = [[t.series] + [loss(t.forms.get(n)) for n in names] + [loss(t.loss)]
                for t in report.targets if t.target == large.target]
        blocks.append(Table(["series"] + names + ["averaged"], rows, f"Each form's prediction at {large.target}."))
    comps: dict[str, Any] = report.settings.get("variance_components") or {}
    if comps:
        rows = [[g] + ["not measured" if k == "seed noise" and c.get(k) is None else percent(c.get(k), 2)
                       for k in _COMPONENTS] for g, c in comps.items()]
        blocks.append(Table(["series"] + list(_COMPONENTS), rows,
                            f"Standard deviation of each component at {next(iter(comps.values())).get('target')}, as a "
                            "share of the loss. Seed noise: between repeated seeds, else the scatter of each run's late "
                            "evaluations around a smooth curve (not measured when neither is available; then it is inside lack of "
                            "fit); lack of fit: in-sample scatter beyond seed noise; parameters: the "
                            "bootstrap; form: spread between the weighted forms; extrapolation: the drift per decade "
                            "measured by the nested backtests times the decades beyond the largest run."))
    return blocks


def _curves(report: Report) -> list[Block]:
    blocks: list[Block] = [Heading("Loss against compute and parameters")]
    # the captions promise intervals at the targets: say so where every target is withheld
    note = ("" if any(not t.unidentified for t in report.targets) else
            ". No target or interval is drawn: every target is withheld (see Predictions at the targets); the curves "
            "follow the study's own token rule, the one direction the runs pin")
    _figure(report, "loss_vs_compute.png", blocks, note)
    _figure(report, "loss_vs_params.png", blocks, note)
    if len(blocks) == 1:
        blocks.append(Paragraph("No figures were drawn (matplotlib failed or there was nothing to draw)."))
    return blocks


def _segments(report: Report) -> list[Block]:
    blocks: list[Block] = [Heading("Segment length (number of cached segments)")]
    by_arch: dict[str, set[str]] = {}
    for p in report.points:
        by_arch.setdefault(p.arch, set()).add(p.segment_len)
    swept = [a for a, lens in by_arch.items() if len(lens) > 1]
    if not swept:
        blocks.append(Paragraph("This study varies no architecture's segment length, so the effect of the segment count cannot be "
                                "read from it. List several `segment_lens` under one architecture in the spec."))
        return blocks
    _figure(report, "segment_effect.png", blocks)
    sizes = sorted({(p.params_nonembed, p.size_label) for p in report.points if p.arch in swept})
    labels = list(dict.fromkeys(label for _, label in sizes))
    rows = []
    for arch in swept:
        for series in dict.fromkeys(p.series for p in report.points if p.arch == arch):
            own = [p for p in report.points if p.series == series]
            by_label = {p.size_label: p.val_loss for p in own}
            rows.append([arch, series, own[0].segment_len, str(own[0].n_segments)]
                        + [loss(by_label.get(label)) for label in labels])
    blocks.append(Table(["architecture", "series", "segment length C", "segments (L / C)"] + labels, rows,
                        "Final validation loss per size; segments = sequence length L / segment length C (N is kept for parameters)."))
    return blocks


def _recall(report: Report) -> list[Block]:
    blocks: list[Block] = [Heading("Recall accuracy against scale")]
    rows = []
    needle_keys = sorted({k for p in report.points for k in p.needle_acc}, key=lambda k: int(k) if k.isdigit() else 0)
    for p in report.points:
        if p.mqar_acc is None and not p.needle_acc:
            continue
        rows.append([p.series, p.size_label, _count(p.params_nonembed), percent(p.mqar_acc, ACCURACY_DIGITS)]
                    + [percent(p.needle_acc.get(k), ACCURACY_DIGITS) for k in needle_keys])
    if not rows:
        blocks.append(Paragraph("The study ran no recall evaluation (add `data.evals.mqar` or `data.evals.needle`)."))
        return blocks
    from scaling.report.figures import recall_panels_without_signal

    silent = recall_panels_without_signal(report)
    for sentence in silent:
        blocks.append(Paragraph(sentence))
    _figure(report, "recall_vs_scale.png", blocks)
    # a column that is 0.0% in every row says nothing the sentence above does not
    headers = ["series", "size", "N (params)", "MQAR accuracy"] + [f"needle @ {k}" for k in needle_keys]
    keep = [i for i in range(len(headers)) if i < 3 or any(r[i] not in ("0.0%", "n/a") for r in rows)]
    if len(keep) > 3:
        blocks.append(Table([headers[i] for i in keep], [[r[i] for i in keep] for r in rows],
                            "Accuracy on the final evaluation of each run."))
    return blocks


def _costs(report: Report) -> list[Block]:
    blocks: list[Block] = [Heading("Cost per token against context length")]
    if not report.costs:
        blocks.append(Paragraph("No cost table: the study's spec did not describe the series."))
        return blocks
    _figure(report, "cost_vs_context.png", blocks)
    shown = [L for L in sorted({c.seq_len for c in report.costs}) if L in (1024, 8192, 32768, 131072)] or \
        sorted({c.seq_len for c in report.costs})
    rows = []
    for c in report.costs:
        if c.seq_len not in shown:
            continue
        rows.append([c.series, f"{c.seq_len:,}", sci(c.forward_flops_per_token),
                     percent(c.cached_read_flops_per_token / c.forward_flops_per_token if c.forward_flops_per_token else None, 1),
                     byte_size(c.state_bytes + c.cache_bytes), byte_size(c.transformer_kv_cache_bytes)])
    size = report.costs[0].params_nonembed
    blocks.append(Table(["series", "context (tokens)", "forward FLOPs/token", "MC read share", "state + cache per sequence",
                         "Transformer KV cache (same width, depth)"], rows,
                        f"Models shaped by the study's ladder rule at {_count(size)} non-embedding parameters; FLOPs and "
                        "bytes (bf16) from scaling.models.flops. Caching reads grow with the number of segments, so "
                        "they are not automatically cheaper than attention."))
    return blocks


def _backtest(report: Report) -> list[Block]:
    bt = report.backtest or {}
    blocks: list[Block] = [Heading("Backtest: predicting the largest runs from the smaller ones")]
    if bt.get("error"):
        blocks.append(Paragraph(f"No backtest could be run: {bt['error']}."))
        return blocks
    groups: dict[str, Any] = dict(sorted((bt.get("groups") or {}).items(), key=lambda kv: _series_rank(report, kv[0])))
    summary = [[g, str(b["n_fit"]), str(b["n_holdout"]), percent(b["mean_abs_rel_error"], 2),
                percent(b["max_abs_rel_error"], 2), percent(b.get("coverage"))] for g, b in groups.items()]
    points = [[g, _count(p["inputs"].get("params_nonembed")), sci(p["inputs"].get("flops")), loss(p["actual"]),
               loss(p["prediction"]), interval(p.get("low"), p.get("high")), f"{100 * p['rel_error']:+.2f}%",
               "n/a" if p.get("in_interval") is None else ("yes" if p["in_interval"] else "NO")]
              for g, b in groups.items() for p in b["points"]]
    blocks += [Paragraph(f"Split: {bt.get('split', '')}. The refit uses the same law, sharing, bootstrap and "
                         "calibration (its own nested backtests), so its intervals are the calibrated ones."),
               Table(["series", "runs fitted", "runs held out", "mean |error|", "max |error|", "inside 95% interval"],
                     summary),
               _table(["series", "N (params)", "C (FLOPs)", "actual", "predicted", "95% interval (a new run)", "error",
                       "inside"], points,
                      "Each held-out run: its loss, the prediction from the refit and its calibrated prediction interval.",
                      optional=("N (params)", "C (FLOPs)"))]
    return blocks


def advice_table(advice: dict[str, Any]) -> Table | None:
    """The ranked next runs (shared by the report and `mcscale advise`)."""
    candidates = advice.get("candidates") or []
    if not candidates:
        return None
    rates = [c["shrinkage_per_device_hour"] for c in candidates]
    best = max((r for r in rates if math.isfinite(r) and r > 0), default=None)

    def relative(rate: float) -> str:
        return "n/a" if best is None or not math.isfinite(rate) else sci(rate / best, 2)

    rows = [[str(i + 1), c["series"], c["action"], _count(c["params_nonembed"]), sci(c["tokens"]), sci(c["flops"]),
             sci(c["device_hours"], 2), percent(c["shrinkage"], 1), relative(c["shrinkage_per_device_hour"]),
             c.get("note", "")] for i, c in enumerate(candidates)]
    unit = advice.get("device_unit", "device-hours")
    per = unit.removesuffix("s")
    return Table(["rank", "series", "run", "N (params)", "D (tokens)", "C (FLOPs)", unit,
                  "expected shrinkage", f"shrinkage per {per} (best = 1)", "note"], rows,
                 f"Expected shrinkage of the calibrated interval of {advice['series']} minus {advice['baseline']} at "
                 f"{advice['target']}; {unit} at {sci(advice['device_flops_per_second'])} FLOP/s per "
                 f"{per.removesuffix('-hour')} ({advice.get('device_source', 'assumed')}) from the exact FLOP model. "
                 f"Ranked by shrinkage per {per}.")


def _advice(report: Report) -> list[Block]:
    advice = report.settings.get("advice") or {}
    table = advice_table(advice)
    blocks: list[Block] = [Heading("Which run next")]
    if table is None:
        blocks.append(Paragraph(f"No advice: {advice.get('why', 'nothing to compare')}."))
    else:
        blocks.append(table)
    return blocks


def _diagnostics(report: Report) -> list[Block]:
    fit = report.fit or {}
    groups: dict[str, Any] = dict(sorted((fit.get("groups") or {}).items(), key=lambda kv: _series_rank(report, kv[0])))
    names = sorted({k for g in groups.values() for k in g.get("params", {})}, key=["E", "A", "alpha", "B", "beta"].index)
    degenerate = {(f["scope"], p) for f in report.settings.get("unidentified", []) for p in f.get("params") or [f["quantity"]]}
    rows = []
    for g, gf in groups.items():
        cells = [g, str(gf.get("n_points"))]
        for k in names:
            if (g, k) in degenerate:
                cells.append("not identified")
                continue
            lo, hi = (gf.get("ci95", {}).get(k) or [None, None])[:2]
            cells.append(f"{sci(gf['params'].get(k), 4)} [{sci(lo)}, {sci(hi)}]")
        cells += [percent(gf.get("mean_abs_rel_error"), 2), percent(gf.get("max_abs_rel_error"), 2)]
        rows.append(cells)
    blocks: list[Block] = [Heading("Fit diagnostics"), Table(
        ["series", "runs"] + [k + (" (shared)" if k in (fit.get("shared") or []) else "") for k in names]
        + ["in-sample mean |error|", "max |error|"], rows,
        f"{fit.get('formula', '')}; brackets: 95% bootstrap intervals.")]
    _figure(report, "residuals.png", blocks)
    settings = fit.get("settings") or {}
    detail = [f"Estimator: Huber loss (delta {settings.get('delta')}) on log-loss residuals, summed; "
              f"{settings.get('optimizer', '')}; {settings.get('n_starts')} starts ({settings.get('start_grid', '')})."]
    if settings.get("bootstrap"):
        detail.append(f"Bootstrap: {settings['bootstrap']} resamples of {settings.get('bootstrap_unit', 'runs')}, "
                      f"each refitted from the {settings.get('bootstrap_starts')} best distinct optima; seed {settings.get('seed')}.")
    blocks.append(Bullets(detail + [f"Warning: {w}" for w in settings.get("warnings", [])]))
    return blocks


def _data(report: Report) -> list[Block]:
    rows = [[p.trial_id, p.series, p.size_label, _count(p.params_nonembed), sci(p.tokens), sci(p.flops), loss(p.val_loss)]
            for p in report.points]
    blocks: list[Block] = [Heading("Data"), Table(["trial", "series", "size", "N (params)", "D (tokens)", "C (FLOPs)",
                                                  "val loss"], rows, "Every finished ladder run, as fitted.")]
    if report.dropped:
        blocks.append(Table(["trial", "series", "size", "why it was left out"],
                            [[d.trial_id, d.series, d.size_label, d.reason] for d in report.dropped], "Runs not fitted."))
    return blocks
