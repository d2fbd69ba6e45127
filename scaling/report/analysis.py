"""Study results -> `Report`: the fit, the backtest, the extrapolated comparison, curves and costs.

Why one function owns the order: every number in the report must come from the same fit (the
verdict, the tables, the bands on the figures), and the backtest must refit with exactly the
same law, sharing and bootstrap as the headline fit, or it would not test what is reported.

Targets: the spec's ``fit.target_sizes`` (default 1.3B, 7B, 70B non-embedding parameters), and
for compute-based comparisons the budget of each target size trained on 20 tokens per parameter
under 6 N D, C = 120 N^2 (an architecture-neutral yardstick: every series gets the same FLOPs,
and each series' own FLOPs per token decide what it can train with them).
"""

from __future__ import annotations

import dataclasses

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Sequence

import numpy as np

from scaling.errors import UserInputError
from scaling.fit.advise import DEFAULT_DEVICE_FLOPS_PER_SECOND, SeriesEdge, advise
from scaling.fit.backtest import evaluate_holdout
from scaling.fit.calibration import ModelAverage, calibrate
from scaling.fit.compare import TOKENS_PER_PARAM_RULE, Comparison, compare
from scaling.fit.data import FitData, make_fit_data
from scaling.fit.degenerate import (Finding, consolidate, diagnose_fit, diagnose_floor_bound, diagnose_frontier,
                                     diagnose_unpredictable, floor_bound_targets)
from scaling.fit.estimate import FitOptions
from scaling.fit.noise import CheckpointNoise, checkpoint_noise
from scaling.fit.laws import Law, get_law
from scaling.report.compute import TABLE_SIZES, SeriesFlops, context_costs
from scaling.report.inputs import StudyResults, select_points, training_curves
from scaling.report.positions import position_profiles
from scaling.report.recall import recall_only_report, recall_points, recall_settings
from scaling.report.schema import Band, CrossoverRow, Point, Report, TargetRow, VersusRow
from scaling.report.headline import headline
from scaling.report.story import humanize
from scaling.report.verdict import caveats_for, verdict_for
from scaling.spec import FitSettings
from scaling.study.plan import SeriesModel, series_models

#: status(stage, done, total): progress of the long stages (bootstrap refits)
Progress = Callable[[str, int, int], None]

_BAND_POINTS = 60
_LEVEL = 0.95


@dataclass(frozen=True)
class ReportOptions:
    """How to fit and compare; defaults come from the spec's ``fit:`` block."""

    law: str = "power"
    x: str = "compute"  # power law input: compute (FLOPs) or params
    shared_E: bool = True
    bootstrap: int = 200
    target_sizes: tuple[float, ...] = (1.3e9, 7e9, 70e9)
    holdout_sizes: int = 1
    seed: int = 0
    workers: int | None = None
    #: for the next-run advice: None prices runs on the study's own device at its measured throughput
    #: (`measured_device`), a number (FLOP/s of one device) overrides it
    device_flops_per_second: float | None = None
    #: tokens per parameter of the compute targets: the study's own budget (build_report sets it), so the
    #: targets and the size predictions speak of the same training recipe; 20 (Chinchilla) otherwise
    tokens_per_param: float = TOKENS_PER_PARAM_RULE

    @classmethod
    def from_settings(cls, settings: FitSettings, **overrides: object) -> "ReportOptions":
        values: dict[str, object] = dict(law=settings.law, x=settings.x, shared_E=settings.shared_E, bootstrap=settings.bootstrap,
                      target_sizes=tuple(settings.target_sizes), holdout_sizes=settings.backtest_holdout_sizes)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    @property
    def feature(self) -> str:
        return "flops" if self.x == "compute" else "params_nonembed"

    @property
    def the_law(self) -> Law:
        return get_law(self.law, self.feature)

    @property
    def target_budgets(self) -> tuple[float, ...]:
        """FLOPs of each target size at `tokens_per_param` under 6 N D."""
        return tuple(6.0 * n * self.tokens_per_param * n for n in self.target_sizes)


