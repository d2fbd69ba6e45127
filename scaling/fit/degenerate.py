"""Degenerate fits: parameters pinned at their bounds, terms the data cannot identify, absurd
implied optima. Found here, said plainly by `mcscale fit`, refused by the report.

Why: an optimiser always returns numbers. A loss floor of 6.6e-8 nats (the bound), an exponent
whose bootstrap interval spans half its range, or a compute-optimal model of 1K parameters at
1e23 FLOPs are not results; they say the data cannot pin that quantity. Tabulating them with a
"95% CI" invites a user to bet on them. Each `Finding` says what is degenerate, why, and what
runs would identify it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np

from scaling.fit.data import FitData
from scaling.fit.result import FitResult
from scaling.formatting import sci

#: A bootstrap interval wider than this (exponents, absolute) leaves an exponent unidentified.
EXPONENT_SPREAD_LIMIT = 1.0
#: A bootstrap interval wider than this many decades leaves a scale (A, B) unidentified.
SCALE_SPREAD_DECADES = 6.0
#: Tokens per parameter must vary by this factor for N and D to be told apart.
MIN_TOKENS_PER_PARAM_RATIO = 2.0
#: A power-law term below this share of the loss at every run contributes nothing the data can see.
DEAD_TERM_SHARE = 1e-3
#: A bootstrap interval narrower than this (relative) is every resample landing on one start value.
COLLAPSED_INTERVAL = 1e-6
#: Compute-optimal sizes outside this range are artefacts of the search bracket, not optima.
PLAUSIBLE_PARAMS = (1e4, 1e16)
PLAUSIBLE_TOKENS = (1e6, 1e17)


@dataclass(frozen=True)
class Finding:
    """One degenerate quantity. ``scope``: the group (series), or "all"; ``quantity``: a parameter
    name or a derived quantity ("compute-optimal allocation"); ``refuses``: which report outputs
    must not be shown as results ("N/D split", "allocation", "floor")."""

    scope: str
    quantity: str
    problem: str
    remedy: str
    refuses: str
    #: the law's parameters this finding leaves unidentified (the fit tables show none of them)
    params: tuple[str, ...] = ()

    def text(self) -> str:
        where = "" if self.scope == "all" else f"{self.scope}: "
        return f"{where}{self.quantity} {self.problem}; {self.remedy}"

    def to_dict(self) -> dict:
        return asdict(self)


def diagnose_fit(result: FitResult, data: FitData | None = None) -> list[Finding]:
    """Parameters at bounds, unidentified parameters, and (with ``data``) an N/D split that the
    runs cannot make."""
    law = result.law_obj
    out: list[Finding] = []
    for g, gf in result.groups.items():
        own_loss = None if data is None else data.loss[data.group.astype(str) == g]
        for p in law.params:
            value = gf.params.get(p.name)
            if value is None or not math.isfinite(value):
                continue
            lo, hi = p.bounds
            if p.name == "E":
                floor_scale = float(np.min(own_loss)) if own_loss is not None and own_loss.size else 1.0
                if value < 1e-3 * floor_scale:
                    out.append(Finding(g, "E", f"= {sci(value)} is pinned at its lower bound (0): the runs show no loss "
                                       "floor, so the fit reads them as a pure power law and the floor is not identified",
                                       "runs over a wider range of compute (larger sizes) would show where the curve "
                                       "flattens", "floor", ("E",)))
                    continue
                boot = np.asarray(gf.bootstrap.get("E") or [], float)
                boot = boot[np.isfinite(boot)]
                if boot.size >= 10 and float(np.quantile(boot, 0.025)) < 1e-3 * floor_scale:
                    out.append(Finding(g, "E", f"= {sci(value)} is not identified: its bootstrap interval reaches the "
                                       f"lower bound (0) ({sci(float(np.quantile(boot, 0.025)))} to "
                                       f"{sci(float(np.quantile(boot, 0.975)))}), so the runs are as well read without "
                                       "a floor", "runs over a wider range of compute (larger sizes) would show where the "
                                       "curve flattens; sharing E across series (fit.shared_E) pools the evidence",
                                       "floor", ("E",)))
                continue
            if not p.log_scale and (value <= lo + 1e-3 or value >= hi - 1e-3):
                out.append(Finding(g, p.name, f"= {sci(value)} is at its bound ({lo:g} to {hi:g})",
                                   "the data do not pin this exponent; more sizes (and, for beta, more token budgets) "
                                   "would", "exponent", (p.name,)))
                continue
            boot = gf.bootstrap.get(p.name)
            if boot:
                draws = np.asarray(boot, float)
                draws = draws[np.isfinite(draws)]
                if draws.size < 2:
                    continue
                q_lo, q_hi = np.quantile(draws, [0.025, 0.975])
                if p.log_scale and q_lo > 0 and math.log10(q_hi / q_lo) > SCALE_SPREAD_DECADES:
                    out.append(Finding(g, p.name, f"is not identified: its bootstrap interval spans "
                                       f"{math.log10(q_hi / q_lo):.0f} orders of magnitude",
                                       "more sizes would pin it", "exponent", (p.name,)))
                elif not p.log_scale and q_hi - q_lo > EXPONENT_SPREAD_LIMIT:
                    out.append(Finding(g, p.name, f"is not identified: its bootstrap interval is {sci(q_lo)} to {sci(q_hi)}",
                                       "more sizes would pin it", "exponent", (p.name,)))
                elif draws.size >= 10 and abs(q_hi - q_lo) <= COLLAPSED_INTERVAL * max(abs(value), 1e-300):
                    out.append(Finding(g, p.name, f"is not identified: every bootstrap resample lands on the same value "
                                       f"({sci(value)}), a start of the search the data never move",
                                       "more sizes would pin it", "exponent", (p.name,)))
    if data is not None and "tokens" in law.features and "params_nonembed" in law.features:
        for g in result.groups:
            rows = data.group.astype(str) == g
            ratio = data.features["tokens"][rows] / data.features["params_nonembed"][rows]
            spread = float(ratio.max() / ratio.min()) if ratio.size else 1.0
            if spread < MIN_TOKENS_PER_PARAM_RATIO:
                out.append(Finding(g, "the N and D terms", f"are not separately identified: tokens per parameter "
                                   f"vary by less than {MIN_TOKENS_PER_PARAM_RATIO:g}x ({sci(ratio.min(), 2)} to "
                                   f"{sci(ratio.max(), 2)}), so the data only pin the loss along that one ratio",
                                   "train some sizes at other budgets (several budget.tokens_per_param values, e.g. "
                                   "5, 20 and 80) to pin the split; until then use the power law", "N/D split",
                                   tuple(p.name for p in law.params if p.name != "E")))
    # an N/D split the runs cannot make leaves every non-floor parameter of the group unidentified:
    # that one finding says it; per-parameter findings for the same group would only repeat it
    split = {f.scope for f in out if f.refuses == "N/D split"}
    out = [f for f in out if f.refuses == "N/D split" or f.scope not in split or "E" in f.params]
    if data is not None:
        out += _dead_terms(result, data, {(f.scope, p) for f in out for p in f.params})
    return out


_SYMBOLS = {"params_nonembed": "N", "tokens": "D", "flops": "C"}


def _dead_terms(result: FitResult, data: FitData, already: set[tuple[str, str]]) -> list[Finding]:
    """Power-law terms the fit switched off (below `DEAD_TERM_SHARE` of the loss at every run of the
    group, e.g. A = 3e-26): their scale and exponent are whatever the search started from."""
    law = result.law_obj
    out: list[Finding] = []
    for g, gf in result.groups.items():
        rows = data.group.astype(str) == g
        if not rows.any():
            continue
        X = {k: data.features[k][rows] for k in law.features if k in data.features}
        if len(X) < len(law.features):
            continue
        loss = np.asarray(law.predict(gf.params, X), float)
        for term in law.terms:
            if not term.slopes:
                continue
            names = (law.param(term.intercept).name,) + tuple(law.param(sl).name for sl, _ in term.slopes)
            if all((g, n) in already for n in names):
                continue
            with np.errstate(all="ignore"):
                u = np.log(gf.params[names[0]]) - sum(gf.params[law.param(sl).name] * np.log(X[f])
                                                      for sl, f in term.slopes)
                share = float(np.nanmax(np.exp(u) / loss))
            if not share < DEAD_TERM_SHARE:
                continue
            inputs = " and ".join(_SYMBOLS.get(f, f) for _, f in term.slopes)
            out.append(Finding(g, f"the {inputs} term ({', '.join(names)})", f"contributes nothing at the runs (at most "
                               f"{sci(100 * share, 2)}% of the loss): the fit switched it off, so {' and '.join(names)} "
                               "are where the search started, not measurements",
                               "more sizes (and token budgets) would show the term", "exponent", names))
    return out


def diagnose_frontier(frontier: Iterable[dict]) -> list[Finding]:
    """Compute-optimal allocations that sit at the search bracket or outside plausible ranges."""
    out: list[Finding] = []
    seen: set[str] = set()
    for f in frontier:
        n = f["params_nonembed"]["value"]
        d = f["tokens"]["value"]
        g = f["group"]
        bad_n = n is None or not (PLAUSIBLE_PARAMS[0] <= n <= PLAUSIBLE_PARAMS[1])
        bad_d = d is None or not (PLAUSIBLE_TOKENS[0] <= d <= PLAUSIBLE_TOKENS[1])
        if (bad_n or bad_d) and g not in seen:
            seen.add(g)
            out.append(Finding(g, "the compute-optimal allocation", f"is absurd (N_opt = {sci(n)} parameters, D_opt = "
                               f"{sci(d)} tokens at {sci(f['flops'])} FLOPs): the fitted law has no interior optimum "
                               "in a plausible range", "runs at several token budgets per size would pin the trade-off",
                               "allocation"))
    return out


#: Kinds of finding that leave a group's predicted loss itself unidentified (an exponent or scale
#: the data do not pin, a switched-off term, an N/D split the runs cannot make): no interval of a
#: loss is given for that group, plain or calibrated. A floor alone ("floor") does not: the curve
#: the runs pin is still predicted, and the calibrated drift widens it beyond the data.
INTERVAL_REFUSING_KINDS: tuple[str, ...] = ("exponent", "N/D split")


def interval_refusals(findings: Iterable[Finding | dict]) -> dict[str, str]:
    """Group -> why no prediction interval is given for it, with the runs that would identify the
    fit: one sentence per finding of a kind in `INTERVAL_REFUSING_KINDS` (scope "all" applies to
    every group, under the key "all"). Both interval paths (plain bootstrap and calibrated) read
    this one rule, so they refuse exactly the same fits."""
    out: dict[str, list[str]] = {}
    for f in findings:
        d = f.to_dict() if isinstance(f, Finding) else dict(f)
        if d["refuses"] in INTERVAL_REFUSING_KINDS:
            out.setdefault(d["scope"], []).append(f"{d['quantity']} {d['problem']}; {d['remedy']}")
    return {g: "no interval: the fit is not identified (" + "; ".join(v) + ")" for g, v in out.items()}


def refused(findings: Iterable[Finding], kind: str) -> list[Finding]:
    return [f for f in findings if f.refuses == kind]


def consolidate(findings: Iterable[dict | Finding]) -> list[str]:
    """One sentence per kind of degeneracy, naming every series it hits (not one per series)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for f in findings:
        d = f.to_dict() if isinstance(f, Finding) else dict(f)
        groups.setdefault((d["quantity"], d["refuses"]), []).append(d)
    out = []
    for (quantity, _), items in groups.items():
        scopes = [d["scope"] for d in items if d["scope"] != "all"]
        first = items[0]
        if len(items) == 1:
            where = f"{first['scope']}: " if first["scope"] != "all" else ""
            out.append(f"{where}{quantity} {first['problem']}; {first['remedy']}")
        elif len({d["problem"] for d in items}) == 1:
            out.append(f"{', '.join(scopes)}: {quantity} {first['problem']}; {first['remedy']}")
        else:
            out.append(f"{quantity} in {len(items)} series ({', '.join(scopes)}) {first['problem']} (the figures are "
                       f"{first['scope']}'s); {first['remedy']}")
    return out


