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
not have.

Equal sizes, not equal labels: a rung's series can differ by tens of percent in non-embedding
parameters (the quickstart's 48K rung: Transformer 43.7K, MC 48.2K), and a bigger model's lower
loss is no win for its architecture. So at the largest rung both trained, two sizes within 10%
(`SIZE_TOLERANCE`) are compared as they are, both sizes stated; otherwise each series' seed means
are interpolated linearly in log(params) between its two bracketing rungs to the largest size
inside both trained ranges (no larger than the larger size at that rung), where at least one
series is measured; nothing is extrapolated, and a pair with no such size is said to be not
comparable (`match_sizes`).

Seed noise, best estimator first (`difference_noise`): the seeds themselves where the compared
rungs hold repeated seeds (paired by seed when both series trained the same seeds - one seed
initialises base and MC identically - else the spread pooled over the two series); else the
fit's calibration, whose one-seed estimate is the late-checkpoint scatter times
`scaling.fit.noise.SEED_TO_CHECKPOINT_SD_RATIO`, a proxy calibrated against repeated seeds (the raw
scatter understated seed noise ~6x). Interpolation weights w and 1 - w carry the noise of both
bracketing points. Each resolved difference states how many times larger the noise would have
to be to undo it, and each unresolved one how many seeds per series would resolve it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from scipy import stats

from scaling.formatting import interval, percent, signed
from scaling.models.ladder import format_count
from scaling.report.blocks import Heading, Paragraph, Table
from scaling.report.schema import Point, Report, VersusRow, resolved
from scaling.report.story import missed

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


# ---------------------------------------------------------------------------- equal sizes
#: Two series' actual sizes at one rung count as equal when the larger is at most 10% above the
#: smaller: the ladder aims every series at the rung's target within +-10% where it can, and within
#: that a comparison stays a plain measurement (no interpolation, no noise added by it), with both
#: sizes stated so a reader can weigh what gap remains.
SIZE_TOLERANCE = 0.10


@dataclass(frozen=True)
class Rung:
    """One series' runs at one size label: its actual non-embedding size and each run's final loss
    (with its seed, None where the run did not record one)."""

    label: str
    params: float
    losses: tuple[float, ...]
    seeds: tuple[int | None, ...]

    @property
    def n(self) -> int:
        return len(self.losses)

    @property
    def mean(self) -> float:
        return sum(self.losses) / len(self.losses)

    @property
    def variance(self) -> float | None:
        """Sample variance of the runs' losses (nats^2); None with one run."""
        if self.n < 2:
            return None
        m = self.mean
        return sum((x - m) ** 2 for x in self.losses) / (self.n - 1)

    def by_seed(self) -> dict[int, float] | None:
        """Seed -> loss, when every run recorded a distinct seed (what pairing needs); else None."""
        if None in self.seeds or len(set(self.seeds)) != self.n:
            return None
        return {int(s): x for s, x in zip(self.seeds, self.losses)}  # type: ignore[arg-type]


def rungs(points: Sequence[Point]) -> list[Rung]:
    """One series' points grouped by size label (repeated seeds together), smallest size first."""
    groups: dict[str, list[Point]] = {}
    for p in points:
        groups.setdefault(p.size_label, []).append(p)
    out = [Rung(label, sum(p.params_nonembed for p in ps) / len(ps), tuple(p.val_loss for p in ps),
                tuple(p.seed for p in ps)) for label, ps in groups.items()]
    return sorted(out, key=lambda r: r.params)


@dataclass(frozen=True)
class Reading:
    """One series' loss at a chosen size: one rung's seed mean (weight 1), or the linear
    interpolation in log(params) between the two rungs that bracket the size (weights 1 - w, w)."""

    params: float
    parts: tuple[tuple[float, Rung], ...]

    @property
    def loss(self) -> float:
        return sum(w * r.mean for w, r in self.parts)

    @property
    def interpolated(self) -> bool:
        return len(self.parts) > 1

    def describe(self) -> str:
        if not self.interpolated:
            return f"measured at {format_count(self.parts[0][1].params)}"
        low, high = self.parts[0][1], self.parts[1][1]
        return (f"interpolated between {format_count(low.params)} ({low.label}) and {format_count(high.params)} "
                f"({high.label})")


def read_at(ladder: Sequence[Rung], params: float) -> Reading | None:
    """A series' loss at ``params`` from its rungs (sorted by size): the rung itself where one lies
    there, else linear in log(params) between the two that bracket it; None outside the trained
    range (never extrapolated)."""
    for r in ladder:
        if abs(math.log(r.params / params)) < 1e-9:
            return Reading(params, ((1.0, r),))
    for low, high in zip(ladder, ladder[1:]):
        if low.params < params < high.params:
            w = math.log(params / low.params) / math.log(high.params / low.params)
            return Reading(params, ((1.0 - w, low), (w, high)))
    return None


@dataclass(frozen=True)
class SizeMatch:
    """Where two series are compared at equal non-embedding parameters.

    ``label``: the largest size label both trained (None when they share none), with each
    series' actual size there. ``direct``: those two sizes are within `SIZE_TOLERANCE`, so the
    rung's seed means are compared as they are. Otherwise both series are read at the largest size
    inside both trained ranges, capped at the larger of the two sizes at the rung - the largest
    size both trained, where at least one series is measured rather than interpolated; ``a`` and
    ``b`` are None when no size lies inside both ranges."""

    label: str | None
    params_a: float
    params_b: float
    range_a: tuple[float, float]
    range_b: tuple[float, float]
    a: Reading | None
    b: Reading | None
    direct: bool

    @property
    def comparable(self) -> bool:
        return self.a is not None and self.b is not None

    @property
    def at(self) -> float | None:
        """The common size compared at (None for a direct comparison or none possible)."""
        return None if self.direct or self.a is None else self.a.params

    @property
    def method(self) -> str:
        if not self.comparable:
            return "not comparable"
        assert self.a is not None and self.b is not None
        return "interpolated" if self.a.interpolated or self.b.interpolated else "measured"

    @property
    def difference(self) -> float | None:
        return None if self.a is None or self.b is None else self.a.loss - self.b.loss

    @property
    def rung_labels(self) -> tuple[str, ...]:
        """Every rung whose runs enter the comparison, smallest first."""
        parts = [r for reading in (self.a, self.b) if reading is not None for _, r in reading.parts]
        return tuple(dict.fromkeys(r.label for r in sorted(parts, key=lambda r: r.params)))


def match_sizes(points_a: Sequence[Point], points_b: Sequence[Point]) -> SizeMatch | None:
    """Two series' losses at equal non-embedding parameters (see `SizeMatch`); None when either has
    no points. Labels name rungs, not sizes: a rung's series can differ by tens of percent."""
    ra, rb = rungs(points_a), rungs(points_b)
    if not ra or not rb:
        return None
    by_a, by_b = {r.label: r for r in ra}, {r.label: r for r in rb}
    shared = [lab for lab in by_a if lab in by_b]
    range_a, range_b = (ra[0].params, ra[-1].params), (rb[0].params, rb[-1].params)
    if shared:
        label: str | None = max(shared, key=lambda lab: max(by_a[lab].params, by_b[lab].params))
        pa, pb = by_a[label].params, by_b[label].params
        if max(pa, pb) <= (1.0 + SIZE_TOLERANCE) * min(pa, pb):
            return SizeMatch(label, pa, pb, range_a, range_b, Reading(pa, ((1.0, by_a[label]),)),
                             Reading(pb, ((1.0, by_b[label]),)), direct=True)
        ceiling = max(pa, pb)
    else:
        label, pa, pb, ceiling = None, ra[-1].params, rb[-1].params, math.inf
    at = min(ra[-1].params, rb[-1].params, ceiling)
    a, b = read_at(ra, at), read_at(rb, at)
    if a is None or b is None:
        a = b = None
    return SizeMatch(label, pa, pb, range_a, range_b, a, b, direct=False)


def where_text(match: SizeMatch, name_a: str, name_b: str) -> str:
    """Where and how a comparison was made, in words: "at 43.7K parameters (swla measured, ...)"."""
    rung = f"the {match.label} rung" if match.label is not None else "their largest sizes"
    if match.direct:
        return (f"at {match.label} ({format_count(match.params_a)} and {format_count(match.params_b)} parameters, "
                f"within {percent(SIZE_TOLERANCE)}: measured)")
    if not match.comparable:
        return f"at {rung} ({format_count(match.params_a)} and {format_count(match.params_b)} parameters)"
    assert match.a is not None and match.b is not None and match.at is not None
    how = ("measured" if match.method == "measured" else
           f"{name_a} {match.a.describe()}, {name_b} {match.b.describe()}")
    return (f"at {format_count(match.at)} parameters ({how}; {rung} holds {format_count(match.params_a)} and "
            f"{format_count(match.params_b)})")


def not_comparable_text(match: SizeMatch, name_a: str, name_b: str) -> str:
    """Why two series cannot be compared at equal size."""
    def span(r: tuple[float, float]) -> str:
        return f"{format_count(r[0])} to {format_count(r[1])}"

    return (f"not comparable at equal size: the sizes differ by more than {percent(SIZE_TOLERANCE)} and no size lies "
            f"inside both trained ranges ({name_a} {span(match.range_a)}, {name_b} {span(match.range_b)}), and a "
            "series is never extrapolated")


# ---------------------------------------------------------------------------- seed noise
#: How each source of seed noise is named beside an interval.
NOISE_SOURCES = {
    "paired seeds": "paired seeds",
    "seed spread": "spread of repeated seeds",
    "replicates": "repeated seeds (the fit's calibration)",
    "checkpoints": "calibrated checkpoint proxy",
    "replicates and checkpoints": "repeated seeds and calibrated checkpoint proxy",
}


@dataclass(frozen=True)
class DifferenceNoise:
    """The seed noise of a measured difference: its variance (nats^2), the degrees of freedom of
    that estimate, where it came from, and one run's seed noise as a share of the loss (None for
    paired seeds, whose spread is of differences)."""

    variance: float
    dof: int
    source: str
    share: float | None
    proxy_ratio: float | None = None  # the checkpoint proxy's calibration factor, where it was used


def _calibrated(report: Report, series: str) -> tuple[float, int, str | None, float | None]:
    """(seed variance of one run's log loss, its degrees of freedom, source, proxy ratio) from the
    fit's calibration; a checkpoint source there is already scaled by its ratio."""
    group = (((report.settings.get("calibration") or {}).get("groups") or {}).get(series) or {})
    ratio = group.get("seed_proxy_ratio")
    return (float(group.get("seed_var") or 0.0), int(group.get("seed_dof") or 0), group.get("seed_source"),
            None if ratio is None else float(ratio))


def difference_noise(a: Reading, b: Reading, calibrated_a: tuple[float, int, str | None, float | None],
                     calibrated_b: tuple[float, int, str | None, float | None]) -> DifferenceNoise | None:
    """Seed noise of ``a.loss - b.loss``, best estimator first:

    1. **paired seeds**: every rung behind both readings holds the same >= 2 seeds. Each seed's
       difference (same weights) is one draw; their sample variance over the seeds, t with
       seeds - 1 dof. Best because one seed initialises the base and the MC model identically,
       so what they share cancels.
    2. **seed spread**: each reading has a rung with >= 2 seeds. The sample variances of those
       rungs, pooled over both series (and their rungs), dof the sum of ``n - 1``; every point's
       variance is that over its run count, and interpolation weights ``w, 1 - w`` carry it.
    3. **the calibration** (``(seed_var, seed_dof, source, ratio)`` per series, log-loss units):
       the series' repeated seeds (pooled over its sizes), else the checkpoint proxy scaled by its
       ratio; by the delta method ``loss^2 seed_var`` per run, dof the smaller of the two.
    None when none of them is measured."""
    signed_parts = [(w, r) for w, r in a.parts] + [(-w, r) for w, r in b.parts]
    tables = [t for _, r in signed_parts if (t := r.by_seed()) is not None]
    if len(tables) == len(signed_parts):
        seeds = set(tables[0])
        if len(seeds) >= 2 and all(set(t) == seeds for t in tables):
            diffs = [sum(c * t[s] for (c, _), t in zip(signed_parts, tables)) for s in sorted(seeds)]
            k = len(diffs)
            mean = sum(diffs) / k
            var = sum((d - mean) ** 2 for d in diffs) / (k - 1)
            return DifferenceNoise(var / k, k - 1, "paired seeds", None)
    if any(r.n >= 2 for _, r in a.parts) and any(r.n >= 2 for _, r in b.parts):
        replicated = [r for _, r in signed_parts if r.n >= 2]
        dof = sum(r.n - 1 for r in replicated)
        pooled = sum((r.n - 1) * (r.variance or 0.0) for r in replicated) / dof
        var = pooled * sum(c * c / r.n for c, r in signed_parts)
        return DifferenceNoise(var, dof, "seed spread", math.sqrt(pooled) / ((a.loss + b.loss) / 2.0))
    (va, da, sa, qa), (vb, db, sb, qb) = calibrated_a, calibrated_b
    if va > 0 and vb > 0 and da > 0 and db > 0:
        var = (sum(w * w * r.mean * r.mean * va / r.n for w, r in a.parts)
               + sum(w * w * r.mean * r.mean * vb / r.n for w, r in b.parts))
        sources = {x for x in (sa, sb) if x}
        source = ("replicates" if sources == {"replicates"} else "checkpoints" if sources == {"checkpoints"}
                  else "replicates and checkpoints")
        ratio = max((q for q in (qa if sa == "checkpoints" else None, qb if sb == "checkpoints" else None)
                     if q is not None), default=None)
        return DifferenceNoise(var, min(da, db), source, math.sqrt(max(va, vb)), ratio)
    return None


# ---------------------------------------------------------------------------- the comparison
def measured_difference(report: Report, series: str, base: str) -> SizeMatch | None:
    """``series`` against ``base`` at equal non-embedding parameters at the largest size both trained."""
    return match_sizes([p for p in report.points if p.series == series],
                       [p for p in report.points if p.series == base])


#: Seeds per size beyond which "this many seeds would resolve it" is no longer advice worth giving.
MAX_SEEDS_ADVISED = 64


@dataclass(frozen=True)
class MeasuredDifference:
    """``series`` minus ``base`` measured at equal non-embedding parameters at the largest size
    both trained (seed means; `SizeMatch`), with the interval seed noise alone allows at the
    family-wise ``level`` (Bonferroni over the MC series). ``difference`` is None when no equal
    size can be reached without extrapolating."""

    series: str
    base: str
    size_label: str  # the largest rung both trained ("-" without a shared label)
    params_series: float  # each series' actual size at that rung
    params_base: float
    at_params: float | None  # the common size compared at (None: direct at the rung, or not comparable)
    method: str  # "measured", "interpolated" or "not comparable"
    where: str  # where and how, in words (`where_text`)
    difference: float | None
    low: float | None
    high: float | None
    level: float
    seeds: int  # the fewest runs behind any rung in the comparison
    rungs: tuple[str, ...]  # the rungs whose runs enter it
    noise_source: str | None  # a `NOISE_SOURCES` key, or None (not measured)
    noise_share: float | None  # one run's seed noise as a share of the loss (None for paired seeds)
    noise_dof: int = 0
    proxy_ratio: float | None = None  # the checkpoint proxy's calibration factor, where it was used
    reason: str = ""  # why not comparable

    @property
    def resolved(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    @property
    def noise_tolerance(self) -> float | None:
        """How many times larger seed noise could be with the difference still resolved."""
        if self.low is None or self.high is None or self.difference is None:
            return None
        half = (self.high - self.low) / 2.0
        return abs(self.difference) / half if half > 0 else None

    @property
    def seeds_to_resolve(self) -> int | None:
        """Seeds per series at the compared rungs whose means would resolve a difference of this size
        (the interval narrows as one over the square root of the seeds); None if resolved or unknown."""
        tol = self.noise_tolerance
        if tol is None or self.resolved or self.difference == 0:
            return None
        return max(self.seeds + 1, math.ceil(self.seeds / (tol * tol)))


def mc_base_pairs(report: Report) -> list[tuple[str, str]]:
    """(MC series, its base memory's series) for every fitted MC series whose base was fitted too."""
    strategy = {p.series: p.strategy for p in report.points}
    return [(s, base_of(s)) for s in report.series
            if strategy.get(s, "none") != "none" and base_of(s) in report.series]


def measured_differences(report: Report, level: float = 0.95) -> list[MeasuredDifference]:
    """Every fitted MC series minus its base memory at equal size at the largest size both trained."""
    pairs = mc_base_pairs(report)
    family = 1.0 - (1.0 - level) / max(1, len(pairs))
    out = []
    for series, base in pairs:
        match = measured_difference(report, series, base)
        if match is None:
            continue
        label = match.label if match.label is not None else "-"
        if match.a is None or match.b is None:
            out.append(MeasuredDifference(series, base, label, match.params_a, match.params_b, None, match.method,
                                          where_text(match, series, base), None, None, None, family, 0, (),
                                          None, None, reason=not_comparable_text(match, series, base)))
            continue
        noise = difference_noise(match.a, match.b, _calibrated(report, series), _calibrated(report, base))
        diff = match.a.loss - match.b.loss
        low = high = None
        if noise is not None and noise.variance > 0:
            half = float(stats.t.ppf(0.5 + family / 2.0, noise.dof)) * math.sqrt(noise.variance)
            low, high = diff - half, diff + half
        tested = low is not None and noise is not None
        seeds = min(r.n for reading in (match.a, match.b) for _, r in reading.parts)
        out.append(MeasuredDifference(
            series, base, label, match.params_a, match.params_b, match.at, match.method,
            where_text(match, series, base), diff, low, high, family, seeds, match.rung_labels,
            noise.source if tested else None, noise.share if tested else None, noise.dof if tested else 0,
            noise.proxy_ratio if tested else None))
    return out


def _rungs_text(m: MeasuredDifference) -> str:
    return m.rungs[0] if len(m.rungs) == 1 else "each of " + ", ".join(m.rungs)


def measured_text(m: MeasuredDifference) -> str:
    """One measured comparison, in words: where, the difference, its interval and what it means."""
    text = f"{m.series} minus {m.base} {m.where}"
    if m.difference is None:
        return text + ": " + m.reason
    text += f": {signed(m.difference)} nats"
    if m.low is None:
        return text + " (seed noise not measured, so not tested: repeat a seed or evaluate more often)"
    text += f" ({interval(m.low, m.high, signed)}; seed noise from {NOISE_SOURCES[m.noise_source or 'checkpoints']})"
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
            text += (f"; {need} seeds per series at {_rungs_text(m)} would resolve a difference this large"
                     if need <= MAX_SEEDS_ADVISED else
                     f"; a difference this small needs more than {MAX_SEEDS_ADVISED} seeds per series to resolve")
    return text


def _short_where(m: MeasuredDifference) -> str:
    if m.at_params is None:
        return f"at {format_count(m.params_series)} vs {format_count(m.params_base)} parameters (measured)"
    return f"at {format_count(m.at_params)} parameters ({m.method})"


def verdict_clause(report: Report) -> str:
    """The measured MC-vs-base comparisons, short, for the verdict's in-range sentence."""
    rows = measured_differences(report)
    if not any(m.low is not None or m.difference is None for m in rows):
        return ""  # nothing tested and nothing refused: nothing to say
    parts = []
    for m in rows:
        if m.difference is None:
            parts.append(f"{m.series} is not comparable with {m.base} at equal size (no size inside both trained "
                         "ranges)")
        elif m.low is not None:
            state = (f"{'trails' if m.difference > 0 else 'beats'} {m.base} by {abs(m.difference):.3f} nats"
                     if m.resolved else f"differs from {m.base} by {signed(m.difference)} nats, not resolved")
            parts.append(f"{m.series} {_short_where(m)} {state} ({interval(m.low, m.high, signed)})")
    return (" Against the memory it wraps, measured at equal non-embedding parameters at the largest size both "
            "trained (seed noise alone, family-wise over the MC series): " + "; ".join(parts) + ".")


def noise_source_text(source: str, share: float | None, ratio: float | None) -> str:
    """Where a measured interval's seed noise came from, in words."""
    proxy = (f"the scatter of late checkpoints times {ratio:g} (a proxy calibrated against repeated seeds: "
             "scaling.fit.noise.SEED_TO_CHECKPOINT_SD_RATIO)" if ratio is not None else
             "the scatter of late checkpoints, a proxy that understates it")
    per_run = f", {percent(share, 2)} of the loss per run" if share is not None else ""
    return {
        "paired seeds": "the differences of seeds both series trained (paired: one seed initialises the base and "
                        "MC models identically), t with seeds - 1 degrees of freedom",
        "seed spread": f"the spread of repeated seeds at the compared rungs, pooled over both series{per_run}",
        "replicates": f"repeated seeds of each series, pooled over every size it repeated (the fit's "
                      f"calibration){per_run}",
        "checkpoints": f"{proxy}{per_run}",
        "replicates and checkpoints": f"repeated seeds where a series has them, else {proxy}{per_run}",
    }[source]


def measured_sentence(report: Report) -> str:
    """The measured comparisons as one sentence (empty without MC-vs-base pairs)."""
    rows = measured_differences(report)
    if not rows:
        return ""
    tested = [m for m in rows if m.low is not None]
    how = (f"compared at equal non-embedding parameters: directly where the two sizes at the largest rung both "
           f"trained are within {percent(SIZE_TOLERANCE)}, else each series' seed means interpolated linearly in "
           "log parameters between its two bracketing rungs to the largest size both trained (never extrapolated)")
    if tested:
        used = list(dict.fromkeys(m.noise_source for m in tested if m.noise_source))
        sources = []
        for source in used:
            own = [m for m in tested if m.noise_source == source]
            shares = [m.noise_share for m in own if m.noise_share is not None]
            ratio = next((m.proxy_ratio for m in own if m.proxy_ratio is not None), None)
            text = noise_source_text(source, max(shares) if shares else None, ratio)
            sources.append(text + (f" ({', '.join(m.series for m in own)})" if len(used) > 1 else ""))
        lead = (f"Measured, with no law involved ({how}; intervals from seed noise alone, at the family-wise "
                f"{percent(tested[0].level, 2)} level over the {len(rows)} MC series; seed noise from "
                + "; from ".join(sources) + "): ")
    else:
        lead = f"Measured ({how}): "
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
        size = _size(here.target)
        off = missed(report, here.series, size) + missed(report, here.baseline, size)
        if off:  # the law misses a measured point at a trained size: the measurement is the result there
            text += (f" - but the law misses the measured loss of {', '.join(dict.fromkeys(m.series for m in off))} at "
                     f"trained sizes by more than seed noise allows (see Fit quality), so the measured difference "
                     "above stands and this fitted one is not used")
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


def _seeds_needed(need: int | None) -> str:
    if need is None:
        return ""
    return f"{need} seeds" if need <= MAX_SEEDS_ADVISED else f"more than {MAX_SEEDS_ADVISED} seeds"


def _compared_at(m: MeasuredDifference) -> str:
    if m.difference is None:
        return "no size inside both trained ranges"
    if m.at_params is None:
        return (f"{format_count(m.params_series)} / {format_count(m.params_base)} (measured, within "
                f"{percent(SIZE_TOLERANCE)})")
    return m.where.removeprefix("at ")


def in_range_section(report: Report) -> list[Any]:
    measured = measured_differences(report)
    rows = mc_versus_base(report)
    fitted = sentence(report)
    if not any(m.low is not None or m.difference is None for m in measured) and not (rows and fitted):
        # nothing tested (no seed noise to judge a measurement, no in-range target for the law) and no
        # comparison refused for want of an equal size
        return []
    blocks: list[Any] = [Heading("What the ladder resolved: Memory Caching against its base memory")]
    if measured:
        blocks.append(Paragraph(measured_sentence(report)))
        blocks.append(Table(
            ["series", "base", "rung", "params at the rung (MC / base)", "compared at", "seeds", "MC minus base",
             "family-wise interval", "seed noise from", "resolved", "noise margin or seeds needed"],
            [[m.series, m.base, m.size_label, f"{format_count(m.params_series)} / {format_count(m.params_base)}",
              _compared_at(m), str(m.seeds) if m.difference is not None else "", signed(m.difference),
              interval(m.low, m.high, signed) if m.difference is not None else "not comparable at equal size",
              "" if m.noise_source is None else NOISE_SOURCES[m.noise_source],
              "n/a" if m.low is None else "yes" if m.resolved else "no",
              "" if m.low is None else (f"{m.noise_tolerance:.1f}x seed noise" if m.resolved and m.noise_tolerance
                                        else _seeds_needed(m.seeds_to_resolve))]
             for m in measured],
            "Measured validation loss of each MC series minus its base memory's at equal non-embedding parameters "
            "at the largest size both trained (seed means; no law involved): directly at the rung where the two "
            f"sizes are within {percent(SIZE_TOLERANCE)}, else at the largest size inside both series' trained "
            "ranges, each series' loss measured there or interpolated linearly in log parameters between its two "
            "bracketing rungs (interpolation weights carry the seed noise of both). Interval: seed noise alone, at "
            "the family-wise level over the MC series - from paired seeds where both series trained the same seeds "
            "at every rung compared, else the pooled spread of repeated seeds, else the fit's calibration (the "
            "checkpoint proxy scaled by its seed-to-checkpoint ratio). Noise margin: how many times larger seed "
            "noise would have to be to undo a resolved difference; seeds needed: seeds per series at the compared "
            "rungs whose mean would resolve a difference this large."))
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