# ---------------------------------------------------------------------------- data for the fit
def _fit_data(points: Sequence[Point], law: Law) -> FitData:
    features = {
        "params_nonembed": np.array([p.params_nonembed for p in points]),
        "tokens": np.array([p.tokens for p in points]),
        "flops": np.array([p.flops for p in points]),
    }
    # Every input, not only the law's: the calibration measures extrapolation distance in compute
    # and the alternative forms take other inputs.
    return make_fit_data(features, np.array([p.val_loss for p in points]),
                         group=np.array([p.series for p in points], dtype=object),
                         unit=np.array([p.trial_id for p in points], dtype=object),
                         columns={"loss": "val_loss", **{k: k for k in features}})


def _fittable(points: list[Point], law: Law, shared: bool) -> tuple[list[str], list[str]]:
    """(series that can be fitted, notes on the ones that cannot): each needs 3 distinct sizes and
    at least as many runs as the law has parameters (the estimator's own rule, shared E or not)."""
    need = max(3, len(law.params))
    ok, notes = [], []
    for series in dict.fromkeys(p.series for p in points):
        own = [p for p in points if p.series == series]
        sizes = len({p.params_nonembed for p in own})
        if sizes < 3 or len(own) < need:
            notes.append(f"{series} has {sizes} finished size(s) ({len(own)} runs); a {law.name} law needs at least "
                         f"{need} runs at 3 or more sizes, so it was left out of the fit")
        else:
            ok.append(series)
    return ok, notes


def _order(series: list[str], models: dict[str, SeriesModel]) -> list[str]:
    """Series in spec order (as the user listed them), unknown ones after."""
    known = [s for s in models if s in series]
    return known + [s for s in series if s not in known]


def _missing_baseline(models: dict[str, SeriesModel], usable: list[str], dropped: list, notes: list[str]) -> tuple[str, str] | None:
    """(the Transformer series, why it cannot be the baseline) when the study has a Transformer but none of
    its runs can be fitted; None otherwise. Substituting another series would silently change what every
    difference in the report means, so the report says this instead (and compares nothing)."""
    wanted = [s for s, m in models.items() if m.arch == "transformer"]
    if not wanted or any(s in usable for s in wanted):
        return None
    series = wanted[0]
    own = [d for d in dropped if d.series == series]
    reasons = sorted({d.reason.split(":")[0] if d.reason.startswith("learned nothing") else d.reason for d in own})
    why = [f"{len(own)} of its runs were left out ({'; '.join(reasons)[:240]})"] if own else []
    why += [n for n in notes if n.startswith(f"{series} ")]
    return series, (f"the study's baseline, {series}, has no usable runs: " + ("; ".join(why) or "none was recorded"))


def _baseline(series: list[str], points: list[Point]) -> str:
    """The Transformer if the study has one, else the first series without caching, else the first."""
    arch = {p.series: p.arch for p in points}
    strategy = {p.series: p.strategy for p in points}
    for s in series:
        if arch.get(s) == "transformer":
            return s
    for s in series:
        if strategy.get(s) in ("none", "", None):
            return s
    return series[0]


# ---------------------------------------------------------------------------- backtest
def _holdout_mask(points: list[Point], k: int) -> np.ndarray:
    """Per series, the runs at its ``k`` largest sizes."""
    mask = np.zeros(len(points), dtype=bool)
    for series in {p.series for p in points}:
        sizes = sorted({p.params_nonembed for p in points if p.series == series})
        held = set(sizes[-k:]) if k > 0 else set()
        for i, p in enumerate(points):
            if p.series == series and p.params_nonembed in held:
                mask[i] = True
    return mask


