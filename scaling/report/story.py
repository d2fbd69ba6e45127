"""One set of facts the report's prose is written from, so no two sentences can contradict.

Why a module of its own: the verdict, the caveats, the in-range paragraphs and the headline were
each written from their own reading of the numbers, and they disagreed (issue 24): a caveat said
"no floor is reported" while another withheld differences for sitting within 1% of E = 1.955; the
measured loss at a trained size said one series wins while the fitted law at that same size said
it loses. Here each fact is computed once:

- `fit_misses`: trained points the fitted law misses by more than seed noise allows. At a size the
  study trained the measurement is the result; a law that misses it is flagged there, and the
  measured result wins wherever the two would speak about the same size.
- `law_misfits`: series whose law's in-sample error exceeds its backtest tolerance: such a law does
  not describe the runs, whatever its intervals say.
- `floor_facts`: the shared loss floor, in one state (none, fitted but not pinned, pinned) with the
  targets it binds, from which the single floor caveat is written.
- `headline`: at most five sentences a reader can act on, with one confidence level, stated once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from scaling.formatting import ACCURACY_DIGITS, interval, loss, percent, signed
from scaling.models.ladder import format_count
from scaling.report.schema import Report

#: z of a two-sided 95% interval: the report's one confidence level
Z95 = 1.959963984540054
#: in-sample error a law may have before it is said not to describe the runs, when its backtest
#: found smaller held-out errors (the fit-quality threshold the caveats always used)
FIT_QUALITY_SHARE = 0.03


# ---------------------------------------------------------------------------- fitted vs measured
@dataclass(frozen=True)
class FitMiss:
    """A trained size where the fitted law misses the measured loss (seed mean) by more than the
    measured 95% interval (seed noise of that mean) allows."""

    series: str
    size_label: str
    params_nonembed: float
    measured: float  # seed mean of the validation loss
    fitted: float  # the fitted law at the same runs
    allowed: float  # half-width of the measured 95% interval, as a share of the loss (log)
    seeds: int

    @property
    def miss(self) -> float:
        """fitted minus measured, in nats (positive: the law says worse than measured)."""
        return self.fitted - self.measured

    def text(self) -> str:
        return (f"{self.series} at {self.size_label} ({format_count(self.params_nonembed)} parameters): measured "
                f"{loss(self.measured)}, fitted {loss(self.fitted)} ({signed(self.miss)} nats, beyond the measured "
                f"interval of +/-{percent(self.allowed, 1)})")


def fit_misses(report: Report) -> list[FitMiss]:
    """Every (series, trained size) whose seed-mean residual from the fitted law exceeds the 95%
    interval seed noise gives that mean. Without measured seed noise nothing is judged: a miss
    needs a yardstick, and lack of fit is not one (it is computed from the misses themselves)."""
    noise = report.settings.get("seed_noise_log")
    if not noise or not math.isfinite(noise):
        return []
    groups = (report.fit or {}).get("groups") or {}
    out: list[FitMiss] = []
    for series in report.series:
        residuals = list((groups.get(series) or {}).get("residuals_log") or [])
        points = [p for p in report.points if p.series == series]
        if not residuals or len(residuals) != len(points):  # matched by position, as the residuals figure does
            continue
        by_size: dict[str, list[tuple[Any, float]]] = {}
        for p, r in zip(points, residuals):
            if r is not None and math.isfinite(r):
                by_size.setdefault(p.size_label, []).append((p, float(r)))
        for label, items in by_size.items():
            n = len(items)
            mean_r = sum(r for _, r in items) / n
            allowed = Z95 * noise / math.sqrt(n)
            if abs(mean_r) <= allowed:
                continue
            measured = sum(p.val_loss for p, _ in items) / n
            fitted = sum(p.val_loss * math.exp(-r) for p, r in items) / n
            params = sum(p.params_nonembed for p, _ in items) / n
            out.append(FitMiss(series, label, params, measured, fitted, allowed, n))
    return out


@dataclass(frozen=True)
class LawMisfit:
    """A series whose fitted law's in-sample error exceeds its backtest tolerance."""

    series: str
    in_sample: float  # largest absolute relative error over the fitted runs
    tolerance: float  # max(FIT_QUALITY_SHARE, the backtest's typical held-out error in this study)


