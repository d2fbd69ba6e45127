"""What the ladder resolved in its own range: each Memory Caching series against its base memory.

Why a section of its own: the verdict compares every series with the Transformer at the far
targets, but Memory Caching's claim is relative to the memory it wraps (swla+grm against swla),
and the first thing a study can settle is that difference where it has data - at the largest
size it trained, before any extrapolation. The fitted, backtest-calibrated comparison
(`scaling.fit.compare`) already holds every pair of series at every target; this reads the
MC-versus-base pairs, at the in-range target (a `fit.target_sizes` entry no larger than the
largest run, with `fit.x: params`) and at the far ones, and says plainly whether the calibrated
interval excludes zero, and if not, the first target size at which it would.

It leads with the measurement itself (`measured_differences`): at a size both series trained,
their loss difference needs no law at all, and its uncertainty is seed noise alone - the fitted
law's interval at that size also carries the ladder's lack of fit, which a measured point does
not have. Seed noise comes from the fit's calibration (repeated seeds where the study has them,
else the scatter of late checkpoints, `scaling.fit.noise`); because the checkpoint estimate can
understate seed noise, each resolved difference states how many times larger the noise would
have to be to undo it, and each unresolved one how many seeds per size would resolve it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scipy import stats

from scaling.formatting import interval, percent, signed
from scaling.models.ladder import format_count
from scaling.report.blocks import Heading, Paragraph, Table
from scaling.report.schema import Report, VersusRow, resolved

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


#: Seeds per size beyond which "this many seeds would resolve it" is no longer advice worth giving.
MAX_SEEDS_ADVISED = 64


@dataclass(frozen=True)
class MeasuredDifference:
    """``series`` minus ``base`` measured at one size both trained (seed means, nats), with the
    interval seed noise alone allows at the family-wise ``level`` (Bonferroni over the MC series)."""

    series: str
    base: str
    size_label: str
    params_series: float
    params_base: float
    difference: float
    low: float | None
    high: float | None
    level: float
    seeds: int  # runs per series at that size (the fewer of the two)
    noise_source: str | None  # "replicates", "checkpoints" or None (not measured)
    noise_share: float | None  # seed noise of one run, as a share of the loss (the larger of the two)

    @property
    def resolved(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    @property
    def noise_tolerance(self) -> float | None:
        """How many times larger seed noise could be with the difference still resolved."""
        if self.low is None or self.high is None:
            return None
        half = (self.high - self.low) / 2.0
        return abs(self.difference) / half if half > 0 else None

    @property
    def seeds_to_resolve(self) -> int | None:
        """Seeds per series at this size whose mean would resolve a difference of this size
        (the interval narrows as one over the square root of the seeds); None if resolved or unknown."""
        tol = self.noise_tolerance
        if tol is None or self.resolved or self.difference == 0:
            return None
        return max(self.seeds + 1, math.ceil(self.seeds / (tol * tol)))


def _seed_noise(report: Report, series: str) -> tuple[float, int, str | None]:
    """(seed variance of one run's log loss, its degrees of freedom, source) from the calibration."""
    group = (((report.settings.get("calibration") or {}).get("groups") or {}).get(series) or {})
    return float(group.get("seed_var") or 0.0), int(group.get("seed_dof") or 0), group.get("seed_source")


def _at_top(report: Report, series: str, base: str) -> tuple[str, list[Any], list[Any]] | None:
    labels = {p.size_label for p in report.points if p.series == series} & {p.size_label for p in report.points
                                                                              if p.series == base}
    if not labels:
        return None
    top = max(labels, key=lambda lab: max(p.params_nonembed for p in report.points if p.size_label == lab
                                          and p.series == series))
    return (top, [p for p in report.points if p.series == series and p.size_label == top],
            [p for p in report.points if p.series == base and p.size_label == top])


def measured_differences(report: Report, level: float = 0.95) -> list[MeasuredDifference]:
    """Every fitted MC series minus its base memory at the largest size both trained, measured."""
    strategy = {p.series: p.strategy for p in report.points}
    pairs = [(s, base_of(s)) for s in report.series
             if strategy.get(s, "none") != "none" and base_of(s) in report.series]
    family = 1.0 - (1.0 - level) / max(1, len(pairs))
    out = []
    for series, base in pairs:
        found = _at_top(report, series, base)
        if found is None:
            continue
        top, mine, theirs = found
        la = sum(p.val_loss for p in mine) / len(mine)
        lb = sum(p.val_loss for p in theirs) / len(theirs)
        (va, da, sa), (vb, db, sb) = _seed_noise(report, series), _seed_noise(report, base)
        low = high = None
        if va > 0 and vb > 0 and da > 0 and db > 0:
            sd = math.sqrt(la * la * va / len(mine) + lb * lb * vb / len(theirs))  # nats, delta method
            half = float(stats.t.ppf(0.5 + family / 2.0, min(da, db))) * sd
            low, high = la - lb - half, la - lb + half
        sources = {x for x in (sa, sb) if x}
        source = None if low is None else ("replicates" if sources == {"replicates"} else
                                           "checkpoints" if sources == {"checkpoints"} else "replicates and checkpoints")
        out.append(MeasuredDifference(series, base, top, max(p.params_nonembed for p in mine),
                                      max(p.params_nonembed for p in theirs), la - lb, low, high, family,
                                      min(len(mine), len(theirs)), source,
                                      math.sqrt(max(va, vb)) if low is not None else None))
    return out


def measured_text(m: MeasuredDifference) -> str:
    """One measured comparison, in words: the difference, its interval and what it means."""
    text = f"{m.series} minus {m.base} at {m.size_label}: {signed(m.difference)} nats"
    if m.low is None:
        return text + " (seed noise not measured, so not tested: repeat a seed or evaluate more often)"
    text += f" ({interval(m.low, m.high, signed)})"
    tol = m.noise_tolerance
    if m.resolved:
        verb = "trails" if m.difference > 0 else "beats"
        text += f" - resolved: {m.series} {verb} {m.base}"
        if tol is not None:
            text += f", and stays resolved unless seed noise is more than {tol:.1f}x this estimate"
    else:
        need = m.seeds_to_resolve
        text += " - not resolved"
        if need is not None:
            text += (f"; {need} seeds per series at {m.size_label} would resolve a difference this large"
                     if need <= MAX_SEEDS_ADVISED else
                     f"; a difference this small needs more than {MAX_SEEDS_ADVISED} seeds per series to resolve")
    return text


def verdict_clause(report: Report) -> str:
    """The measured MC-vs-base comparisons, short, for the verdict's in-range sentence."""
    parts = []
    for m in measured_differences(report):
        if m.low is None:
            continue
        state = (f"{'trails' if m.difference > 0 else 'beats'} {m.base} by {abs(m.difference):.3f} nats"
                 if m.resolved else f"differs from {m.base} by {signed(m.difference)} nats, not resolved")
        parts.append(f"{m.series} {state} ({interval(m.low, m.high, signed)})")
    if not parts:
        return ""
    return (" Against the memory it wraps, measured at the largest size both trained (seed noise alone, family-wise "
            "over the MC series): " + "; ".join(parts) + ".")


def measured_sentence(report: Report) -> str:
    """The measured comparisons as one sentence (empty without MC-vs-base pairs)."""
    rows = measured_differences(report)
    if not rows:
        return ""
    tested = [m for m in rows if m.low is not None]
    if tested:
        share = max(m.noise_share or 0.0 for m in tested)
        source = {"replicates": "between repeated seeds",
                  "checkpoints": "from the scatter of late checkpoints, a proxy that can understate it",
                  "replicates and checkpoints": "between repeated seeds and, where a series has none, from late "
                                                "checkpoints"}[tested[0].noise_source or "checkpoints"]
        lead = (f"Measured, with no law involved (seed means at the largest size both trained; intervals from seed "
                f"noise alone, {percent(share, 2)} of the loss per run {source}, at the family-wise "
                f"{percent(tested[0].level, 2)} level over the {len(rows)} MC series): ")
    else:
        lead = "Measured (seed means at the largest size both trained): "
    return lead + "; ".join(measured_text(m) for m in rows) + "."


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
    """The fitted comparison's paragraph (empty when the study has no in-range MC-vs-base target)."""
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
        parts.append(text)
    level = next((v.family_level for v, _, _ in rows if v.family_level is not None), None)
    level_text = f"the family-wise {percent(level, 2)} level" if level is not None else "95%"
    text = (f"Fitted, by the scaling law through every size (intervals at {level_text}, calibrated by backtests): "
            + "; ".join(parts) + ".")
    if unresolved_anywhere:
        text += (" The fitted interval at a trained size is wider than the measured one: besides seed noise it carries "
                 "the ladder's lack of fit (how far the runs scatter around the law) and the law's parameter "
                 "uncertainty; a longer ladder, more seeds per size and the runs under 'Which run next' narrow it.")
    return text


def in_range_section(report: Report) -> list[Any]:
    measured = measured_differences(report)
    rows = mc_versus_base(report)
    fitted = sentence(report)
    if not any(m.low is not None for m in measured) and not (rows and fitted):
        return []  # nothing tested: no seed noise to judge a measurement, no in-range target for the law
    blocks: list[Any] = [Heading("What the ladder resolved: Memory Caching against its base memory")]
    if measured:
        blocks.append(Paragraph(measured_sentence(report)))
        blocks.append(Table(
            ["series", "base", "size", "params (MC / base)", "seeds", "MC minus base", "family-wise interval",
             "resolved", "noise margin or seeds needed"],
            [[m.series, m.base, m.size_label, f"{format_count(m.params_series)} / {format_count(m.params_base)}",
              str(m.seeds), signed(m.difference), interval(m.low, m.high, signed),
              "n/a" if m.low is None else "yes" if m.resolved else "no",
              "" if m.low is None else (f"{m.noise_tolerance:.1f}x seed noise" if m.resolved and m.noise_tolerance
                                        else f"{m.seeds_to_resolve} seeds" if m.seeds_to_resolve else "")]
             for m in measured],
            "Measured validation loss of each MC series minus its base memory's at the largest size both trained (seed "
            "means; no law involved). Interval: seed noise alone, at the family-wise level over the MC series. Noise "
            "margin: how many times larger seed noise would have to be to undo a resolved difference; seeds needed: "
            "seeds per series at that size whose mean would resolve a difference this large."))
    if rows and fitted:
        blocks.append(Paragraph(fitted))
        blocks.append(Table(
            ["series", "base", "size", "MC minus base", "95% interval", "family-wise interval", "P(MC lower)",
             "resolved"],
            [[v.series, v.baseline, format_count(_size(v.target) or 0.0), signed(v.difference),
              interval(v.low, v.high, signed), interval(v.family_low, v.family_high, signed),
              "" if v.p_better is None else percent(v.p_better), "yes" if resolved(v) else "no"] for v in rows],
            "Fitted loss of each MC series minus its base memory's at each size target (the power law in "
            "parameters), from the form-averaged, backtest-calibrated draws; sizes at or below the largest run "
            "are in range."))
    return blocks
