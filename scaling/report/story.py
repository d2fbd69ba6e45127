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
from dataclasses import dataclass
from typing import Any

from scaling.formatting import loss, percent, signed
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