def backtest_tolerance(report: Report) -> float:
    """The error this study's backtest accepts from the law: the median over series of the largest
    held-out error (a series whose own held-out run is missed does not raise the bar for itself),
    and at least `FIT_QUALITY_SHARE`."""
    held = [g.get("max_abs_rel_error") for g in ((report.backtest or {}).get("groups") or {}).values()]
    held = sorted(v for v in held if v is not None and math.isfinite(v))
    median = held[len(held) // 2] if len(held) % 2 else (sum(held[len(held) // 2 - 1:len(held) // 2 + 1]) / 2 if held else 0.0)
    return max(FIT_QUALITY_SHARE, median)


def law_misfits(report: Report) -> list[LawMisfit]:
    """Series whose law does not describe their own runs: its in-sample error is larger than the
    error the backtest tolerates for this law in this study (`backtest_tolerance`). Why the backtest
    sets the bar: a law that misses the runs it was fitted to by more than it typically misses runs
    it never saw is bending away from those runs, not following them."""
    groups = (report.fit or {}).get("groups") or {}
    tolerance = backtest_tolerance(report)
    out = []
    for series in report.series:
        worst = (groups.get(series) or {}).get("max_abs_rel_error")
        if worst is None or not math.isfinite(worst):
            continue
        if worst > tolerance:
            out.append(LawMisfit(series, worst, tolerance))
    return out


def misfit_caveat(report: Report) -> str | None:
    """The one caveat on laws that do not describe the data and on trained points they miss."""
    misfits, misses = law_misfits(report), fit_misses(report)
    if not misfits and not misses:
        return None
    law = report.settings.get("law") or (report.fit or {}).get("law") or "fitted"
    parts = []
    if misfits:
        parts.append(f"The {law} law does not describe the runs of " + "; ".join(
            f"{m.series} (in-sample error up to {percent(m.in_sample, 1)}, above its backtest tolerance of "
            f"{percent(m.tolerance, 1)})" for m in misfits)
            + ": the robust fit lets some points go, so its exponents, and everything extrapolated from them, "
            "deserve less trust than their intervals suggest")
    if misses:
        parts.append("at trained sizes the fitted law misses the measured loss by more than seed noise allows: "
                     + "; ".join(m.text() for m in misses)
                     + ". There the measured result stands and the fitted comparison at that size is not used")
    return "Fit quality: " + "; ".join(parts) + "."


def missed(report: Report, series: str, params: float | None = None) -> list[FitMiss]:
    """The misses of `series` (at trained sizes up to `params`, when given)."""
    return [m for m in fit_misses(report) if m.series == series
            and (params is None or m.params_nonembed <= params * 1.1)]


# ---------------------------------------------------------------------------- the shared floor
@dataclass(frozen=True)
class FloorFacts:
    """Everything the report says about a shared loss floor E, decided once.

    ``state``: "none" (E at its lower bound: the fit is a pure power law), "unpinned" (a point value
    the predictions flatten towards, but the bootstrap does not pin it) or "pinned"."""

    state: str
    value: float | None
    bound_targets: tuple[str, ...] = ()
    unpredictable_targets: tuple[str, ...] = ()
    remedy: str = ""
    bootstrap_text: str = ""  # the finding's own words on why it is not pinned


def floor_facts(report: Report) -> FloorFacts | None:
    """The shared floor's facts, or None when the fit has no shared E."""
    fit = report.fit or {}
    groups = fit.get("groups") or {}
    if "E" not in (fit.get("shared") or []) or not groups:
        return None
    value = next(iter(groups.values())).get("params", {}).get("E")
    findings = [f for f in report.settings.get("unidentified", []) if f.get("quantity") == "E"]
    unpredictable = tuple(dict.fromkeys(t.target for t in report.targets if t.unidentified))
    bound = tuple(report.settings.get("floor_bound_targets") or [])
    remedy = ("runs over a wider range of compute (larger sizes) would show where the curves flatten; separate "
              "floors (fit.shared_E: false) let the series differ at the targets")
    if value is None or not math.isfinite(value):
        return FloorFacts("none", None, bound, unpredictable, remedy)
    floor_scale = min((p.val_loss for p in report.points), default=1.0)
    if value < 1e-3 * floor_scale:
        return FloorFacts("none", value, (), unpredictable, remedy)
    if findings:
        text = findings[0].get("problem", "")
        return FloorFacts("unpinned", value, bound, unpredictable, remedy, text)
    return FloorFacts("pinned", value, bound, unpredictable, remedy)


def floor_caveat(report: Report) -> str | None:
    """The single sentence group on the shared floor, from `floor_facts`: what E is, whether the data
    pin it, what the predictions do because of it and which differences it withholds."""
    f = floor_facts(report)
    if f is None:
        return None
    if f.state == "none":
        return ("Shared loss floor: none identified; the fit puts E at its lower bound (0), so the runs read as a pure power "
                "law and far beyond the data the predictions follow each series' power law down without a floor; "
                + f.remedy + ".")
    head = f"Shared loss floor: the fit puts a floor E = {loss(f.value)} under every series"
    if f.state == "unpinned":
        head += (", and every fitted curve flattens towards it, but the runs do not pin it"
                 + (f" ({f.bootstrap_text.split(':', 1)[-1].strip()})" if ":" in f.bootstrap_text else "")
                 + "; the predictions far beyond the data rest on that assumed floor, not on a measured one")
    else:
        head += ("; far beyond the data the predictions converge on it and the differences come from each series' A "
                 "and alpha alone (E carries its bootstrap interval, in Fit diagnostics)")
    bound = [t for t in f.bound_targets if t not in f.unpredictable_targets]
    if bound:
        head += (f". At {', '.join(bound)} every series' predicted loss is within 1% of it, so the differences there "
                 "are set by the floor, not the data, and are withheld")
    return head + "; " + f.remedy + "."


# ---------------------------------------------------------------------------- headline
@dataclass
class Headline:
    """At most five sentences: what was measured, whether the extrapolation is a prediction, the
    law's fit where it disagrees with the measurement, and recall."""

    sentences: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


def _measured_vs_baseline(report: Report) -> list[tuple[str, Any, float | None, float | None]]:
    """(series, SizeMatch, low, high) for each contender against the baseline at equal size at the
    largest size both trained; the interval is seed noise alone at 95% family-wise over the contenders."""
    from scipy import stats

    from scaling.report.in_range import _calibrated, difference_noise, match_sizes

    contenders = [s for s in report.series if s != report.baseline]
    family = 1.0 - 0.05 / max(1, len(contenders))
    base_points = [p for p in report.points if p.series == report.baseline]
    out = []
    for s in contenders:
        match = match_sizes([p for p in report.points if p.series == s], base_points)
        if match is None or match.difference is None or match.a is None or match.b is None:
            continue
        noise = difference_noise(match.a, match.b, _calibrated(report, s), _calibrated(report, report.baseline))
        low = high = None
        if noise is not None and noise.variance > 0:
            half = float(stats.t.ppf(0.5 + family / 2.0, noise.dof)) * math.sqrt(noise.variance)
            low, high = match.difference - half, match.difference + half
        out.append((s, match, low, high))
    return out


def headline(report: Report) -> Headline:
    """The report's answer in at most five sentences, one confidence level (95%) stated once."""
    from scaling.report.verdict import _versus, describe_target, headline_targets

    out: list[str] = []
    if report.settings.get("baseline_missing"):
        out.append(f"No comparison with {report.baseline} is possible: {report.settings['baseline_missing']}.")
    measured = [] if report.settings.get("baseline_missing") else _measured_vs_baseline(report)
    level_said = False
    if measured:
        best = min(measured, key=lambda m: m[1].difference)
        s, match, low, high = best
        size = format_count(match.at if match.at is not None else max(match.params_a, match.params_b))
        diff = match.difference
        verb = "beats" if diff < 0 else "trails"
        rung = f" (the {match.label} rung)" if getattr(match, "label", None) else ""
        text = (f"Measured at {size} non-embedding parameters{rung}, the largest size every series trained, the best "
                f"contender {s} {verb} {report.baseline} by {abs(diff):.3f} nats")
        if low is not None and high is not None:
            level_said = True
            sure = low > 0 or high < 0
            text += (f" (95% interval {interval(low, high, signed)}, seed noise alone, family-wise over "
                     f"{len(measured)} series): " + (f"a real difference at this size" if sure else
                                                    "within seed noise, so this size cannot tell them apart"))
        else:
            text += " (seed noise unmeasured, so no interval: repeat a seed to get one)"
        others = [m for m in measured if m[0] != s]
        if others:
            tested = [m for m in others if m[2] is not None]
            sure_others = [m[0] for m in tested if m[2] > 0 or m[3] < 0]
            text += (f"; of the other {len(others)} series, "
                     + (f"{', '.join(sure_others)} differ{'s' if len(sure_others) == 1 else ''} beyond noise"
                        if sure_others else "none differs beyond noise" if tested else "none has an interval"))
        out.append(text + ".")
    large, _ = headline_targets(report)
    level = "" if level_said else "95% "
    if large is not None and large not in (report.settings.get("floor_bound_targets") or []):
        rows = [(s, _versus(report, large, s)) for s in report.series if s != report.baseline]
        rows = [(s, v) for s, v in rows if v is not None]
        if rows:
            s, v = min(rows, key=lambda r: r[1].difference)
            sure = v.low is not None and v.high is not None and (v.low > 0 or v.high < 0)
            out.append(f"Extrapolated to {describe_target(report, large)}, the fitted laws predict {s} "
                       f"{signed(v.difference)} nats against {report.baseline}"
                       + f" ({level}calibrated interval {interval(v.low, v.high, signed)}): "
                       + ("a prediction, not a measurement" if sure else "the interval spans zero, so no winner is "
                          "predicted there") + ".")
            level_said = True
    else:
        out.append(_withheld_sentence(report))
    misfit = [m.series for m in law_misfits(report)]
    misses = fit_misses(report)
    if misses or misfit:
        names = list(dict.fromkeys([m.series for m in misses] + misfit))
        out.append(f"The fitted law does not follow the measured losses of {', '.join(names)}"
                   + (f" (at {misses[0].size_label} it puts {misses[0].series} {abs(misses[0].miss):.3f} nats "
                      f"{'above' if misses[0].miss > 0 else 'below'} its measured loss)" if misses else "") + ", so the measured result above is the one to act on.")
    recall = _recall_headline(report)
    if recall:
        out.append(recall)
    return Headline([s for s in out if s][:5])


def _target_name(report: Report, target: str) -> str:
    """'70B' for the compute target of a 70B model (the study's own terms), else the target as written."""
    for size, budget in zip(report.settings.get("target_sizes", []), report.settings.get("target_budgets", [])):
        flops = next((t.flops for t in report.targets if t.target == target and t.flops), None)
        if flops and math.isclose(budget, flops, rel_tol=1e-6):
            return format_count(size)
    return target


def _withheld_sentence(report: Report) -> str:
    """Why the extrapolation is no prediction, target by target, and what would make it one (with
    advise's cost, when any). Each target is named with its own reason: a target whose losses are
    predicted but whose differences sit on the shared floor is not called unpredictable."""
    findings = report.settings.get("unidentified", [])
    kinds = {f.get("refuses") for f in findings}
    floor_bound = list(report.settings.get("floor_bound_targets") or [])
    unpredictable = list(dict.fromkeys(t.target for t in report.targets if t.unidentified))
    reasons: list[str] = []
    if unpredictable and "unpredictable" in kinds:
        reasons.append(f"at {', '.join(_target_name(report, t) for t in unpredictable)} the calibrated intervals span "
                       "more than a factor of 10")
    elif unpredictable:
        reasons.append(f"at {', '.join(_target_name(report, t) for t in unpredictable)} the fit does not identify them")
    on_floor = [t for t in floor_bound if t not in unpredictable]
    if on_floor:
        reasons.append(f"at {', '.join(_target_name(report, t) for t in on_floor)} every series sits on the shared loss "
                       "floor, so their differences are set by the fit, not the data")
    if not reasons:
        if "N/D split" in kinds or "allocation" in kinds:
            reasons.append("the runs cannot split compute between parameters and tokens")
        elif not report.targets:
            reasons.append("no law could be fitted")
        else:
            reasons.append("the fit does not identify them")
    sizes = ", ".join(format_count(n) for n in report.settings.get("target_sizes", []))
    advice = report.settings.get("advice") or {}
    cands = advice.get("candidates") or []
    cost = ""
    if cands:
        c = cands[0]
        cost = f"; the cheapest useful next run is {c['action']} ({c['device_hours']:.3g} device-hours, `mcscale advise`)"
    return (f"The extrapolation to {sizes or 'the targets'} is withheld, not predicted: {'; '.join(reasons)}; runs at "
            f"larger sizes (nearer the targets) would make it a prediction{cost}.")


def _recall_headline(report: Report) -> str:
    """The recall result in one sentence: the recall phase's best accuracy per series against chance,
    else the language-model runs' MQAR accuracy against chance."""
    if report.recall:
        best: dict[str, Any] = {}
        for p in report.recall:
            if p.series not in best or p.mqar_acc > best[p.series].mqar_acc:
                best[p.series] = p
        chance = ((report.settings.get("recall_phase") or {}).get("chance") or {}).get("in_context")
        ranked = sorted(best.values(), key=lambda p: -p.mqar_acc)
        return ("Recall (models trained on MQAR): best accuracy "
                + ", ".join(f"{p.series} {percent(p.mqar_acc, ACCURACY_DIGITS)}" for p in ranked)
                + (f" (chance {percent(chance, ACCURACY_DIGITS)})" if chance is not None else "") + ".")
    chance = (report.settings.get("recall_chance") or {}).get("mqar")
    accs = [p.mqar_acc for p in report.points if p.mqar_acc is not None and p.series in report.series]
    if not accs:
        return ""
    if chance and max(accs) <= 2.0 * chance:
        return (f"Recall: the language-model runs do not learn MQAR at these sizes (at most "
                f"{percent(max(accs), ACCURACY_DIGITS)}, chance {percent(chance, ACCURACY_DIGITS)}), so recall cannot "
                "tell the series apart here.")
    top = max((p for p in report.points if p.mqar_acc is not None and p.series in report.series),
              key=lambda p: p.params_nonembed)
    at = [p for p in report.points if p.size_label == top.size_label and p.mqar_acc is not None]
    ranked = sorted(at, key=lambda p: -(p.mqar_acc or 0))
    return (f"Recall at {top.size_label}: MQAR accuracy " + ", ".join(
        f"{p.series} {percent(p.mqar_acc, ACCURACY_DIGITS)}" for p in ranked[:4])
            + (f" (chance {percent(chance, ACCURACY_DIGITS)})" if chance else "") + ".")


# ---------------------------------------------------------------------------- names in prose
def human_target(report: Report, name: str) -> str:
    """A target's name as prose says it: 'flops=2.03e20' -> '2.03e20 FLOPs (the compute of a 1.3B model)',
    'params_nonembed=4.8e4' -> '48K parameters'; other names (already worded) unchanged."""
    from scaling.formatting import sci

    key, _, value = name.partition("=")
    try:
        number = float(value)
    except ValueError:
        return name
    if key == "params_nonembed":
        return f"{format_count(number)} parameters"
    if key == "flops":
        for size, budget in zip(report.settings.get("target_sizes", []), report.settings.get("target_budgets", [])):
            if math.isclose(budget, number, rel_tol=1e-2):
                return f"{sci(number)} FLOPs (the compute of a {format_count(size)} model)"
        return f"{sci(number)} FLOPs"
    return name


def humanize(report: Report, text: str) -> str:
    """Every raw target name in `text` replaced by its `human_target` wording (longest names first, so
    'flops=2.03e20' is not half-replaced inside a longer one)."""
    names = sorted({t.target for t in report.targets} | set(report.settings.get("floor_bound_targets") or []),
                   key=len, reverse=True)
    for name in names:
        if name in text:
            text = text.replace(name, human_target(report, name))
    return text