def _backtest(points: list[Point], law: Law, shared: list[str], options: FitOptions, k: int,
              progress: Callable[[int, int], None] | None, noise: dict[str, CheckpointNoise] | None = None) -> dict:
    """Refit without each series' ``k`` largest sizes and predict them; an explanation instead
    when the smaller part cannot pin the law."""
    split = f"fit all but each series' {k} largest size(s), predict those"
    if k <= 0:
        return {"split": split, "error": "fit.backtest_holdout_sizes is 0, so nothing is held out", "groups": {}}
    held = _holdout_mask(points, k)
    fit_points = [p for p, h in zip(points, held) if not h]
    usable, notes = _fittable(fit_points, law, bool(shared))
    if not usable:
        need = max(3, len(law.params))
        left = ", ".join(f"{series} {sum(p.series == series for p in fit_points)}"
                         for series in dict.fromkeys(p.series for p in points))
        return {"split": split, "groups": {}, "error": f"holding out each series' {k} largest size(s) leaves every series "
                f"too few runs for a {law.name} law, which needs at least {need} runs at 3 or more sizes (runs left: "
                f"{left}). Add sizes to the ladder (or set fit.backtest_holdout_sizes lower)"}
    fit_points = [p for p in fit_points if p.series in usable]
    hold_points = [p for p, h in zip(points, held) if h and p.series in usable]
    try:
        model = calibrate(_fit_data(fit_points, law), law, shared=shared if len(usable) > 1 else [], options=options,
                          progress=progress, checkpoint_noise=noise)
    except UserInputError as exc:
        return {"split": split, "groups": {}, "error": f"the smaller part cannot be fitted: {exc.problem} ({exc.field})"}
    result = model.primary
    groups = evaluate_holdout(result, _fit_data(hold_points, law), _LEVEL, calibration=model)
    return {"split": split, "error": None, "skipped": notes, "groups": {g: b.to_dict() for g, b in groups.items()},
            "fit": {g: gf.params for g, gf in result.groups.items()}, "calibrated": True}


# ---------------------------------------------------------------------------- curves and bands
def _rule_tokens(results: StudyResults, params: np.ndarray) -> np.ndarray:
    """Tokens the study's budget rule gives a model of ``params`` (its ladder's own rule)."""
    budget = results.spec.budget
    if budget.tokens_per_param is not None:
        return budget.tokens_per_param * params
    return np.full_like(params, float(budget.tokens))


def _bands(calibration: ModelAverage, results: StudyResults, points: list[Point], models: dict[str, SeriesModel],
           options: ReportOptions, counted: dict[str, SeriesFlops] | None = None) -> list[Band]:
    """Each series' fitted curve and bands along compute and along parameters, from the smallest
    run to the largest target. An axis the law does not take is drawn along the study's own
    budget rule (N -> D -> C with the series' exact FLOPs per token), so curve and runs agree."""
    bands: list[Band] = []
    result = calibration.primary
    law_feature = result.law_obj.features
    n_max = max(options.target_sizes)
    for series in result.groups:
        own = [p for p in points if p.series == series]
        n_grid = np.geomspace(min(p.params_nonembed for p in own), n_max, _BAND_POINTS)
        d_grid = _rule_tokens(results, n_grid)
        model = models.get(series)
        flops_per_token = (counted or {}).get(series)  # the comparison's full table, when it built one
        if flops_per_token is None and model is not None:
            flops_per_token = SeriesFlops(results.spec, model, sizes=tuple(np.geomspace(n_grid[0] / 2, n_max * 2, 12)))
        if law_feature == ("flops",):
            c_grid = np.geomspace(min(p.flops for p in own), max(options.target_budgets), _BAND_POINTS)
            bands.append(_band(calibration, series, "flops", c_grid, {"flops": c_grid}))
            if flops_per_token is not None:
                c_of_n = flops_per_token(n_grid) * d_grid
                bands.append(_band(calibration, series, "params_nonembed", n_grid, {"flops": c_of_n}))
        elif law_feature == ("params_nonembed",):
            bands.append(_band(calibration, series, "params_nonembed", n_grid, {"params_nonembed": n_grid}))
            if flops_per_token is not None:
                bands.append(_band(calibration, series, "flops", flops_per_token(n_grid) * d_grid,
                                   {"params_nonembed": n_grid}))
        else:
            X = {"params_nonembed": n_grid, "tokens": d_grid}
            if flops_per_token is not None:
                X["flops"] = flops_per_token(n_grid) * d_grid
            bands.append(_band(calibration, series, "params_nonembed", n_grid, X))
            if flops_per_token is not None:
                bands.append(_band(calibration, series, "flops", X["flops"], X))
    return bands


