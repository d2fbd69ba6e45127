"""Backtest-calibrated prediction intervals, averaged over functional forms.

Why: the bootstrap spread of a fitted law measures how well the *data* pin its parameters, not
how well the *form* extrapolates. On the public suite (`scaling.fit.suite`) the plain bootstrap
prediction interval covered 82% of held-out points at 95% (65% on Epoch's Chinchilla points)
and its curve band 13-22% on three of five families. The errors that matter beyond the data are
lack of fit growing with distance and the choice of form; both can be *measured* inside a fit
set, by doing to the fit set what the user does to the study: leave its top rungs out and
predict them.

The method, per fit:

1. **Forms.** Fit every candidate form with a loss floor (for N, D data: Chinchilla's, Gadre et
   al.'s tied-exponent form and a broken-in-N form; for one input: the power law and a broken
   power law), each with its run-level bootstrap.
2. **Nested backtests.** For j = 1..3, refit each form without each group's top j compute rungs
   (quarter-decade bins of C) and predict them; each held-out point gives a log error
   ``r = log(actual / predicted)`` at a distance ``d = log10(C / C_max of the nested fit)``.
3. **Weights.** Each form is weighted by the inverse mean squared nested error, raised to the
   power `CalibrationConstants.form_temper` (forms the data cannot fit with a rung held out get
   no weight); the prediction is the weighted mean of the forms' log predictions, and the
   weighted spread of the forms' predictions (the form uncertainty) enters the variance.
4. **Variance components**, in log-loss units: seed noise (between replicate runs of one
   configuration where the study has them, else the scatter of each run's late evaluations
   around a smooth curve, `scaling.fit.noise`), lack of fit (the in-sample residual variance beyond
   seed noise), parameter uncertainty (the bootstrap variance of the curve at the target), form
   spread, and extrapolation drift ``k d s`` (``d`` decades beyond the largest run, ``s`` the
   reducible share ``1 - E / L``) with the drift scale ``k`` a random effect
   (`scaling.fit.drift`): the study's own nested errors (each nested split one shared shift)
   give a likelihood over ``k`` that is weighed against the distribution of drift scales on the
   public suite; a study with no nested backtest takes that whole distribution.
5. **Intervals**: the weighted-mean prediction times ``exp(+-h)``, ``h`` the level's own quantile
   of the scale mixture of normals over the posterior of ``k``, times the level's factor chosen on
   the suite (`CalibrationConstants.level_scale`). Inside the data ``d = 0`` and the interval is
   the usual one; it widens with the distance beyond the largest run, and with how little the
   study knows about its own drift.

Every constant (the suite's drift distribution, the tempering of the study's own evidence, the
per-level factors, the form weights' tempering) is chosen by leave-one-family-out
cross-validation on the public suite (`scaling.fit.lofo`, `benchmarks/calibration.py`).

Differences between series are drawn jointly: the same form and, for a joint fit, the same
bootstrap resample for both series (so a shared E cancels), and drift terms with the
correlation of the series' nested errors (`ModelAverage.difference_draws`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from scaling.errors import UserInputError
from scaling.fit import drift
from scaling.fit.data import FitData, validate_for_law
from scaling.fit.drift import CalibrationConstants, Shift
from scaling.fit.estimate import FitOptions, Progress, fit
from scaling.fit.laws import SINGLE_INPUT_LAWS, Law, get_law
from scaling.fit.noise import SEED_TO_CHECKPOINT_SD_RATIO, CheckpointNoise
from scaling.fit.result import FitResult, to_jsonable

#: Candidate forms per requested law: the law itself first, then the alternatives averaged in.
FORMS: dict[str, tuple[str, ...]] = {
    "chinchilla": ("chinchilla", "gadre", "broken"),
    "power": ("power", "broken_power"),
}
NESTED_SPLITS = 3
_RUNG_BINS_PER_DECADE = 4
_MIN_RUNGS_LEFT = 3


def scale_feature(law: Law) -> str:
    """The axis distances are measured on: a single-input law's own input, else compute."""
    return law.features[0] if law.name in SINGLE_INPUT_LAWS else "flops"


