"""The report's recall section: models trained on MQAR, accuracy against size and against bytes.

What it shows and why it leads the report: the recall phase (scaling.study.recall) trains each
architecture on multi-query associative recall itself, so accuracy there measures what a
memory can hold, not what a tiny language model happened to pick up. Plotted against
non-embedding parameters and against the state + cache bytes one sequence needs at inference
(the exact byte model, `scaling.models.flops.sequence_bytes`, bf16), it shows what Memory
Caching buys (accuracy over its fixed-size base) and what it costs (bytes growing with the
number of cached segments, still far below a Transformer's KV cache or not).

Chance is drawn where a model that learned the format but binds nothing lands: it guesses among
the sequence's values not yet answered (each answered query reveals its value as the next input),
which it reaches long before it learns any recall - with every one of 8 pairs queried that is
34%, well above 1 / n_pairs (scaling.study.recall.chance_levels). Each accuracy
comes with a 95% interval of its held-out sampling error alone (a Wilson interval over the
scored queries); seed-to-seed spread is larger and appears only where the study repeats seeds.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np

from scaling.formatting import byte_size
from scaling.models.config import ModelConfig
from scaling.models.flops import sequence_bytes
from scaling.models.ladder import format_count
from scaling.report.blocks import Bullets, FigureRef, Heading, Paragraph, Table
from scaling.report.canvas import TAB10, new_figure
from scaling.report.schema import RecallPoint, Report, finite_number

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from scaling.report.inputs import StudyResults

PHASE = "recall"
FIGURE = "recall_curves.png"
FIGURE_TITLE = ("Recall after training on MQAR: accuracy against non-embedding parameters and against state + cache "
                "bytes per sequence, per context length; dashed: chance")
_Z95 = 1.959964


# ---------------------------------------------------------------------------- data
def recall_points(results: "StudyResults") -> list[RecallPoint]:
    """The recall phase's completed trials, with their bytes recomputed from the stored model config
    (the same byte model the plan tagged them with)."""
    trials = results.trials
    if trials is None or trials.empty or "phase" not in trials.columns:
        return []
    rows = trials[(trials["phase"] == PHASE) & (trials["status"] == "completed")]
    out: list[RecallPoint] = []
    for _, row in rows.iterrows():
        acc = finite_number(row.get("mqar_acc"))
        try:
            config = json.loads(row.get("config_json") or "{}")
            model = ModelConfig(**config["model"])
        except (KeyError, TypeError, ValueError):
            continue
        if acc is None:
            continue
        nbytes = sequence_bytes(model)
        n_seg = finite_number(row.get("n_segments"))
        out.append(RecallPoint(
            trial_id=str(row["trial_id"]), series=str(row.get("series") or row.get("arch")),
            arch=str(row.get("arch") or row.get("series")), strategy=str(row.get("strategy") or "none"),
            segment_len=str(row.get("segment_len") or "-"), n_segments=int(n_seg) if n_seg is not None else 1,
            d_model=model.d_model, seq_len=model.seq_len, seed=int(finite_number(row.get("seed")) or 0),
            params_nonembed=float(finite_number(row.get("params_nonembed")) or 0.0), state_bytes=nbytes.state_bytes,
            cache_bytes=nbytes.cache_bytes, mqar_acc=acc,
            queries_scored=int(config.get("mqar_eval_batch", 0)) * int((config.get("mqar") or {}).get("n_queries", 0))))
    return sorted(out, key=lambda p: (p.seq_len, p.series, p.d_model, p.seed))


def recall_settings(results: "StudyResults") -> dict[str, Any]:
    """What the section's text needs about the phase: the task, the training and the chance levels."""
    recall = getattr(results.spec, "recall", None)
    if recall is None:
        return {}
    from scaling.study.recall import chance_levels

    m = recall.mqar
    return {"n_pairs": m.n_pairs, "n_queries": m.queries, "key_vocab": m.key_vocab, "value_vocab": m.value_vocab,
            "steps": recall.steps, "batch_size": recall.batch_size, "lr": recall.lr, "layers": recall.layers,
            "head_dim": recall.head_dim, "chance": chance_levels(recall)}