def _band(calibration: ModelAverage, series: str, axis: str, x: np.ndarray, X: dict[str, np.ndarray]) -> Band:
    """The form-averaged curve with its calibrated bands: the expected loss's (fit_*) and a new
    run's (pred_*)."""
    prediction, fit_low, fit_high = calibration.interval(series, X, _LEVEL, new_run=False)
    _, low, high = calibration.interval(series, X, _LEVEL, new_run=True)
    if calibration.primary.n_bootstrap == 0:  # no parameter uncertainty measured: no bands (as without calibration)
        return Band(series, axis, [float(v) for v in x], prediction.tolist())
    return Band(series, axis, [float(v) for v in x], prediction.tolist(), fit_low.tolist(), fit_high.tolist(),
                low.tolist(), high.tolist())


# ---------------------------------------------------------------------------- comparison rows
def _rows(comparison: Comparison, baseline: str, rank: dict[str, int]) -> tuple[list[TargetRow], list[VersusRow],
                                                                              list[CrossoverRow]]:
    """Rows against the baseline, each target's rows in the report's series order (baseline first,
    then as in the spec), targets in the comparison's order."""
    target_rank = {name: i for i, name in enumerate(dict.fromkeys(t.target for t in comparison.targets))}
    targets = [TargetRow(t.target, t.group, t.params_nonembed, t.tokens, t.flops, t.loss.value, t.loss.low,
                         t.loss.high, t.loss.pred_low, t.loss.pred_high, dict(t.forms)) for t in comparison.targets]
    targets.sort(key=lambda t: (target_rank[t.target], rank.get(t.series, len(rank))))
    versus: list[VersusRow] = []
    for d in comparison.differences:
        if baseline not in (d.group_a, d.group_b):
            continue
        est = d.difference
        if d.group_a == baseline:  # orient as series - baseline
            versus.append(VersusRow(d.target, d.group_b, baseline, -est.value,
                                    None if est.high is None else -est.high, None if est.low is None else -est.low,
                                    None if d.p_a_better is None else 1.0 - d.p_a_better,
                                    None if d.family_high is None else -d.family_high,
                                    None if d.family_low is None else -d.family_low, d.family_level))
        else:
            versus.append(VersusRow(d.target, d.group_a, baseline, est.value, est.low, est.high, d.p_a_better,
                                    d.family_low, d.family_high, d.family_level))
    crossovers = [CrossoverRow(c.group_b if c.group_a == baseline else c.group_a, baseline, c.axis, c.at, c.low,
                               c.high, c.fraction_of_draws_crossing, c.status, list(c.search_range))
                  for c in comparison.crossovers if baseline in (c.group_a, c.group_b)]
    versus.sort(key=lambda v: (target_rank[v.target], rank.get(v.series, len(rank))))
    crossovers.sort(key=lambda c: rank.get(c.series, len(rank)))
    return targets, versus, crossovers


def _refuse(findings: list[Finding], targets: list[TargetRow], versus: list[VersusRow], crossovers: list[CrossoverRow],
            comparison: dict) -> tuple[list[TargetRow], list[VersusRow], list[CrossoverRow], dict]:
    """Withhold what the findings say the data cannot pin: with the N/D split unidentified every
    chinchilla target, crossover and allocation (each rests on the split); with an absurd
    allocation, the allocation and everything at compute-optimal settings. Refused target rows
    stay, marked ``unidentified`` with the reason, and carry no numbers."""
    split = [f for f in findings if f.refuses == "N/D split"]
    alloc = [f for f in findings if f.refuses == "allocation"]
    if not split and not alloc:
        return targets, versus, crossovers, comparison
    reason = "; ".join(consolidate(split or alloc))

    def refused(name: str) -> bool:
        return bool(split) or "compute-optimal" in name

    out_targets = []
    for t in targets:
        if refused(t.target):
            t = TargetRow(t.target, t.series, None, None, None, math.nan, None, None, None, None, {}, reason)
        out_targets.append(t)
    comparison = dict(comparison)
    comparison["frontier"] = []
    comparison["refused"] = reason
    # the raw comparison in report.json carries no refused number either (D = 1e54 tokens is not a result)
    comparison["targets"] = [t for t in comparison.get("targets", []) if not refused(t["target"])]
    comparison["differences"] = [d for d in comparison.get("differences", []) if not refused(d["target"])]
    comparison["crossovers"] = [c for c in comparison.get("crossovers", []) if not refused(c["axis"])]
    return (out_targets, [v for v in versus if not refused(v.target)],
            [c for c in crossovers if not refused(c.axis)], comparison)