def scale_of(data: FitData, feature: str = "flops") -> np.ndarray:
    """Scale per point on the distance axis (``flops`` falls back to 6 N D)."""
    return _scale_from(data.features, feature)


def rungs_of(scale: np.ndarray) -> np.ndarray:
    """Rung index of each point: quarter-decade bins of compute (exact budgets fall in one bin)."""
    return np.floor(np.log10(scale) * _RUNG_BINS_PER_DECADE + 1e-9).astype(int)


def nested_masks(data: FitData, j: int, feature: str = "flops") -> tuple[np.ndarray, np.ndarray] | None:
    """(fit, held-out) masks leaving each group's top ``j`` rungs out; None when a group would keep
    fewer than 3 rungs."""
    rung = rungs_of(scale_of(data, feature))
    held = np.zeros(data.n_points, dtype=bool)
    for g in data.groups:
        rows = data.group == g
        levels = np.unique(rung[rows])
        if levels.size - j < _MIN_RUNGS_LEFT:
            return None
        held |= rows & (rung >= levels[-j])
    return ~held, held


def replicate_variance(data: FitData) -> tuple[float, int]:
    """Seed noise: pooled variance of log loss between runs with identical inputs and group
    (different run ids), and its degrees of freedom (0 when the study has no replicates)."""
    keys: dict[tuple, list[float]] = {}
    names = sorted(data.features)
    for i in range(data.n_points):
        key = (str(data.group[i]),) + tuple(float(np.round(np.log(data.features[k][i]), 9)) for k in names)
        keys.setdefault(key, []).append(math.log(float(data.loss[i])))
    ss, dof = 0.0, 0
    for values in keys.values():
        if len(values) > 1:
            v = np.asarray(values)
            ss += float(((v - v.mean()) ** 2).sum())
            dof += len(v) - 1
    return (ss / dof if dof else 0.0), dof


@dataclass
class NestedError:
    group: str
    split: int
    distance_decades: float
    log_error: float
    actual: float = math.nan
    #: the point's row in the fitted data (one nested split holds each row at most once)
    row: int = -1


@dataclass
class FormFit:
    """One form's full-data fit, its nested backtest errors and its weight."""

    name: str
    result: FitResult | None
    nested: list[NestedError] = field(default_factory=list)
    weight: float = 0.0
    nested_rmse: float | None = None
    excluded: str | None = None  # why the form has no weight


@dataclass
class GroupCalibration:
    """Per group: the variance components (log-loss units) and the drift scale's posterior."""

    seed_var: float
    seed_dof: int
    lack_of_fit_var: float
    #: sqrt(E[k^2]) under the posterior: the drift per decade a variance table shows
    drift_per_decade: float
    #: the study's own estimate from its nested backtests (root mean excess per squared decade),
    #: None without any
    drift_measured: float | None
    n_nested: int
    log10_scale_max: float
    nested_correlation: float = 0.0
    n_splits: int = 0
    #: where seed noise was measured: "replicates" (repeated seeds), "checkpoints" (the scatter of
    #: late evaluations around a smooth curve, `scaling.fit.noise`, scaled by ``seed_proxy_ratio``),
    #: or None (not measured: it is then inside lack of fit)
    seed_source: str | None = None
    #: with "checkpoints": the seed-to-checkpoint sd ratio the scatter was scaled by (so a report
    #: read back later states the factor that was applied, not today's constant)
    seed_proxy_ratio: float | None = None
    #: "suite" (no nested backtest: the whole spread of the public suite's drift distribution) or
    #: "own nested backtests, shrunk toward the suite"
    drift_source: str = "suite"
    #: posterior probability of each drift scale in `scaling.fit.drift.K_GRID`
    drift_weights: list[float] = field(default_factory=list, repr=False)
    #: the nested shifts the posterior used: per split, (log errors, loadings d * s)
    nested_shifts: list[tuple[list[float], list[float]]] = field(default_factory=list, repr=False)
    #: the in-sample variance (weighted mean squared residual) nested errors are measured against
    in_sample_var: float = 0.0

    @property
    def weights(self) -> np.ndarray:
        return np.asarray(self.drift_weights, float)

    def summary(self) -> dict:
        """JSON-able fields (the posterior as a few quantiles, not 161 weights)."""
        out = {k: v for k, v in vars(self).items() if k not in ("drift_weights", "nested_shifts")}
        if self.drift_weights:
            cdf = np.cumsum(self.weights)
            out["drift_quantiles"] = {f"{q:g}": float(drift.K_GRID[min(int(np.searchsorted(cdf, q)), cdf.size - 1)])
                                      for q in (0.05, 0.5, 0.95)}
        return out