def wilson(acc: float, n: int) -> tuple[float, float]:
    """95% Wilson interval of a proportion measured on n items (sampling error only)."""
    if n <= 0:
        return (math.nan, math.nan)
    centre = (acc + _Z95 ** 2 / (2 * n)) / (1 + _Z95 ** 2 / n)
    half = _Z95 * math.sqrt(acc * (1 - acc) / n + _Z95 ** 2 / (4 * n * n)) / (1 + _Z95 ** 2 / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _mean_by(points: list[RecallPoint]) -> dict[tuple[str, int, int], tuple[float, int, RecallPoint]]:
    """(series, L, width) -> (mean accuracy over seeds, scored queries in all, one point for its shape)."""
    groups: dict[tuple[str, int, int], list[RecallPoint]] = defaultdict(list)
    for p in points:
        groups[(p.series, p.seq_len, p.d_model)].append(p)
    return {k: (float(np.mean([p.mqar_acc for p in g])), sum(p.queries_scored for p in g), g[0])
            for k, g in groups.items()}


def _series_order(points: list[RecallPoint]) -> list[str]:
    """Transformer first, then each base memory followed by its cached variants, in order of appearance."""
    seen = list(dict.fromkeys(p.series for p in points))
    bases = list(dict.fromkeys(p.arch.split("+")[0] for p in points))
    order = [s for s in seen if s == "transformer"]
    for base in bases:
        order += [s for s in seen if s.split("@")[0] == base and s not in order]
        order += [s for s in seen if s.split("+")[0] == base and s not in order]
    return order + [s for s in seen if s not in order]


# ---------------------------------------------------------------------------- text
def headline(report: Report) -> str:
    """One paragraph: at the longest context, each architecture's best accuracy over its widths."""
    points = report.recall
    if not points:
        return ""
    info = report.settings.get("recall_phase") or {}
    chance = (info.get("chance") or {}).get("in_context")
    longest = max(p.seq_len for p in points)
    at = [p for p in points if p.seq_len == longest]
    means = _mean_by(at)
    parts = []
    for series in _series_order(at):
        own = [(acc, -p.d_model, p) for (s, _, _), (acc, _, p) in means.items() if s == series]
        acc, _, p = max(own, key=lambda item: (item[0], item[1]))
        others = sorted((q.d_model, a) for a, _, q in own if q.d_model != p.d_model)
        rest = ", ".join(f"{a:.0%} at d={w}" for w, a in others)
        parts.append(f"{series} {acc:.0%} at d={p.d_model} ({byte_size(p.sequence_bytes)} per sequence"
                     + (f"; {rest}" if rest else "") + ")")
    text = (f"Trained on MQAR itself ({info.get('n_pairs', '?')} key-value pairs, {info.get('steps', '?')} steps of "
            f"{info.get('batch_size', '?')} sequences), best accuracy over the widths at context {longest}: "
            + "; ".join(parts) + ".")
    if chance is not None:
        text += (f" Chance is {chance:.1%} (guessing among the sequence's values not yet answered); accuracies carry "
                 "a 95% sampling interval of a few points (see the table), seed-to-seed spread is larger.")
        text += plateau_sentence(means, chance)
    return text


#: a model "recalls" when its accuracy (95% lower bound) covers at least this share of the way from
#: chance to perfect - a point or two above chance is a model that learned the guessing rule better
RECALLS_SHARE = 0.5


def plateau_sentence(means: dict[tuple[str, int, int], tuple[float, int, RecallPoint]], chance: float) -> str:
    """Name the series that recall at one width and sit at chance at a wider one.

    Why say it: a wider model of the same architecture can hold at least as many bindings, so a
    wider model at chance did not fail for capacity - its training had not left the plateau where
    it guesses among the unanswered values (the induction plateau of attention: it must first learn
    to look at the previous token) when the step budget ran out. A reader who takes that point
    for a capacity limit draws the wrong curve; more steps or more seeds settle which it is.
    """
    found = []
    for series in dict.fromkeys(s for s, _, _ in means):
        for L in sorted({L for s, L, _ in means if s == series}):
            widths = sorted((w, acc, n) for (s, length, w), (acc, n, _) in means.items() if s == series and length == L)
            learned = [w for w, acc, n in widths if wilson(acc, n)[0] > chance + RECALLS_SHARE * (1.0 - chance)]
            stuck = [w for w, acc, n in widths if wilson(acc, n)[0] <= chance <= wilson(acc, n)[1]
                     and learned and w > min(learned)]
            if stuck:
                found.append(f"{series} at d={', '.join(map(str, stuck))} (it recalls at d={min(learned)}"
                             + (f", context {L}" if len({k[1] for k in means}) > 1 else "") + ")")
    if not found:
        return ""
    return (" At chance although a narrower model of the same architecture recalls: " + "; ".join(found)
            + ". A wider model holds at least as much, so this is training that had not left the guessing plateau "
            "within the step budget, not a capacity limit; more steps or seeds would tell.")


def table_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """Rows: series x context length; columns: accuracy [95% interval] and bytes per sequence at each width."""
    means = _mean_by(report.recall)
    widths = sorted({p.d_model for p in report.recall})
    headers = ["series", "context L", "segments"] + [f"d={w}: accuracy, bytes/seq" for w in widths]
    rows = []
    for L in sorted({p.seq_len for p in report.recall}):
        for series in _series_order([p for p in report.recall if p.seq_len == L]):
            cells, n_seg = [], "-"
            for w in widths:
                entry = means.get((series, L, w))
                if entry is None:
                    cells.append("")
                    continue
                acc, n, p = entry
                n_seg = str(p.n_segments)
                lo, hi = wilson(acc, n)
                cells.append(f"{acc:.1%} [{lo:.0%}, {hi:.0%}], {byte_size(p.sequence_bytes)}")
            rows.append([series, str(L), n_seg] + cells)
    return headers, rows


def recall_section(report: Report) -> list[Any]:
    """The blocks of the section (empty when the study has no recall phase)."""
    if not report.recall:
        return []
    info = report.settings.get("recall_phase") or {}
    chance = info.get("chance") or {}
    blocks: list[Any] = [Heading("Recall: models trained on MQAR"), Paragraph(headline(report))]
    if FIGURE in report.figures:
        blocks.append(FigureRef(FIGURE, FIGURE_TITLE))
    headers, rows = table_rows(report)
    blocks.append(Table(headers, rows, (
        f"Held-out MQAR accuracy after training on the task ({info.get('n_pairs')} pairs, {info.get('n_queries')} "
        f"queries, key and value vocabularies {info.get('key_vocab')} and {info.get('value_vocab')}; "
        f"{info.get('layers')} layers, head dim {info.get('head_dim')}, lr {info.get('lr')}), mean over seeds; "
        "brackets: 95% Wilson interval of the held-out sampling error. Bytes: state + cache one sequence needs at "
        "inference, bf16, from scaling.models.flops.sequence_bytes (Transformer: its KV cache). Chance: "
        + (f"{chance['in_context']:.1%} (guessing among the sequence's values not yet answered, the dashed line), "
           f"{chance.get('one_of_pairs', math.nan):.1%} (any value of the sequence), {chance['vocabulary']:.1%} (any "
           "value id)." if chance else "n/a."))))
    return blocks


# ---------------------------------------------------------------------------- figure
def recall_figure(report: Report) -> "Figure | None":
    """Per context length (rows): accuracy against parameters (left) and against bytes per sequence
    (right), one marker per series and width (no lines across widths), chance dashed. 12.7 x 4 in per row: 1400 px wide."""
    points = report.recall
    if not points:
        return None
    lengths = sorted({p.seq_len for p in points})
    order = _series_order(points)
    colours, k = {}, 0
    for s in order:
        if s == "transformer":
            colours[s] = "#000000"
        else:
            colours[s] = TAB10[k % len(TAB10)]
            k += 1
    markers = "osD^vP*X<>"
    chance = ((report.settings.get("recall_phase") or {}).get("chance") or {}).get("in_context")
    means = _mean_by(points)
    fig = new_figure(12.7, 0.6 + 3.9 * len(lengths))
    axes = fig.subplots(len(lengths), 2, squeeze=False)
    for row, L in enumerate(lengths):
        for col, (xlabel, xof) in enumerate((("non-embedding parameters", lambda p: p.params_nonembed),
                                             ("state + cache bytes per sequence (bf16)", lambda p: p.sequence_bytes))):
            ax = axes[row][col]
            for j, series in enumerate(order):
                entries = sorted((xof(p), acc) for (s, l, _), (acc, _, p) in means.items() if s == series and l == L)
                if not entries:
                    continue
                # separate markers per width, no line: two widths joined by a line read as a trend in
                # scale that two differently trained models do not make; a small offset per series
                # keeps equal accuracies from hiding each other
                offset = 1.0 + 0.04 * (j - (len(order) - 1) / 2.0)
                ax.plot([x * offset for x, _ in entries], [y for _, y in entries], color=colours[series], ls="none",
                        marker=markers[j % len(markers)], ms=6 if series == "transformer" else 5, label=series,
                        alpha=0.9)
            if chance is not None:
                ax.axhline(chance, color="#555555", ls="--", lw=1.0, zorder=0)
                ax.text(0.01, chance, f" chance ({chance:.1%})", transform=ax.get_yaxis_transform(), va="bottom",
                        fontsize=8, color="#444444")
            ax.set_xscale("log")
            ax.set_ylim(-0.03, 1.03)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("MQAR accuracy")
            ax.set_title(f"context L = {L}", fontsize=10)
            ax.grid(True, alpha=0.3)
            _log_ticks(ax, format_count, 10, (1.0, 2.0, 5.0)) if col == 0 else _log_ticks(ax, byte_size, 2, (1.0,))
    handles, labels = axes[0][1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=8.5, loc="outside right upper")
    fig.suptitle("Recall after training on MQAR")
    return fig


def _log_ticks(ax: Any, label: Any, base: int, subs: tuple[float, ...]) -> None:
    """Labelled ticks on a log axis: counts at 1, 2, 5 per decade, bytes at powers of two (a narrow
    range would otherwise get a single decade tick)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(base=base, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: label(x)))
    ax.xaxis.set_minor_formatter(NullFormatter())


# ---------------------------------------------------------------------------- a recall-only study
def recall_only_report(results: "StudyResults") -> Report:
    """The report of a study without a ladder: the recall section alone (nothing to fit or extrapolate)."""
    from datetime import datetime, timezone

    points = recall_points(results)
    if not points:
        from scaling.errors import UserInputError

        raise UserInputError("STUDY", f"study {results.name!r} has no finished recall trial yet",
                             "run or resume it (`mcscale resume NAME`)")
    report = Report(study=results.name, generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    settings={"recall_phase": recall_settings(results), "storage": results.root}, verdict="",
                    caveats=[], baseline="", series=[], points=[], dropped=[], fit={}, backtest={}, comparison={},
                    targets=[], versus=[], crossovers=[], bands=[], training_curves=[], costs=[], recall=points)
    report.verdict = headline(report)
    unfinished = int(((results.trials["phase"] == PHASE) & (results.trials["status"] != "completed")).sum())
    report.caveats = [f"This study has no language-model ladder, so there is no scaling law, extrapolation or loss "
                      f"verdict; {len(points)} recall runs are shown"
                      + (f" ({unfinished} more not finished)." if unfinished else ".")]
    return report


def recall_only_document(report: Report) -> list[Any]:
    return ([Heading(f"Recall report: {report.study}", 1), Paragraph(f"Generated {report.generated_at}.")]
            + recall_section(report) + [Heading("Caveats"), Bullets(list(report.caveats))])