def _components_at(calibration: ModelAverage, targets: list[TargetRow]) -> dict[str, dict]:
    """Per series at the largest identified target: each variance component's standard deviation
    as a share of the loss (log-loss units), and the target it was taken at."""
    rows = [t for t in targets if not t.unidentified and t.flops is not None or
            (not t.unidentified and t.params_nonembed is not None)]
    if not rows:
        return {}
    key = (lambda t: t.flops or 0.0) if any(t.flops for t in rows) else (lambda t: t.params_nonembed or 0.0)
    largest = max(rows, key=key).target
    out: dict[str, dict] = {}
    for t in rows:
        if t.target != largest:
            continue
        X = {k: np.array([v]) for k, v in (("params_nonembed", t.params_nonembed), ("tokens", t.tokens),
                                           ("flops", t.flops)) if v is not None}
        _, comps = calibration.components(t.series, X)
        out[t.series] = {"target": largest, **{k: float(np.sqrt(v[0])) for k, v in comps.items()}}
        if calibration.groups[t.series].seed_source is None:
            out[t.series]["seed noise"] = None  # not measured (it is inside lack of fit), not zero
    return out


def measured_device(results: StudyResults) -> dict[str, Any] | None:
    """The study's own device and throughput, to price next runs where they would run: the median
    `flops_per_second` of its finished trials per unit of what a trial holds (a CPU core for CPU
    studies, a GPU otherwise; the spec's top-level `resources`), the device, and the unit's name.
    None when the trials recorded no throughput."""
    trials = results.trials
    if trials is None or len(trials) == 0 or "flops_per_second" not in trials:
        return None
    done = trials[(trials.get("status") == "completed") & (trials["flops_per_second"] > 0)] if "status" in trials \
        else trials[trials["flops_per_second"] > 0]
    if len(done) == 0:
        return None
    rate = float(done["flops_per_second"].median())
    device = str(done["device"].mode().iloc[0]) if "device" in done and done["device"].notna().any() else "unknown"
    res = results.spec.resources
    if device.startswith("cpu") or not res.gpus_per_trial:
        per, unit = float(res.cpus_per_trial), "CPU core-hours"
    else:
        per, unit = float(max(res.gpus_per_trial, 1.0) if res.gpus_per_trial >= 1 else res.gpus_per_trial), "GPU-hours"
    return {"flops_per_second": rate / per, "device": device, "unit": unit,
            "source": f"measured: the median of the study's finished trials on {device}, "
                      f"{rate:.3g} FLOP/s per trial over {per:g} {unit.split('-')[0]}{'s' if per != 1 else ''}"}


def _advice(calibration: ModelAverage, results: StudyResults, points: list[Point], models: dict[str, SeriesModel],
            targets: list[TargetRow], baseline: str, options: ReportOptions, withheld: str = "") -> dict:
    """Ranked next runs for the headline difference: the best series against the baseline at the
    largest identified target whose differences are a result (`scaling.fit.advise`)."""
    rows = [t for t in targets if not t.unidentified]
    if not rows and withheld:
        return {"candidates": [], "why": f"there is no headline difference to narrow: {withheld}"}
    if not rows or len(calibration.groups) < 2:
        return {"candidates": [], "why": "no identified target with two series to compare"}
    key = (lambda t: t.flops or 0.0) if any(t.flops for t in rows) else (lambda t: t.params_nonembed or 0.0)
    largest = max(rows, key=key).target
    at = {t.series: t for t in rows if t.target == largest}
    others = [t for s, t in at.items() if s != baseline]
    if baseline not in at or not others:
        return {"candidates": [], "why": "the baseline has no prediction at the largest target"}
    best = min(others, key=lambda t: t.loss).series
    X = {s: {k: np.array([v]) for k, v in (("params_nonembed", at[s].params_nonembed), ("tokens", at[s].tokens),
                                           ("flops", at[s].flops)) if v is not None} for s in (best, baseline)}
    edges, fpt = {}, {}
    rule = results.spec.budget.tokens_per_param
    for s in (best, baseline):
        own = [p for p in points if p.series == s]
        top = max(own, key=lambda p: p.flops)
        edges[s] = SeriesEdge(top.params_nonembed, top.tokens, top.flops, len(own), rule, top.strategy not in ("none", ""))
        fpt[s] = (SeriesFlops(results.spec, models[s]) if s in models
                  else (lambda n, r=top.flops / top.tokens / top.params_nonembed: r * np.asarray(n, float)))
    device = measured_device(results) if options.device_flops_per_second is None else None
    rate = (device["flops_per_second"] if device else options.device_flops_per_second
            or DEFAULT_DEVICE_FLOPS_PER_SECOND)
    unit = device["unit"] if device else "device-hours"
    source = (device["source"] if device else "given (--device-tflops)" if options.device_flops_per_second
              else "assumed: no trial recorded its throughput")
    candidates = advise(calibration, best, baseline, X, edges, fpt, rate)
    return {"target": largest, "series": best, "baseline": baseline,
            "device_flops_per_second": rate, "device_unit": unit, "device_source": source,
            "candidates": [c.to_dict() for c in candidates]}