@dataclass
class ModelAverage:
    """Every form's fit, weights, and per-group calibration: what calibrated intervals need."""

    law: str
    law_input: str | None
    forms: dict[str, FormFit]
    groups: dict[str, GroupCalibration]
    scale_feature: str = "flops"
    notes: list[str] = field(default_factory=list)
    constants: CalibrationConstants = field(default_factory=drift.load_constants)
    #: the fitted data (kept so the calibration can be redone with other constants, `recalibrate`)
    data: FitData | None = field(default=None, repr=False)
    checkpoint_noise: Mapping[str, CheckpointNoise] = field(default_factory=dict, repr=False)

    # ----------------------------------------------------------------------- structure
    @property
    def weighted_forms(self) -> list[FormFit]:
        return [f for f in self.forms.values() if f.weight > 0 and f.result is not None]

    @property
    def primary(self) -> FitResult:
        """The requested law's fit (its parameters are the ones tabulated)."""
        first = self.forms[self.law]
        assert first.result is not None
        return first.result

    def distance(self, group: str, X: Mapping[str, ArrayLike]) -> np.ndarray:
        """Decades of compute beyond the group's largest fitted run (0 inside the data)."""
        scale = _scale_from(X, self.scale_feature)
        return np.maximum(np.log10(scale) - self.groups[group].log10_scale_max, 0.0)

    # ----------------------------------------------------------------------- prediction
    def components(self, group: str, X: Mapping[str, ArrayLike]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Weighted-mean log prediction and each variance component at ``X`` (log-loss units)."""
        forms = self.weighted_forms
        w = np.array([f.weight for f in forms])
        w = w / w.sum()
        mus, pvars = [], []
        for f in forms:
            res = f.result
            assert res is not None
            mus.append(np.log(np.atleast_1d(res.predict(group, X))))
            if res.n_bootstrap:
                with np.errstate(all="ignore"):
                    draws = np.log(np.atleast_2d(res.predict_draws(group, X)))
                pvars.append(np.nanvar(draws, axis=0))
            else:
                pvars.append(np.zeros_like(mus[-1]))
        mus_a, pvars_a = np.stack(mus), np.stack(pvars)
        mu = (w[:, None] * mus_a).sum(axis=0)
        gc = self.groups[group]
        comps = {
            "seed noise": np.full_like(mu, gc.seed_var),
            "lack of fit": np.full_like(mu, gc.lack_of_fit_var),
            "parameters": (w[:, None] * pvars_a).sum(axis=0),
            "form": (w[:, None] * (mus_a - mu) ** 2).sum(axis=0),
            "extrapolation": self._drift_scale(group, X, mu) ** 2,
        }
        return mu, comps

    def _loading(self, group: str, X: Mapping[str, ArrayLike], mu: np.ndarray) -> np.ndarray:
        """The drift loading ``d s``: drift ``k`` per decade acts on the reducible part ``L - E``,
        i.e. ``k d (1 - E / L)`` in log loss, so far beyond the data it fades with the reducible loss."""
        return self.distance(group, X) * _reducible_share(self.floor(group), np.exp(mu))

    def _drift_scale(self, group: str, X: Mapping[str, ArrayLike], mu: np.ndarray) -> np.ndarray:
        """Root mean square drift in log loss beyond the data: sqrt E[k^2] under the posterior times
        ``d s``, with the rung shift ``tau`` in quadrature (0 inside the data)."""
        a = self._loading(group, X, mu)
        tau = self.constants.prior.shift_sd
        return np.sqrt((self.groups[group].drift_per_decade * a) ** 2 + tau ** 2 * (a > 0))

    def floor(self, group: str) -> float:
        """The requested law's fitted loss floor E for ``group``."""
        return float(self.primary.groups[group].params.get("E", 0.0))

    def interval(self, group: str, X: Mapping[str, ArrayLike], level: float = 0.95,
                 new_run: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prediction, low, high) of the loss at ``X``: a new run's (``new_run``, with seed
        noise) or the expected loss's (without it). The half-width is the level's own quantile of
        the drift mixture (`scaling.fit.drift.mixture_halfwidth`) times its suite-fitted factor."""
        mu, comps = self.components(group, X)
        v0 = sum(v for k, v in comps.items() if k != "extrapolation" and (new_run or k != "seed noise"))
        gc = self.groups[group]
        half = drift.mixture_halfwidth(gc.weights, v0, self._loading(group, X, mu), level,
                                       self.constants.prior.shift_sd) * self.constants.scale(level)
        return np.exp(mu), np.exp(mu - half), np.exp(mu + half)

    def loss_draws(self, groups: Sequence[str], X: Mapping[str, Mapping[str, ArrayLike]], n_draws: int = 2000,
                   seed: int = 0, new_run: bool = False) -> dict[str, np.ndarray]:
        """Joint draws ``(n_draws, n)`` of each group's loss at its own inputs ``X[group]``.

        One form per draw (chosen by weight) and one bootstrap resample index per draw for all
        groups (a joint fit's resamples are shared, so a shared E cancels in differences); the
        drift terms are each group's posterior drift scale times normals with the nested errors'
        correlation between groups; the non-drift residual variance is drawn independently per group.
        """
        rng = np.random.default_rng(seed)
        forms = self.weighted_forms
        w = np.array([f.weight for f in forms])
        choice = rng.choice(len(forms), size=n_draws, p=w / w.sum())
        G = len(groups)
        rho = np.array([[1.0 if a == b else self._rho(a, b) for b in groups] for a in groups])
        chol = np.linalg.cholesky(rho + 1e-9 * np.eye(G))
        z = rng.standard_normal((n_draws, G)) @ chol.T
        # drift: each group's scale k from its posterior (one uniform for all groups, so the series
        # of one study drift alike in size), times the correlated normals
        u = rng.random(n_draws)
        ks = np.stack([drift.K_GRID[np.minimum(np.searchsorted(np.cumsum(self.groups[g].weights), u), drift.K_GRID.size - 1)]
                       for g in groups], axis=1)
        eta = z * ks
        tau = self.constants.prior.shift_sd
        # Per form: every group's log predictions per bootstrap resample, and the resamples whose
        # predictions are finite for all of them (a resample whose refit failed, or whose curve
        # overflows at the target, would make every quantile of a difference NaN). One index per
        # draw into those, shared by the groups: the draws stay joint.
        boot_logs: dict[int, dict[str, np.ndarray]] = {}
        picks: dict[int, np.ndarray] = {}
        for fi, f in enumerate(forms):
            res = f.result
            assert res is not None
            if not res.n_bootstrap:
                continue
            with np.errstate(all="ignore"):
                boot_logs[fi] = {g: np.log(np.atleast_2d(res.predict_draws(g, X[g]))) for g in groups}
            valid = np.flatnonzero(np.all([np.isfinite(v).all(axis=1) for v in boot_logs[fi].values()], axis=0))
            if valid.size:
                picks[fi] = valid[np.random.default_rng(seed + 17).integers(0, valid.size, size=n_draws)]
        out: dict[str, np.ndarray] = {}
        for gi, g in enumerate(groups):
            Xg = X[g]
            n = np.atleast_1d(_scale_from(Xg, self.scale_feature)).size
            logs = np.empty((n_draws, n))
            for fi, f in enumerate(forms):
                rows = np.flatnonzero(choice == fi)
                if rows.size == 0:
                    continue
                res = f.result
                assert res is not None
                if fi in picks:
                    logs[rows] = boot_logs[fi][g][picks[fi][rows]]
                else:
                    logs[rows] = np.log(np.atleast_1d(res.predict(g, Xg)))[None, :]
            gc = self.groups[g]
            resid = gc.lack_of_fit_var + (gc.seed_var if new_run else 0.0)
            mu_g, _ = self.components(g, Xg)
            a_g = self._loading(g, Xg, mu_g)[None, :]
            logs += eta[:, gi:gi + 1] * a_g + tau * z[:, gi:gi + 1] * (a_g > 0)
            logs += np.sqrt(resid) * rng.standard_normal((n_draws, 1))
            out[g] = np.exp(logs)
        return out

    def _rho(self, a: str, b: str) -> float:
        return min(self.groups[a].nested_correlation, self.groups[b].nested_correlation)

    def summary(self) -> dict:
        """JSON-able description: weights, nested errors, variance components per group."""
        return to_jsonable({
            "law": self.law,
            "method": "nested leave-top-rung-out backtests; inverse-MSE form weights; per-level quantiles of a "
                      "normal scale mixture: seed noise + lack of fit + parameter + form + drift (k d s)^2 with k "
                      "a random effect (the study's nested backtests shrunk toward the public suite's drift "
                      "distribution, scaling.fit.drift)",
            "forms": {
                name: {"weight": f.weight, "nested_rmse": f.nested_rmse, "n_nested": len(f.nested),
                       "excluded": f.excluded, "formula": f.result.formula if f.result else None,
                       "params": {g: gf.params for g, gf in f.result.groups.items()} if f.result else None}
                for name, f in self.forms.items()
            },
            "groups": {g: c.summary() for g, c in self.groups.items()},
            "constants": self.constants.to_dict(),
            "notes": self.notes,
        })


def _reducible_share(floor: float, loss: np.ndarray) -> np.ndarray:
    """``1 - E / L``, the share of the loss a law can still reduce (clipped to [0, 1])."""
    return np.clip(1.0 - floor / np.asarray(loss, float), 0.0, 1.0)


def forms_for(law: str) -> tuple[str, ...]:
    """The candidate forms for a requested law (the law itself first)."""
    base = "power" if law in SINGLE_INPUT_LAWS else "chinchilla"
    return FORMS[base]


def _scale_from(X: Mapping[str, ArrayLike], feature: str) -> np.ndarray:
    if feature in X and X[feature] is not None:
        return np.atleast_1d(np.asarray(X[feature], float))
    if feature == "flops" and "params_nonembed" in X and "tokens" in X:
        return 6.0 * np.atleast_1d(np.asarray(X["params_nonembed"], float)) * np.asarray(X["tokens"], float)
    raise ValueError(f"calibrated intervals need {feature!r} (the axis extrapolation distance is measured on)")


def _with_starts(options: FitOptions, law: Law, full: FitResult) -> FitOptions:
    """Nested refits start from a coarse grid (3 values per parameter) plus every group's
    full-data optimum: a nested optimum lies near the full one, so Hoffmann's 4,500 starts per
    refit would buy nothing but time."""
    grids = [np.quantile(np.asarray(p.grid, float), [0.0, 0.5, 1.0]) for p in law.params]
    coarse = np.array(np.meshgrid(*grids, indexing="ij")).reshape(len(grids), -1).T
    optima = np.array([[p.to_fit(gf.params[p.name]) for p in law.params] for gf in full.groups.values()])
    optima = optima[np.all(np.isfinite(optima), axis=1)]
    starts = np.unique(np.vstack([coarse, optima]), axis=0)
    # 300 iterations: starts near an optimum converge in tens; the rest are far-off grid corners
    # whose slow crawl (at ~3 ms per batched iteration) would otherwise dominate the calibration.
    return FitOptions(delta=options.delta, bootstrap=0, seed=options.seed, n_workers=1,
                      max_iter=min(options.max_iter, 300), gtol=options.gtol, ftol=options.ftol, starts=starts)


def _nested_errors(data: FitData, law: Law, shared: Sequence[str], options: FitOptions) -> list[NestedError] | None:
    """Leave-top-rung-out errors of ``law`` inside ``data``; None if no split can be fitted."""
    errors: list[NestedError] = []
    feature = scale_feature(law)
    scale = scale_of(data, feature)
    for j in range(1, NESTED_SPLITS + 1):
        masks = nested_masks(data, j, feature)
        if masks is None:
            break
        fit_mask, held = masks
        part = data.subset(fit_mask)
        try:
            validate_for_law(part, law)
            res = fit(part, law, shared=shared, options=options)
        except UserInputError:
            break
        for g in data.groups:
            rows = np.flatnonzero(held & (data.group == g))
            if rows.size == 0:
                continue
            X = {k: data.features[k][rows] for k in law.features}
            pred = np.atleast_1d(res.predict(g, X))
            cmax = scale[fit_mask & (data.group == g)].max()
            for i, p in zip(rows, pred):
                errors.append(NestedError(g, j, float(np.log10(scale[i] / cmax)), float(np.log(data.loss[i] / p)),
                                          float(data.loss[i]), int(i)))
    return errors or None


def calibrate(
    data: FitData,
    law: Law,
    *,
    shared: Sequence[str] = (),
    options: FitOptions | None = None,
    forms: Sequence[str] | None = None,
    progress: Progress | None = None,
    checkpoint_noise: Mapping[str, CheckpointNoise] | None = None,
    constants: CalibrationConstants | None = None,
) -> ModelAverage:
    """Fit every candidate form, backtest each inside ``data``, and calibrate the intervals.

    ``progress`` follows the requested law's bootstrap (the longest single step).
    ``checkpoint_noise`` (per group, `scaling.fit.noise.checkpoint_noise` on the runs' training
    curves) is the seed noise of a group without repeated seeds. ``constants``: the suite-chosen
    calibration constants (default: the shipped ones, `scaling.fit.drift.load_constants`)."""
    options = options or FitOptions()
    x = law.features[0] if law.name in SINGLE_INPUT_LAWS else "params_nonembed"
    names = tuple(forms) if forms is not None else forms_for(law.name)
    if names[0] != law.name:
        names = (law.name,) + tuple(n for n in names if n != law.name)
    nested_options = FitOptions(delta=options.delta, bootstrap=0, seed=options.seed, n_workers=1,
                                max_iter=options.max_iter, gtol=options.gtol, ftol=options.ftol)
    fitted: dict[str, FormFit] = {}
    for name in names:
        form = get_law(name, x)
        form_shared = [s for s in shared if s in form.param_names or s in form.fit_names]
        try:
            validate_for_law(data, form)
            result = fit(data, form, shared=form_shared, options=options if name == law.name else
                         FitOptions(delta=options.delta, bootstrap=options.bootstrap, seed=options.seed,
                                    n_workers=options.n_workers), progress=progress if name == law.name else None)
        except UserInputError as exc:
            if name == law.name:
                raise
            fitted[name] = FormFit(name, None, excluded=f"cannot be fitted: {exc.problem}")
            continue
        nested = _nested_errors(data, form, form_shared, _with_starts(nested_options, form, result))
        ff = FormFit(name, result, nested or [])
        if not nested:
            ff.excluded = "no rung can be held out and the rest still fitted, so its extrapolation is untested"
        else:
            ff.nested_rmse = float(np.sqrt(np.mean([e.log_error ** 2 for e in nested])))
        fitted[name] = ff
    model = ModelAverage(law.name, law.features[0] if law.name in SINGLE_INPUT_LAWS else None, fitted, {},
                         scale_feature=scale_feature(law), data=data, checkpoint_noise=dict(checkpoint_noise or {}))
    return recalibrate(model, constants or drift.load_constants())


def recalibrate(model: ModelAverage, constants: CalibrationConstants) -> ModelAverage:
    """Weights, variance components and drift posteriors of ``model`` under ``constants``, from its
    stored form fits and nested errors (no refitting: this is what the leave-one-family-out search
    over constants runs thousands of times). Returns ``model``, updated in place."""
    assert model.data is not None, "recalibrate needs the fitted data (ModelAverage.data)"
    model.constants = constants
    fitted = model.forms
    for f in fitted.values():
        f.weight = 0.0
    with_nested = [f for f in fitted.values() if f.nested_rmse is not None]
    if with_nested:
        inv = np.array([(1.0 / max(f.nested_rmse, 1e-6) ** 2) ** constants.form_temper for f in with_nested])
        for f, wt in zip(with_nested, inv / inv.sum()):
            f.weight = float(wt)
    else:
        fitted[model.law].weight = 1.0
    model.groups = _group_calibration(model.data, model, model.checkpoint_noise)
    model.notes = [n for n in model.notes if not n.startswith(_SUITE_NOTE)]
    from_suite = sorted(g for g, gc in model.groups.items() if gc.drift_source == "suite")
    if from_suite:
        who = "" if len(from_suite) == len(model.groups) else f" ({', '.join(from_suite)})"
        model.notes.append(f"{_SUITE_NOTE}{who}: no nested backtest could be run (too few rungs), so the width "
                           "beyond the largest run comes from other families' histories: the whole spread of the "
                           "drift scales measured on the public scaling-law suite (median "
                           f"{constants.prior.median:.3g} log-loss per decade, scaling.fit.drift)")
    return model


_SUITE_NOTE = "extrapolation drift from the public suite"


def _group_calibration(data: FitData, model: ModelAverage,
                       checkpoint_noise: Mapping[str, CheckpointNoise]) -> dict[str, GroupCalibration]:
    forms = model.weighted_forms
    w = np.array([f.weight for f in forms])
    w = w / w.sum()
    scale = scale_of(data, model.scale_feature)
    out: dict[str, GroupCalibration] = {}
    # Averaged nested errors: each form's log prediction, weighted, at every nested point it has.
    averaged = _averaged_nested(forms, w)
    for g in data.groups:
        sub = data.of_group(g)
        seed_var, seed_dof = replicate_variance(sub)
        seed_source = "replicates" if seed_dof else None
        ratio = None
        ckpt = checkpoint_noise.get(g)
        if not seed_dof and ckpt is not None and ckpt.dof > 0:
            # the raw scatter understates seed noise (issue 21): the calibrated proxy is what every consumer reads
            seed_var, seed_dof, seed_source, ratio = ckpt.seed_variance, ckpt.dof, "checkpoints", SEED_TO_CHECKPOINT_SD_RATIO
        resid = []
        for f, wt in zip(forms, w):
            assert f.result is not None
            resid.append(wt * np.asarray(f.result.groups[g].residuals_log) ** 2)
        in_sample = float(np.sum(resid, axis=0).mean()) if resid else 0.0
        lof = max(in_sample - seed_var, 0.0)
        floor = float(model.primary.groups[g].params.get("E", 0.0))
        # (distance, log error, reducible share 1 - E / L of the point): the drift is measured on
        # the reducible loss, where a misestimated exponent shows as a slope in log-log.
        errs = [(d, r, max(float(_reducible_share(floor, np.array([loss]))[0]), 1e-3))
                for (grp, _, d, _), (r, loss) in averaged.items() if grp == g and d > 0]
        splits = sorted({s for (grp, s, _, _) in averaged if grp == g})
        n_splits = len(splits)
        measured = None
        if errs:
            d2 = np.array([d * d for d, _, _ in errs])
            excess = np.array([max(r * r - in_sample, 0.0) / (share * share) for _, r, share in errs])
            measured = float(math.sqrt(excess.sum() / d2.sum()))
        # each nested split of this group: its points move together (one shared drift draw)
        shifts: list[tuple[list[float], list[float]]] = []
        for sp in splits:
            pts = [(r, d * max(float(_reducible_share(floor, np.array([loss]))[0]), 1e-3))
                   for (grp, s_, d, _), (r, loss) in averaged.items() if grp == g and s_ == sp and d > 0]
            if pts:
                shifts.append(([r for r, _ in pts], [a for _, a in pts]))
        constants = model.constants
        weights = drift.posterior(constants.prior, [Shift.of(r, a, in_sample) for r, a in shifts], constants.temper)
        out[g] = GroupCalibration(
            seed_var=seed_var, seed_dof=seed_dof, seed_source=seed_source, seed_proxy_ratio=ratio,
            lack_of_fit_var=lof, drift_per_decade=math.sqrt(drift.mean_square(weights)),
            drift_measured=measured, n_nested=len(errs),
            log10_scale_max=float(np.log10(scale[data.group == g].max())), n_splits=n_splits,
            drift_source="own nested backtests, shrunk toward the suite" if shifts and constants.temper > 0 else "suite",
            drift_weights=[float(w) for w in weights], nested_shifts=shifts, in_sample_var=max(in_sample, 1e-12),
        )
    _nested_correlations(out, averaged)
    return out


def _averaged_nested(forms: list[FormFit], w: np.ndarray) -> dict[tuple[str, int, float, float], tuple[float, float]]:
    """(group, split, distance, point) -> (weighted log error over the forms that have that point,
    its actual loss). One entry per held-out point of each split (an isoFLOP rung's points share
    a distance; each keeps its own error)."""
    acc: dict[tuple[str, int, float, float], list[tuple[float, float, float]]] = {}
    for f, wt in zip(forms, w):
        for e in f.nested:
            point = float(e.row) if e.row >= 0 else float(e.actual)
            acc.setdefault((e.group, e.split, round(e.distance_decades, 9), point), []).append((wt, e.log_error, e.actual))
    return {k: (sum(a * b for a, b, _ in v) / sum(a for a, _, _ in v), float(np.mean([c for _, _, c in v])))
            for k, v in acc.items()}


def _nested_correlations(groups: dict[str, GroupCalibration],
                         averaged: dict[tuple[str, int, float, float], tuple[float, float]]) -> None:
    """Per group: the mean correlation of its nested errors with other groups' (matched by split
    and rank of distance), shrunk towards 0; differences between series use it."""
    names = list(groups)
    if len(names) < 2:
        return
    by: dict[tuple[str, int], list[float]] = {}
    for (g, s, d, _), (r, _) in sorted(averaged.items(), key=lambda kv: (kv[0][2], kv[0][3])):
        by.setdefault((g, s), []).append(r)
    for g in names:
        rs = []
        for h in names:
            if h == g:
                continue
            a, b = [], []
            for (gg, s), errs in by.items():
                if gg != g or (h, s) not in by:
                    continue
                other = by[(h, s)]
                m = min(len(errs), len(other))
                a.extend(errs[:m])
                b.extend(other[:m])
            if len(a) >= 3 and np.std(a) > 0 and np.std(b) > 0:
                n = len(a)
                rs.append(float(np.corrcoef(a, b)[0, 1]) * n / (n + 3.0))
        groups[g].nested_correlation = float(np.clip(np.mean(rs), 0.0, 0.9)) if rs else 0.0


# ---------------------------------------------------------------------------- suite method
def calibrated_method(bootstrap: int = 200, seed: int = 0):
    """The suite method (`scaling.fit.suite`): calibrate on the fit part, predict the rest."""
    from scaling.fit.laws import CHINCHILLA
    from scaling.fit.suite import Prediction

    def run(train: FitData, held: FitData, levels: Sequence[float]) -> Prediction:
        model = calibrate(train, CHINCHILLA, options=FitOptions(bootstrap=bootstrap, seed=seed))
        X = {k: held.features[k] for k in ("params_nonembed", "tokens", "flops")}
        out = {}
        pred = None
        for level in levels:
            pred, lo, hi = model.interval("all", X, level)
            out[level] = (lo, hi)
        assert pred is not None
        return Prediction(pred, out, {"model": model})

    return run
