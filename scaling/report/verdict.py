"""The report's verdict paragraph and its caveats, written from the numbers, never boilerplate.

Why generated text: a reader who only reads one paragraph must get the answer (which
architecture is predicted to win at the largest target, by how much, how sure, where curves
cross) and how far to trust it (backtest error, interval width, orders of magnitude
extrapolated). Every sentence here is conditional on the numbers, so a study that cannot tell
the architectures apart says exactly that.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from scaling.fit.degenerate import FLOOR_BOUND_SHARE, consolidate
from scaling.fit.noise import MIN_LATE_POINTS
from scaling.formatting import ACCURACY_DIGITS, interval, loss, percent, sci, signed
from scaling.models.ladder import format_count
from scaling.report.in_range import SIZE_TOLERANCE, match_sizes, verdict_clause
from scaling.report.story import floor_caveat, misfit_caveat, missed
from scaling.report.schema import (COMPUTE_TARGET_PREFIXES, SIZE_TARGET_PREFIXES, Report, TargetRow, VersusRow,
                                   resolved)

_STRATEGY_NAMES = {"grm": "GRM", "ssc": "SSC", "soup": "Memory Soup", "residual": "residual caching",
                   "none": "no caching"}


# ---------------------------------------------------------------------------- targets
def compute_targets(report: Report) -> list[TargetRow]:
    """Rows at compute budgets (equal FLOPs for every series), if the law gives them (and the
    data identify them)."""
    return [t for t in report.targets if t.target.startswith(COMPUTE_TARGET_PREFIXES) and not t.unidentified]


def size_targets(report: Report) -> list[TargetRow]:
    """Rows at target sizes with the 20 tokens/param rule (chinchilla) or the power law in params."""
    return [t for t in report.targets if t.target.startswith(SIZE_TARGET_PREFIXES) and not t.unidentified
            and (not t.target.startswith("N=") or "tokens/param" in t.target)]


def headline_targets(report: Report) -> tuple[str | None, str | None]:
    """(largest, smallest) target names on the axis the verdict speaks about: equal compute where
    available, else size."""
    rows = compute_targets(report) or size_targets(report)
    bound = set(report.settings.get("floor_bound_targets") or [])
    rows = [t for t in rows if t.target not in bound] or rows  # lead with differences that are results
    if not rows:
        return None, None
    key = (lambda t: t.flops or 0.0) if rows[0].target.startswith(COMPUTE_TARGET_PREFIXES) else (lambda t: t.params_nonembed or 0.0)
    ordered = sorted(rows, key=key)
    return ordered[-1].target, ordered[0].target


def describe_target(report: Report, target: str) -> str:
    """'the compute of a 70B model at 20 tokens/param (5.88e23 FLOPs)' or 'N = 70B parameters'."""
    rows = [t for t in report.targets if t.target == target]
    if target.startswith(COMPUTE_TARGET_PREFIXES) and rows:
        flops = rows[0].flops
        budgets = report.settings.get("target_budgets", [])
        sizes = report.settings.get("target_sizes", [])
        for size, budget in zip(sizes, budgets):
            if flops and math.isclose(budget, flops, rel_tol=1e-6):
                tpp = report.settings.get("target_tokens_per_param") or 20
                return f"the compute of a {format_count(size)}-parameter model at {tpp:g} tokens/param ({sci(flops)} FLOPs)"
        return f"{sci(flops)} FLOPs"
    if rows and rows[0].params_nonembed:
        text = f"{format_count(rows[0].params_nonembed)} non-embedding parameters"
        if "tokens/param" in target:
            return text + f" at {target.split(', ', 1)[-1]}"
        budget = report.settings.get("study_budget") or {}
        if budget.get("tokens_per_param"):
            return text + f" at the study's {budget['tokens_per_param']:g} tokens/param"
        if budget.get("tokens"):
            return text + f" on the study's {sci(budget['tokens'])} tokens"
        return text
    return target


def _row(report: Report, target: str, series: str) -> TargetRow | None:
    return next((t for t in report.targets if t.target == target and t.series == series), None)


def _versus(report: Report, target: str, series: str) -> VersusRow | None:
    return next((v for v in report.versus if v.target == target and v.series == series), None)


def _strategy(report: Report, series: str) -> str:
    return next((p.strategy for p in report.points if p.series == series), "none")


def best_per_strategy(report: Report, target: str) -> list[str]:
    """The lowest-loss series of each caching strategy (and of the plain recurrent ones), best first."""
    best: dict[str, TargetRow] = {}
    for series in report.series:
        if series == report.baseline:
            continue
        row = _row(report, target, series)
        if row is None:
            continue
        key = _strategy(report, series)
        if key not in best or row.loss < best[key].loss:
            best[key] = row
    return [r.series for r in sorted(best.values(), key=lambda r: r.loss)]


# ---------------------------------------------------------------------------- verdict
def verdict_for(report: Report) -> str:
    """One paragraph: the prediction at the largest target, per caching strategy, with intervals."""
    large, small = headline_targets(report)
    n_runs = sum(1 for p in report.points if p.series in report.series)
    missing = report.settings.get("baseline_missing")
    if missing:  # no stand-in baseline: say so, and give each series' own prediction only
        parts = [f"No comparison with {report.baseline} is possible: {missing}. No other series was put in its "
                 "place, so this report states no differences; rerun the baseline (for runs that learned nothing or "
                 "diverged: with a lower optimizer.lr) and remake the report."]
        if large is not None:
            rows = [_row(report, large, s) for s in report.series]
            parts.append(f"Each series' own prediction at {describe_target(report, large)}, fitted on {n_runs} "
                         "finished runs: " + "; ".join(f"{r.series} {loss(r.loss)} ({interval(r.low, r.high)})"
                                                       for r in rows if r is not None) + ".")
        return " ".join(parts)
    lead = in_range_sentence(report)
    if large is None:
        refused = [f for f in report.settings.get("unidentified", [])
                   if f.get("refuses") in ("N/D split", "allocation", "unpredictable")]
        why = (" The extrapolations are withheld: " + consolidate(refused)[0] + ".") if refused else ""
        return " ".join(p for p in (lead, "No target could be predicted from this fit." + why) if p)
    base = _row(report, large, report.baseline)
    parts = [lead, f"Beyond the data, fitted on {n_runs} finished runs of {len(report.series)} series and averaged over "
             f"the functional forms by their backtest record, the laws predict at "
             f"{describe_target(report, large)} a validation loss of {loss(base.loss) if base else 'n/a'} for "
             f"{report.baseline} (calibrated 95% interval {interval(base.low, base.high) if base else 'n/a'})."]
    unpredictable = next((f for f in report.settings.get("unidentified", []) if f.get("refuses") == "unpredictable"), None)
    further = ("" if unpredictable is None else
               f"Further out no prediction is given: {unpredictable['quantity']} {unpredictable['problem']}."
               + _far_width_text(report))
    if large in (report.settings.get("floor_bound_targets") or []):
        # the headline prefers targets whose differences are results: here every one on its axis is floor-bound
        parts.append(f"Every series is predicted the same there, within {100 * FLOOR_BOUND_SHARE:g}% of the shared loss "
                     "floor, as at every target: their differences are zero by construction of the shared floor, "
                     "not a result, so none is given (see Caveats for the runs that would change this).")
        parts.append(further)
        parts.append(_backtest_sentence(report))
        return " ".join(p for p in parts if p)
    contenders = best_per_strategy(report, large)
    for series in contenders:
        row, v = _row(report, large, series), _versus(report, large, series)
        if row is None or v is None:
            continue
        name = _STRATEGY_NAMES.get(_strategy(report, series), _strategy(report, series))
        direction = "lower" if v.difference < 0 else "higher"
        sentence = (f"{series} ({name}): {loss(row.loss)} ({interval(row.low, row.high)}), "
                    f"{signed(abs(v.difference))[1:]} {direction} than {report.baseline} (difference {interval(v.low, v.high, signed)}")
        if v.p_better is not None:
            sentence += f"; P(lower) = {percent(v.p_better)} over the calibrated draws"
        sentence += ")."
        parts.append(sentence)
    if contenders:
        parts.append(_resolution(report, large, contenders))
        crossing = _crossing_sentence(report, contenders[0])
        if crossing:
            parts.append(crossing)
        if small is not None and small != large:
            v = _versus(report, small, contenders[0])
            small_size = next((t.params_nonembed for t in report.targets if t.target == small), None)
            off = missed(report, contenders[0], small_size) + missed(report, report.baseline, small_size)
            in_range = small_size is not None and small_size <= 1.1 * max(
                (p.params_nonembed for p in report.points if p.series in report.series), default=0.0)
            if v is not None and in_range and off:  # at a trained size the measurement wins over a law that misses it
                parts.append(f"At {describe_target(report, small)}, a size the study trained, the fitted law misses "
                             "the measured losses by more than seed noise allows (see Fit quality), so the measured "
                             "comparison above is the result there, not the fitted one.")
            elif v is not None:
                parts.append(f"At {describe_target(report, small)}, {contenders[0]} minus {report.baseline} is "
                             f"{signed(v.difference)} ({interval(v.low, v.high, signed)}).")
    parts.append(further)
    parts.append(_backtest_sentence(report))
    return " ".join(p for p in parts if p)


def _far_width_text(report: Report) -> str:
    """The calibrated width of the extrapolation at the nearest withheld target, per series: what
    the runs can say there, even though it is no prediction."""
    far = [t for t in report.targets if t.unidentified and t.pred_low and t.pred_high and t.pred_low > 0]
    if not far:
        return ""
    nearest = min(far, key=lambda t: t.params_nonembed or t.flops or math.inf).target
    rows = [t for t in far if t.target == nearest]
    return (f" Its calibrated width at {describe_target(report, nearest)}, a new run's 95% interval: "
            + "; ".join(f"{t.series} {interval(t.pred_low, t.pred_high)} ({t.pred_high / t.pred_low:,.0f}x)"
                        for t in rows) + ".")


def in_range_sentence(report: Report) -> str:
    """What the study's own range says, before any extrapolation: at the largest size every
    series trained, each contender's measured loss against the baseline's at equal non-embedding
    parameters (`scaling.report.in_range.match_sizes`: a rung's series differ in size), and recall."""
    fitted = [p for p in report.points if p.series in report.series]
    labels = [lab for lab in dict.fromkeys(p.size_label for p in sorted(fitted, key=lambda p: p.params_nonembed))
              if all(any(p.series == s and p.size_label == lab for p in fitted) for s in report.series)]
    if not labels:
        return ""
    top = labels[-1]
    at = {p.series: p for p in fitted if p.size_label == top}
    base = at.get(report.baseline)
    if base is None:
        return ""
    # each series up to its size at the top rung: the comparison stays at the rung every series trained
    ceiling = {s: max(p.params_nonembed for p in fitted if p.series == s and p.size_label == top)
               for s in report.series}
    upto = {s: [p for p in fitted if p.series == s and p.params_nonembed <= ceiling[s]] for s in report.series}
    base_runs = [p.val_loss for p in upto[report.baseline] if p.size_label == top]
    seeds = max(sum(1 for p in fitted if p.series == s and p.size_label == top) for s in report.series)
    noise = report.settings.get("seed_noise_log")
    parts = []
    chance = (report.settings.get("recall_chance") or {}).get("mqar")
    mqar = [at[s].mqar_acc for s in report.series if s in at and at[s].mqar_acc is not None]
    # accuracies within twice chance for every series: recall is not learned, so per-series numbers mean nothing
    unlearned = bool(chance) and bool(mqar) and max(mqar) <= 2.0 * chance
    for s in report.series:
        if s == report.baseline or s not in at:
            continue
        p = at[s]
        match = match_sizes(upto[s], upto[report.baseline])
        details = []
        if match is None or match.difference is None:
            text = f"{s} not comparable at equal size (no size inside both trained ranges)"
        elif match.direct:
            text = f"{s} {signed(match.difference)}"
            details.append(f"{format_count(match.params_a)} vs {format_count(match.params_b)} parameters, within "
                           f"{percent(SIZE_TOLERANCE)}")
        else:
            assert match.at is not None and match.a is not None and match.b is not None
            text = f"{s} {signed(match.difference)} at {format_count(match.at)} parameters"
            details.append("both measured" if match.method == "measured" else
                           f"{s} {match.a.describe()}, {report.baseline} {match.b.describe()}")
        if p.mqar_acc is not None and base.mqar_acc is not None and not unlearned:
            details.append(f"MQAR at {top} {percent(p.mqar_acc, ACCURACY_DIGITS)} vs "
                           f"{percent(base.mqar_acc, ACCURACY_DIGITS)}")
        parts.append(text + (f" ({'; '.join(details)})" if details else ""))
    if not parts:
        return ""
    phase = _recall_phase_text(report)
    if unlearned and phase:  # the recall phase, trained on MQAR itself, is what tells the series apart
        recall = (f" The language-model runs' MQAR accuracy is {percent(max(mqar), ACCURACY_DIGITS)} at most, no better "
                  f"than guessing one of the evaluation's values (chance {percent(chance, ACCURACY_DIGITS)}, the line in "
                  f"the recall figure), so recall is measured by the recall phase instead:{phase}")
    elif unlearned:
        recall = (f" MQAR accuracy there is at chance for every series ({percent(min(mqar), ACCURACY_DIGITS)} to "
                  f"{percent(max(mqar), ACCURACY_DIGITS)}, chance {percent(chance, ACCURACY_DIGITS)}), so recall is "
                  "not learned at these sizes and cannot tell the series apart.")
    else:
        recall = f" Recall phase:{phase}" if phase else ""
    noise_text = (f"seed noise {percent(noise, 2)} of the loss, {_seed_source_text(report)}" if noise else
                  f"{seeds} seed per size and too few late evaluations per run to measure seed noise from checkpoints, "
                  "so differences this small may be noise" if seeds == 1 else "")

    return (f"Within the study's range, at the largest size every series trained ({top}; {report.baseline} "
            f"{loss(sum(base_runs) / len(base_runs))} at {format_count(ceiling[report.baseline])} parameters), measured "
            f"validation loss minus {report.baseline}'s at equal non-embedding parameters (seed means; interpolated "
            "in log parameters between a series' bracketing rungs where the sizes differ by more than "
            f"{percent(SIZE_TOLERANCE)}): " + "; ".join(parts)
            + (f" ({noise_text})" if noise_text else "") + "." + verdict_clause(report) + recall)


def _recall_phase_text(report: Report) -> str:
    """Each series' best accuracy in the recall phase (models trained on MQAR itself) and its width,
    against the phase's chance level; empty without a recall phase. The verdict states it so that
    it never contradicts the recall section that leads the report."""
    if not report.recall:
        return ""
    best: dict[str, Any] = {}
    for point in report.recall:
        if point.series not in best or point.mqar_acc > best[point.series].mqar_acc:
            best[point.series] = point
    chance = ((report.settings.get("recall_phase") or {}).get("chance") or {}).get("in_context")
    parts = [f"{s} {percent(p.mqar_acc, ACCURACY_DIGITS)} (width {p.d_model})" for s, p in best.items()]
    return (" best MQAR accuracy per series, " + "; ".join(parts)
            + (f", against chance {percent(chance, ACCURACY_DIGITS)} in the recall phase (guessing among the "
               "sequence's values not yet answered; a different task from the language-model evaluation's MQAR)."
               if chance is not None else "."))


def _seed_source_text(report: Report) -> str:
    source = report.settings.get("seed_noise_source") or ""
    groups = ((report.settings.get("calibration") or {}).get("groups") or {}).values()
    ratio = next((g.get("seed_proxy_ratio") for g in groups
                  if g.get("seed_source") == "checkpoints" and g.get("seed_proxy_ratio") is not None), None)
    proxy = ("from the scatter of each run's late evaluations around a smooth curve (scaling.fit.noise)"
             + (f" times {ratio:g}, a proxy calibrated against repeated seeds (SEED_TO_CHECKPOINT_SD_RATIO)"
                if ratio is not None else ""))
    if "replicates" in source and "checkpoints" in source:
        return f"measured between repeated seeds and, where a series has none, estimated {proxy}"
    if "replicates" in source:
        return "measured between repeated seeds"
    return f"estimated {proxy}; one seed per configuration"


def _resolution(report: Report, target: str, contenders: Iterable[str]) -> str:
    rows = [v for s in contenders if (v := _versus(report, target, s)) is not None]
    if not rows or all(v.low is None for v in rows):
        return "Without a bootstrap the differences have no intervals: rerun with fit.bootstrap > 0 before trusting them."
    settled = [v for v in rows if resolved(v)]
    family = next((v.family_level for v in rows if v.family_level is not None), None)
    level_text = "95%" if family is None else f"the family-wise {percent(family, 2)} level (95% over all series x targets)"
    if not settled:
        return (f"No difference from the baseline is resolved there at {level_text}: every calibrated interval "
                "spans zero, so this study cannot say which architecture is better at that scale.")
    words = [f"{v.series} {'beats' if (v.family_high if v.family_high is not None else v.high) < 0 else 'trails'} "
             f"{report.baseline}" for v in settled]
    return f"Resolved at {level_text}: " + "; ".join(words) + "."


def _crossing_sentence(report: Report, series: str) -> str:
    rows = [c for c in report.crossovers if c.series == series]
    if not rows:
        return ""
    c = rows[-1] if report.settings.get("law") == "chinchilla" else rows[0]
    axis = "FLOPs" if "flops" in c.axis else "parameters"
    fmt = sci if axis == "FLOPs" else (lambda v: format_count(v) if v else "n/a")
    frac = c.fraction_of_draws_crossing
    share = "" if frac is None else f" ({percent(frac)} of calibrated draws cross)"
    if c.at is not None and (frac is None or frac >= 0.5) and c.low is not None:
        if frac is None:
            return (f"{series}'s curve crosses {report.baseline}'s at {fmt(c.at)} {axis} "
                    f"(95% interval {interval(c.low, c.high, fmt)}).")
        # The interval is over the draws that cross, so with some draws not crossing it is a
        # conditional one, and the averaged curves' crossing can fall outside it: say which.
        text = (f"{series}'s curve crosses {report.baseline}'s at {fmt(c.at)} {axis} on the averaged curves; "
                f"{percent(frac)} of calibrated draws cross, 95% of those between {fmt(c.low)} and {fmt(c.high)}")
        if not c.low <= c.at <= c.high:
            return text + (", which leaves out the averaged curves' crossing, so where they cross is not settled.")
        return text + "."
    if c.at is not None:
        return (f"The averaged curves of {series} and {report.baseline} cross at {fmt(c.at)} {axis}, but only "
                f"{percent(frac)} of calibrated draws cross at all, so the crossing is not a result.")
    lo, hi = c.search_range or (math.nan, math.nan)
    text = f"The averaged curves of {series} and {report.baseline} do not cross between {fmt(lo)} and {fmt(hi)} {axis}"
    if frac is not None and frac >= 0.05:
        return text + f", but {percent(frac)} of calibrated draws do, so the ordering there is not settled."
    return text + share + "."


def _backtest_sentence(report: Report) -> str:
    bt = report.backtest or {}
    if bt.get("error"):
        return f"No backtest could be run ({bt['error']})."
    groups = bt.get("groups", {})
    if not groups:
        return ""
    errors = [g["mean_abs_rel_error"] for g in groups.values()]
    worst = max(g["max_abs_rel_error"] for g in groups.values())
    inside = [p["in_interval"] for g in groups.values() for p in g["points"] if p.get("in_interval") is not None]
    text = (f"Backtest ({bt.get('split')}): mean absolute error {percent(sum(errors) / len(errors), 1)} over series, "
            f"worst {percent(worst, 1)}")
    if inside:
        text += f"; {sum(inside)} of {len(inside)} held-out runs fell inside their 95% prediction intervals"
    return text + "."


# ---------------------------------------------------------------------------- caveats
def caveats_for(report: Report) -> list[str]:
    """What limits the verdict, each computed from this study's numbers."""
    out: list[str] = []
    s = report.settings
    if s.get("baseline_missing"):
        out.append(f"Baseline missing: {s['baseline_missing']}; no difference from it is reported.")
    c_lo_data, c_hi_data = s.get("data_flops_range", [math.nan, math.nan])
    n_lo_data, n_hi_data = s.get("data_params_range", [math.nan, math.nan])
    budgets, sizes = s.get("target_budgets", []), s.get("target_sizes", [])
    if budgets and c_hi_data:
        out.append(f"Extrapolation: the runs span {math.log10(c_hi_data / c_lo_data):.1f} orders of magnitude of "
                   f"compute ({sci(c_lo_data)} to {sci(c_hi_data)} FLOPs) and {format_count(n_lo_data)} to "
                   f"{format_count(n_hi_data)} parameters; the largest target lies "
                   f"{math.log10(max(budgets) / c_hi_data):.1f} orders of magnitude beyond the largest run in compute "
                   f"and {math.log10(max(sizes) / n_hi_data):.1f} in parameters.")
    large, _ = headline_targets(report)
    if large is not None:
        widths = [(t.series, (t.pred_high - t.pred_low) / t.loss) for t in report.targets
                  if t.target == large and t.pred_low is not None and t.pred_high is not None and t.loss]
        if widths:
            series, widest = max(widths, key=lambda w: w[1])
            diffs = [abs(v.difference) for v in report.versus if v.target == large]
            text = (f"Interval width at {describe_target(report, large)}: 95% prediction intervals are "
                    f"{percent(min(w for _, w in widths), 1)} to {percent(widest, 1)} of the predicted loss "
                    f"(widest: {series})")
            if diffs:
                text += (f", against predicted differences from {report.baseline} of at most {signed(max(diffs))[1:]} nats "
                         f"({percent(max(diffs) / next(t.loss for t in report.targets if t.target == large), 2)})")
            out.append(text + ".")
    out.extend(_fit_caveats(report))
    out.extend(_backtest_caveats(report))
    if report.dropped:
        listing = "; ".join(f"{d.trial_id} ({d.reason})" for d in report.dropped[:12])
        more = f" and {len(report.dropped) - 12} more" if len(report.dropped) > 12 else ""
        out.append(f"Dropped points: {len(report.dropped)} trial(s) were not fitted: {listing}{more}.")
    else:
        out.append("Dropped points: none; every ladder trial finished and was fitted.")
    for note in s.get("excluded_series", []):
        out.append(f"Series left out: {note}.")
    out.extend(_variance_caveats(report))
    return out


def _variance_caveats(report: Report) -> list[str]:
    """Where the width of the headline intervals comes from (seed noise, lack of fit, parameters,
    form, extrapolation), so a reader knows which runs would narrow them."""
    comps = report.settings.get("variance_components") or {}
    if not comps:
        return []
    names = ("seed noise", "lack of fit", "parameters", "form", "extrapolation")
    measured = [k for k in names if any(c.get(k) is not None for c in comps.values())]
    mean = {k: sum(c.get(k) or 0.0 for c in comps.values()) / len(comps) for k in measured}
    top = max(measured, key=lambda k: mean[k])
    target = next(iter(comps.values())).get("target", "")
    seed = report.settings.get("seed_noise_log")
    text = (f"Variance components at {describe_target(report, target)} (standard deviation as a share of the loss, "
            "mean over series): " + ", ".join(f"{k} {percent(mean[k], 2)}" if k in mean else f"{k} not measured"
                                              for k in names)
            + f". The largest is {top}")
    if top == "extrapolation":
        text += ", so runs at larger sizes (closer to the target) narrow the intervals most; more seeds would not"
    elif top in ("form", "parameters"):
        text += ", so more sizes (a longer ladder) narrow the intervals most"
    elif top == "seed noise":
        text += ", so more seeds at the largest sizes narrow the intervals most"
    if seed:
        text += f". Seed noise is {_seed_source_text(report)}; a new run's interval includes it, the expected loss's does not."
    else:
        text += (f". Seed noise is unmeasured (one seed per configuration, and fewer than {MIN_LATE_POINTS} evaluations in the second "
                 "half of each run to measure it from checkpoints): it is counted inside lack of fit, which is an "
                 "upper bound on it; repeat a seed or evaluate more often (data.evals.every_steps) to separate them.")
    return [text]


def _fit_caveats(report: Report) -> list[str]:
    out: list[str] = []
    fit = report.fit or {}
    groups = fit.get("groups", {})
    # the floor and the fit's quality each get one caveat written from one set of facts (scaling.report.story)
    floor = floor_caveat(report)
    misfit = misfit_caveat(report)
    out.extend(c for c in (floor, misfit) if c)
    small = [g for g, v in groups.items() if v.get("n_points", 0) < 5]
    if small:
        out.append(f"Few sizes: {', '.join(small)} {'has' if len(small) == 1 else 'have'} fewer than 5 fitted runs; "
                   "a law's exponent is poorly pinned by so few points.")
    for warning in (fit.get("settings") or {}).get("warnings", []):
        out.append(f"Fit warning: {warning}.")
    findings = report.settings.get("unidentified", [])
    # with a shared floor, its findings (E not pinned, differences bound by it) are in the floor caveat
    folded = {"floor", "difference"} if floor else set()
    for kind, consequence in (("N/D split", "so every chinchilla target, crossover and allocation is withheld"),
                              ("allocation", "so the allocation and the compute-optimal targets are withheld"),
                              ("floor", "so predictions far beyond the data rest on the form, not on a measured floor"),
                              ("exponent", "so extrapolations along it are not identified"),
                              ("difference", "so no verdict is drawn from them"),
                              ("unpredictable", "so the verdict rests on the study's own range")):
        if kind in folded:
            continue
        for text in consolidate(f for f in findings if f["refuses"] == kind):
            out.append(f"Not identified: {text} ({consequence}).")
    return out


def _backtest_caveats(report: Report) -> list[str]:
    bt = report.backtest or {}
    if bt.get("error"):
        return [f"Backtest: none could be run ({bt['error']}); treat the extrapolation as untested."]
    out: list[str] = []
    points = [p for g in bt.get("groups", {}).values() for p in g["points"]]
    inside = [p["in_interval"] for p in points if p.get("in_interval") is not None]
    if inside and sum(inside) / len(inside) < 0.9:
        out.append(f"Backtest coverage: only {sum(inside)} of {len(inside)} held-out runs fell inside their 95% "
                   "prediction intervals, so the intervals here are probably too narrow for extrapolation.")
    errors = [abs(p["rel_error"]) for p in points]
    diffs = [abs(v.difference / t.loss) for v in report.versus for t in report.targets
             if t.target == v.target and t.series == v.baseline and t.loss]
    if errors and diffs and max(errors) > min(max(diffs), 1.0):
        out.append(f"Backtest error vs differences: the worst held-out error ({percent(max(errors), 1)}) exceeds the "
                   f"largest predicted relative difference between series ({percent(max(diffs), 1)}).")
    for note in bt.get("skipped", []):
        out.append(f"Backtest left out: {note}.")
    return out