#: Below this share of the loss above a shared floor (``1 - E / L``) for every series, a target's
#: differences between series are set by the floor they share, not by the data.
FLOOR_BOUND_SHARE = 0.01


def floor_bound_targets(losses: dict[str, dict[str, float]], floor: float | None) -> list[tuple[str, float]]:
    """(target, largest share of the loss above the floor) for the targets `diagnose_floor_bound` flags."""
    if floor is None or not math.isfinite(floor) or floor <= 0:
        return []
    bound: list[tuple[str, float]] = []
    for target, per_series in losses.items():
        values = [v for v in per_series.values() if v is not None and math.isfinite(v) and v > 0]
        if len(values) < 2:
            continue
        share = max(1.0 - floor / v for v in values)
        if share < FLOOR_BOUND_SHARE:
            bound.append((target, share))
    return bound


def diagnose_floor_bound(losses: dict[str, dict[str, float]], floor: float | None) -> list[Finding]:
    """Targets where every series' predicted loss sits on the shared floor: ``losses`` maps each
    target to {series: predicted loss}. With a shared E, every series' law runs down to the same
    E, so where all of them are within `FLOOR_BOUND_SHARE` of it the differences are ~0 by the
    construction of the fit ("-4.2e-06 lower, P(lower) 50%"), not a measurement. One finding
    naming every such target (refuses "difference")."""
    bound = floor_bound_targets(losses, floor)
    if not bound or floor is None:
        return []
    names = ", ".join(t for t, _ in bound)
    worst = max(s for _, s in bound)
    return [Finding("all", "the differences between series", f"at {names} are set by the shared loss floor, not by the "
                    f"data: there every series' predicted loss is within {100 * FLOOR_BOUND_SHARE:g}% of E = {floor:.3f} "
                    f"(the largest part above it is {100 * max(worst, 0.0):.2g}% of the loss), so they are zero by "
                    "construction and are withheld", "runs at larger sizes (a longer ladder, so the fitted laws reach "
                    "the targets' scale), or separate floors (fit.shared_E: false), would let the series differ there",
                    "difference")]