def _recall_chance(results: StudyResults) -> dict[str, float]:
    """Accuracy of guessing, for the recall plots' chance lines: MQAR answers one of value_vocab."""
    evals = results.spec.data.evals
    mqar = getattr(evals, "mqar", None)
    vocab = getattr(mqar, "value_vocab", None) if mqar is not None else None
    return {"mqar": 1.0 / vocab} if vocab else {}


def _checkpoint_noise(results: StudyResults, points: list[Point]) -> dict[str, CheckpointNoise]:
    """Per series, the scatter of its runs' late validation losses around a smooth curve
    (`scaling.fit.noise`): the seed noise of a study that runs one seed per configuration."""
    curves = results.curves
    if curves is None or curves.empty:
        return {}
    val = curves[curves["metric"] == "val_loss"]
    series_of = {p.trial_id: p.series for p in points}
    runs = {str(t): (f["step"].to_numpy(float), f["value"].to_numpy(float))
            for t, f in val.groupby("trial_id", sort=True) if t in series_of}
    return checkpoint_noise(runs, series_of)


def _seed_source(calibration: ModelAverage) -> str | None:
    """How seed noise was measured: "replicates", "checkpoints", both (per series), or None."""
    sources = sorted({g.seed_source for g in calibration.groups.values() if g.seed_source})
    return " and ".join(sources) if sources else None


def _seed_noise(calibration: ModelAverage) -> float | None:
    """Pooled seed-to-seed standard deviation of log loss, where the study repeats seeds or its
    runs' late checkpoints measure it."""
    pooled = [(g.seed_var, g.seed_dof) for g in calibration.groups.values() if g.seed_dof]
    if not pooled:
        return None
    return float(np.sqrt(sum(v * d for v, d in pooled) / sum(d for _, d in pooled)))


def _n_targets(law: Law, options: ReportOptions) -> int:
    """Targets `compare` evaluates: sizes twice (optimal and 20 tokens/param) plus budgets for
    chinchilla; one axis's targets for a power law."""
    if law.name == "chinchilla":
        return 2 * len(options.target_sizes) + len(options.target_budgets)
    return len(options.target_sizes)


