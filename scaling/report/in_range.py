"""What the ladder resolved in its own range: each Memory Caching series against its base memory.

Why a section of its own: the verdict compares every series with the Transformer at the far
targets, but Memory Caching's claim is relative to the memory it wraps (swla+grm against swla),
and the first thing a study can settle is that difference where it has data - at the largest
size it trained, before any extrapolation. The fitted, backtest-calibrated comparison
(`scaling.fit.compare`) already holds every pair of series at every target; this reads the
MC-versus-base pairs, at the in-range target (a `fit.target_sizes` entry no larger than the
largest run, with `fit.x: params`) and at the far ones, and says plainly whether the calibrated
interval excludes zero, and if not, the first target size at which it would.
"""

from __future__ import annotations

import math
from typing import Any

from scaling.models.ladder import format_count
from scaling.report.schema import Report, VersusRow
from scaling.report.verdict import interval, percent, resolved, signed

_PREFIX = "params_nonembed="


def base_of(series: str) -> str:
    """The base memory's series of an MC series: swla+grm@C32 -> swla."""
    return series.split("@")[0].split("+")[0]


def _size(target: str) -> float | None:
    if not target.startswith(_PREFIX):
        return None
    try:
        return float(target[len(_PREFIX):])
    except ValueError:
        return None


def mc_versus_base(report: Report) -> list[VersusRow]:
    """Every MC series minus its base memory at every size target, as the verdict's rows (its
    calibrated and family-wise intervals, P(MC lower)), in target-size order."""
    strategy = {p.series: p.strategy for p in report.points}
    pairs = {s: base_of(s) for s in report.series if strategy.get(s, "none") != "none" and base_of(s) in report.series}
    out: list[VersusRow] = []
    for d in (report.comparison or {}).get("differences", []):
        a, b = d.get("group_a"), d.get("group_b")
        if _size(d.get("target", "")) is None:
            continue
        if pairs.get(a) == b:
            sign, series, base = 1.0, a, b
        elif pairs.get(b) == a:
            sign, series, base = -1.0, b, a
        else:
            continue
        est = d.get("difference") or {}

        def flip(value: Any) -> float | None:
            return None if value is None else sign * float(value)

        lo, hi = flip(est.get("low")), flip(est.get("high"))
        flo, fhi = flip(d.get("family_low")), flip(d.get("family_high"))
        p = d.get("p_a_better")
        out.append(VersusRow(d["target"], series, base, sign * float(est.get("value", math.nan)),
                             *(sorted((lo, hi)) if lo is not None and hi is not None else (lo, hi)),
                             None if p is None else (p if sign > 0 else 1.0 - p),
                             *(sorted((flo, fhi)) if flo is not None and fhi is not None else (flo, fhi)),
                             d.get("family_level")))
    return sorted(out, key=lambda v: (v.series, _size(v.target) or 0.0))


def largest_trained(report: Report, series: str) -> float | None:
    sizes = [p.params_nonembed for p in report.points if p.series == series]
    return max(sizes) if sizes else None


def measured_difference(report: Report, series: str, base: str) -> tuple[str, float] | None:
    """(size label, val loss of series minus base's) at the largest size both trained (seed means)."""
    def by_label(name: str) -> dict[str, tuple[float, float]]:
        out: dict[str, list[tuple[float, float]]] = {}
        for p in report.points:
            if p.series == name:
                out.setdefault(p.size_label, []).append((p.params_nonembed, p.val_loss))
        return {k: (max(n for n, _ in v), sum(x for _, x in v) / len(v)) for k, v in out.items()}

    mine, theirs = by_label(series), by_label(base)
    common = [k for k in mine if k in theirs]
    if not common:
        return None
    top = max(common, key=lambda k: mine[k][0])
    return top, mine[top][1] - theirs[top][1]


def in_range_rows(report: Report) -> list[tuple[VersusRow, bool, VersusRow | None]]:
    """Per MC series: (its row at the largest in-range target, resolved?, the first resolved row at any size)."""
    rows = mc_versus_base(report)
    out = []
    for series in dict.fromkeys(v.series for v in rows):
        own = [v for v in rows if v.series == series]
        top = max(largest_trained(report, series) or 0.0, largest_trained(report, own[0].baseline) or 0.0)
        inside = [v for v in own if (_size(v.target) or math.inf) <= 1.05 * top]
        if not inside:
            continue
        here = inside[-1]
        first = next((v for v in own if resolved(v)), None)
        out.append((here, resolved(here), first))
    return out


def sentence(report: Report) -> str:
    """The section's paragraph (empty when the study has no in-range MC-vs-base comparison)."""
    rows = in_range_rows(report)
    if not rows:
        return ""
    parts, unresolved_anywhere = [], 0
    for here, ok, first in rows:
        at = format_count(_size(here.target) or 0.0)
        low, high = (here.family_low, here.family_high) if here.family_low is not None else (here.low, here.high)
        text = (f"{here.series} minus {here.baseline} at {at} parameters: {signed(here.difference)} nats "
                f"(calibrated interval {interval(low, high, signed)}")
        if here.p_better is not None:
            text += f", P(lower) {percent(here.p_better)}"
        text += ")"
        if ok:
            text += f" - resolved: {here.series} {'beats' if (high or 0) < 0 else 'trails'} {here.baseline}"
        elif first is not None:
            text += (f" - not resolved at the largest trained size; the fitted laws first resolve it at "
                     f"{format_count(_size(first.target) or 0.0)} parameters ({signed(first.difference)}), so a ladder "
                     "reaching that size would test it")
        else:
            text += " - not resolved, nor at any larger target size"
            unresolved_anywhere += 1
        measured = measured_difference(report, here.series, here.baseline)
        if measured is not None:
            text += f"; measured at {measured[0]}: {signed(measured[1])}"
        parts.append(text)
    level = next((v.family_level for v, _, _ in rows if v.family_level is not None), None)
    level_text = f"the family-wise {percent(level, 2)} level" if level is not None else "95%"
    text = (f"Memory Caching against the memory it wraps, within the study's range (intervals at {level_text}, "
            "calibrated by backtests): " + "; ".join(parts) + ".")
    if unresolved_anywhere:
        text += (" Where nothing is resolved, the fitted laws cannot separate the measured differences from their own "
                 "uncertainty on these runs; more seeds per size (to measure seed noise) and the runs under 'Which run "
                 "next' narrow the intervals most.")
    return text


def in_range_section(report: Report) -> list[Any]:
    from scaling.report.document import Heading, Paragraph, Table

    rows = mc_versus_base(report)
    text = sentence(report)
    if not rows or not text:
        return []
    table = Table(["series", "base", "size", "MC minus base", "95% interval", "family-wise interval", "P(MC lower)",
                   "resolved"],
                  [[v.series, v.baseline, format_count(_size(v.target) or 0.0), signed(v.difference),
                    interval(v.low, v.high, signed), interval(v.family_low, v.family_high, signed),
                    "" if v.p_better is None else percent(v.p_better), "yes" if resolved(v) else "no"] for v in rows],
                  "Fitted loss of each MC series minus its base memory's at each size target (the power law in "
                  "parameters), from the form-averaged, backtest-calibrated draws; sizes at or below the largest run "
                  "are in range.")
    return [Heading("What the ladder resolved: Memory Caching against its base memory"), Paragraph(text), table]