#: A calibrated 95% interval of a loss wider than this factor (high / low) predicts nothing.
UNPREDICTABLE_RATIO = 10.0


def diagnose_unpredictable(intervals: dict[str, dict[str, tuple[float, float]]],
                           shared_floor: bool = False) -> tuple[list[str], list[Finding]]:
    """Targets whose calibrated interval of a new run's loss spans more than `UNPREDICTABLE_RATIO`
    for some series (``intervals``: target -> {series: (low, high)}): a prediction of "anything
    from 0.03 to 79 nats" is no prediction, and its point value (often a floor the data do not
    identify) is not a result. Returns (those targets, one finding naming them)."""
    worst: dict[str, tuple[float, str, float, float]] = {}
    for target, per_series in intervals.items():
        for series, (low, high) in per_series.items():
            if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)) or low <= 0:
                continue
            ratio = high / low
            if ratio > UNPREDICTABLE_RATIO and ratio > worst.get(target, (0.0,))[0]:
                worst[target] = (ratio, series, low, high)
    if not worst:
        return [], []
    ratio, series, low, high = max(worst.values())
    names = ", ".join(worst)
    return list(worst), [Finding("all", "the predicted losses", f"at {names} are not predictable from these runs: their "
                                 f"calibrated 95% intervals span more than a factor of {UNPREDICTABLE_RATIO:g} (up to "
                                 f"{sci(low)} to {sci(high)} for {series}), so no prediction or difference is given there",
                                 "runs at larger sizes (nearer the targets)" + ("" if shared_floor else
                                                                                " or a shared floor (fit.shared_E)")
                                 + " would narrow them", "unpredictable")]