# ---------------------------------------------------------------------------- the report
def build_report(results: StudyResults, options: ReportOptions, progress: Progress | None = None) -> Report:
    """Fit, backtest and compare a study's results; everything the pages show, as one `Report`."""
    if results.spec.ladder is None:
        return recall_only_report(results)  # nothing to fit: the recall section alone
    study_tpp = getattr(results.spec.budget, "tokens_per_param", None)
    if study_tpp:  # compute targets in the study's own terms (the header states them once)
        options = dataclasses.replace(options, tokens_per_param=float(study_tpp))
    law = options.the_law
    points, dropped = select_points(results)
    models = series_models(results.spec)
    shared_wanted = options.shared_E
    usable, excluded_notes = _fittable(points, law, shared_wanted)
    if not usable:
        raise UserInputError("ladder.sizes", "no series has enough finished runs to fit a scaling law: "
                             + "; ".join(excluded_notes),
                             "give the ladder at least 3 sizes (5 or more for a useful extrapolation) and let them "
                             "finish (`mcscale resume NAME`)")
    usable = _order(usable, models)
    missing = _missing_baseline(models, usable, dropped, excluded_notes)
    baseline = missing[0] if missing else _baseline(usable, [p for p in points if p.series in usable])
    usable = ([] if missing else [baseline]) + [s for s in usable if s != baseline]  # the report's one series order
    rank = {s: i for i, s in enumerate(usable)}
    points = sorted(points, key=lambda p: rank.get(p.series, len(rank)))  # stable: sizes stay in order
    fit_points = [p for p in points if p.series in usable]
    shared = ["E"] if shared_wanted and len(usable) > 1 else []
    fit_options = FitOptions(bootstrap=options.bootstrap, seed=options.seed, n_workers=options.workers)

    def stage(name: str) -> Callable[[int, int], None] | None:
        return (lambda done, total: progress(name, done, total)) if progress else None

    noise = _checkpoint_noise(results, fit_points)
    calibration = calibrate(_fit_data(fit_points, law), law, shared=shared, options=fit_options, progress=stage("fit"),
                            checkpoint_noise=noise)
    result = calibration.primary
    backtest = _backtest(fit_points, law, shared, fit_options, options.holdout_sizes, stage("backtest"), noise)

    flops_fns = None
    if law.name == "chinchilla":
        flops_fns = {s: SeriesFlops(results.spec, models[s], sizes=TABLE_SIZES) for s in usable if s in models}
        missing = [s for s in usable if s not in models]
        if missing:
            raise UserInputError("architectures", f"series {missing} have results but are not in the study's spec, so "
                                 "their FLOPs per token at other sizes are unknown",
                                 "restore the spec's architectures, or fit with --law power")
    data_n = (min(p.params_nonembed for p in fit_points), max(p.params_nonembed for p in fit_points))
    data_c = (min(p.flops for p in fit_points), max(p.flops for p in fit_points))
    comparison = compare(
        result, sizes=options.target_sizes, budgets=options.target_budgets, flops_per_token=flops_fns,
        size_range=(data_n[0], 10 * max(options.target_sizes)), compute_range=(data_c[0], 10 * max(options.target_budgets)),
        # without a bootstrap there is no parameter uncertainty to calibrate: no intervals at all
        level=_LEVEL, seed=options.seed, calibration=calibration if options.bootstrap > 0 else None,
        # "resolved" is judged over every series-vs-baseline difference at every target together
        n_comparisons=max(1, len(usable) - 1) * _n_targets(law, options),
    )
    targets, versus, crossovers = _rows(comparison, baseline, rank)
    findings = sorted(diagnose_fit(result, _fit_data(fit_points, law)), key=lambda f: rank.get(f.scope, -1))
    comparison_dict = comparison.to_dict()
    if law.name == "chinchilla":
        findings += diagnose_frontier(comparison_dict["frontier"])
        findings.sort(key=lambda f: rank.get(f.scope, -1))  # stable: kinds stay in order, series as the report
    targets, versus, crossovers, comparison_dict = _refuse(findings, targets, versus, crossovers, comparison_dict)
    floor = float(result.groups[usable[0]].params["E"]) if "E" in shared else None  # shared: any series
    losses = {name: {t.series: t.loss for t in targets if t.target == name and not t.unidentified}
              for name in dict.fromkeys(t.target for t in targets)}
    floor_bound = [name for name, _ in floor_bound_targets(losses, floor)]
    findings += diagnose_floor_bound(losses, floor)
    versus = [v for v in versus if v.target not in floor_bound]  # zero by construction: not a result
    unpredictable, found = diagnose_unpredictable({name: {t.series: (t.pred_low, t.pred_high) for t in targets
                                                          if t.target == name and not t.unidentified}
                                                   for name in dict.fromkeys(t.target for t in targets)}, "E" in shared)
    if found:
        findings += found
        reason = consolidate(found)[0]
        # the point value is no result, but the calibrated width is: it stays, so the report can show how far from
        # a prediction each far target is
        targets = [TargetRow(t.target, t.series, t.params_nonembed, t.tokens, t.flops, math.nan, t.low, t.high,
                             t.pred_low, t.pred_high, {}, reason) if t.target in unpredictable else t for t in targets]
        versus = [v for v in versus if v.target not in unpredictable]
        comparison_dict["differences"] = [d for d in comparison_dict.get("differences", [])
                                          if d["target"] not in unpredictable]
        comparison_dict["targets"] = [t for t in comparison_dict.get("targets", []) if t["target"] not in unpredictable]
    comparison_dict["differences"] = [d for d in comparison_dict.get("differences", []) if d["target"] not in floor_bound]
    bands = _bands(calibration, results, fit_points, models, options, flops_fns)
    # the smallest target beyond the data (an in-range target, e.g. the largest trained size, is no cost reference)
    cost_size = min([t for t in options.target_sizes if t > data_n[1]] or options.target_sizes)
    costs = context_costs(results.spec, {s: models[s] for s in usable if s in models}, cost_size)

    settings = {
        "law": law.name, "formula": law.formula, "x": options.feature if law.name == "power" else None,
        "shared": shared, "bootstrap": options.bootstrap, "seed": options.seed, "level": _LEVEL,
        "target_sizes": list(options.target_sizes), "target_budgets": list(options.target_budgets),
        "target_budget_rule": (f"C = 6 N D at {options.tokens_per_param:g} tokens/param"
                               + (", the study's own budget" if study_tpp else "")
                               + f" (= {6 * options.tokens_per_param:g} N^2)"),
        "target_tokens_per_param": options.tokens_per_param,
        "backtest_holdout_sizes": options.holdout_sizes, "seq_len": results.spec.data.seq_len,
        "flops_source": "exact per-architecture training FLOPs per token (scaling.models.flops), as recorded "
                        "by each trial",
        "study_budget": results.spec.budget.model_dump(), "cost_reference_params": cost_size,
        "data_params_range": list(data_n), "data_flops_range": list(data_c),
        "excluded_series": excluded_notes, "storage": results.root,
        "baseline_missing": missing[1] if missing else None,
        "unidentified": [f.to_dict() for f in findings],
        "floor_bound_targets": floor_bound,
        "variance_components": _components_at(calibration, targets),
        "advice": _advice(calibration, results, fit_points, models, [t for t in targets if t.target not in floor_bound],
                          baseline, options, "; ".join(consolidate(f for f in findings if f.refuses in ("difference", "unpredictable")))),
        "seed_noise_log": _seed_noise(calibration),
        "seed_noise_source": _seed_source(calibration),
        "checkpoint_noise": {s: n.to_dict() for s, n in noise.items()},
        "recall_chance": _recall_chance(results),
        "recall_phase": recall_settings(results),
        "calibration": comparison_dict.get("settings", {}).get("calibration"),
        "family_level": comparison_dict.get("settings", {}).get("family_level"),
    }
    fit_dict = result.to_dict()
    for f in findings:  # report.json marks, beside each fitted value, the ones that are not results
        if f.scope in fit_dict.get("groups", {}) and f.params:
            listed = fit_dict["groups"][f.scope].setdefault("unidentified", [])
            listed.extend(p for p in f.params if p not in listed)
    report = Report(
        study=results.name, generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        settings=settings, verdict="", caveats=[], baseline=baseline, series=usable, points=points, dropped=dropped,
        fit=fit_dict, backtest=backtest, comparison=comparison_dict, targets=targets, versus=versus,
        crossovers=crossovers, bands=bands, training_curves=training_curves(results, fit_points), costs=costs,
        recall=recall_points(results), positions=position_profiles(results, points),
    )
    report.verdict = verdict_for(report)
    report.caveats = caveats_for(report)
    report.headline = headline(report).sentences
    # raw target names (params_nonembed=4.8e4) are for tables and JSON; prose says 48K parameters
    report.verdict = humanize(report, report.verdict)
    report.caveats = [humanize(report, c) for c in report.caveats]
    report.headline = [humanize(report, h) for h in report.headline]
    return report
