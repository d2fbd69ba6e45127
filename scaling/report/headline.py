"""The report's headline: its answer in at most five sentences, one confidence level stated once.

Built from the facts `scaling.report.story` computes once (the trained points a law misses, the
laws that do not describe the runs, the floor) plus the in-range comparison and the verdict's
targets, so the headline cannot say what the caveats contradict. A module of its own because it
reads the in-range and verdict modules, which themselves read story's facts: kept here, no module
imports itself through the others (tests/test_import_graph.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from scaling.formatting import ACCURACY_DIGITS, interval, percent, signed
from scaling.models.ladder import format_count
from scaling.report.in_range import _calibrated, difference_noise, match_sizes
from scaling.report.schema import Report
from scaling.report.story import fit_misses, law_misfits
from scaling.report.verdict import _versus, describe_target, headline_targets


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
    from scipy import stats  # lazily: `mcscale --help` must not load scipy

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


