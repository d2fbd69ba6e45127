"""Extrapolated comparisons between groups: losses at target sizes and budgets, who wins, where
curves cross, and the compute-optimal frontier, all with bootstrap intervals.

Why this module: the question users bring (does GRM's gain over a Transformer hold beyond
1.3B?) is a statement about fitted laws far outside the data. Each number here therefore comes
with its spread over the bootstrap refits, and a comparison between two groups is made draw by
draw, so shared uncertainty (a shared E in a joint fit) cancels as it should.

Compute is pluggable: each group may have its own ``flops_per_token(params_nonembed)``
(training FLOPs per token; MC models' read cost depends on the architecture). The default is
the usual 6 N. With C = f(N) D, the compute-optimal model size solves
``d/dN L(N, C / f(N)) = 0``, i.e. ``D = (beta B eps(N) N^alpha / (alpha A))^(1/beta)`` with
``eps = dlog f / dlog N`` (= 1 for 6 N, which gives Hoffmann's closed form).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from scaling.fit.calibration import ModelAverage
from scaling.fit.result import FitResult, to_jsonable
from scaling.formatting import sci

#: training FLOPs per token as a function of non-embedding parameters (vectorised)
FlopsPerToken = Callable[[np.ndarray], np.ndarray]

DEFAULT_SIZES: tuple[float, ...] = (1.3e9, 7e9, 70e9)
DEFAULT_BUDGETS: tuple[float, ...] = (1e21, 1e22, 1e23, 1e24)
TOKENS_PER_PARAM_RULE = 20.0
DEFAULT_SIZE_RANGE = (1e7, 1e13)
DEFAULT_COMPUTE_RANGE = (1e17, 1e27)
_LOG_N_BRACKET = (np.log(1e3), np.log(1e18))


def six_n(params_nonembed: np.ndarray) -> np.ndarray:
    """The standard estimate of training FLOPs per token: 6 N (forward 2 N, backward 4 N)."""
    return 6.0 * np.asarray(params_nonembed, dtype=float)


def _call_vectorised(f: FlopsPerToken, n: np.ndarray) -> np.ndarray:
    """``f`` on an array; falls back to one call per element for scalar-only callables."""
    try:
        out = np.asarray(f(n), dtype=float)
        if out.shape == n.shape:
            return out
    except Exception:  # noqa: BLE001 - retry element-wise below
        pass
    return np.array([float(f(float(v))) for v in n.ravel()]).reshape(n.shape)


class FlopsModel:
    """A group's FLOPs per token, tabulated once on a fine log-N grid.

    Why a table: the compute-optimal search evaluates FLOPs for every bootstrap draw at every
    bisection step; the callable (possibly a slow, scalar, exact per-architecture count) is
    called once per grid point instead, and ``log f`` is interpolated linearly in ``log N``,
    which is exact for power laws like 6 N and accurate to ~1e-5 for smooth counts.
    """

    def __init__(self, f: FlopsPerToken, name: str | None = None) -> None:
        self.name = name or getattr(f, "__name__", repr(f))
        self.log_n = np.linspace(*_LOG_N_BRACKET, 3001)
        values = _call_vectorised(f, np.exp(self.log_n))
        if not np.all(np.isfinite(values) & (values > 0)):
            raise ValueError(f"flops_per_token {self.name} must be positive and finite for 1e3..1e18 parameters")
        self.log_f = np.log(values)
        self.eps = np.gradient(self.log_f, self.log_n)

    def flops_per_token(self, n: np.ndarray) -> np.ndarray:
        return np.exp(np.interp(np.log(n), self.log_n, self.log_f))

    def elasticity(self, n: np.ndarray) -> np.ndarray:
        """``dlog f / dlog N``: 1 for 6 N."""
        return np.interp(np.log(n), self.log_n, self.eps)


# --- the law along the paths we compare on --------------------------------------------------
# ``p`` holds parameter arrays of shape (M, 1): M = 1 for the point fit, B for bootstrap draws.


def _loss(p: Mapping[str, np.ndarray], n: np.ndarray, d: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):  # draws with no interior optimum give inf/NaN, which the caller reports
        return p["E"] + p["A"] * n ** (-p["alpha"]) + p["B"] * d ** (-p["beta"])


def _optimal_tokens(p: Mapping[str, np.ndarray], n: np.ndarray, fm: FlopsModel) -> np.ndarray:
    """Tokens that make size ``n`` compute-optimal: the stationarity condition in the docstring."""
    with np.errstate(all="ignore"):
        return (p["beta"] * p["B"] * fm.elasticity(n) * n ** p["alpha"] / (p["alpha"] * p["A"])) ** (1.0 / p["beta"])


def _optimal_size(p: Mapping[str, np.ndarray], flops: np.ndarray, fm: FlopsModel) -> np.ndarray:
    """N_opt(C) by bisection in log N on the sign of ``dL/dN`` along ``C = f(N) D``.

    The derivative's sign is that of ``log(C / f(N)) - log D_opt(N)``, decreasing in N.
    Results pinned at the bracket edge mean no interior optimum in [1e3, 1e18] parameters.
    """
    shape = np.broadcast(p["E"], flops).shape
    lo = np.full(shape, _LOG_N_BRACKET[0])
    hi = np.full(shape, _LOG_N_BRACKET[1])
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        n = np.exp(mid)
        with np.errstate(all="ignore"):
            excess = np.log(flops / fm.flops_per_token(n)) - np.log(_optimal_tokens(p, n, fm))
        grow = excess > 0  # more tokens than optimal at this N: the optimum is a larger N
        lo = np.where(grow, mid, lo)
        hi = np.where(grow, hi, mid)
    return np.exp(0.5 * (lo + hi))


@dataclass
class Estimate:
    """A point value with its confidence band (the curve) and prediction interval (a new run)."""

    value: float
    low: float | None = None
    high: float | None = None
    pred_low: float | None = None
    pred_high: float | None = None


@dataclass
class TargetLoss:
    """One group's predicted loss at one target."""

    target: str
    group: str
    params_nonembed: float | None
    tokens: float | None
    flops: float | None
    loss: Estimate
    forms: dict[str, float] = field(default_factory=dict)  # each functional form's own prediction


@dataclass
class PairDifference:
    """Loss of ``group_a`` minus ``group_b`` at a target; ``p_a_better`` = P(loss_a < loss_b).

    With a calibration, ``family_low``/``family_high`` is the interval at the family-wise level
    (Bonferroni over ``n_comparisons``) that "resolved" is decided on."""

    target: str
    group_a: str
    group_b: str
    difference: Estimate
    p_a_better: float | None
    family_low: float | None = None
    family_high: float | None = None
    family_level: float | None = None


@dataclass
class Crossover:
    """Where ``group_a``'s and ``group_b``'s curves cross along ``axis`` (first crossing)."""

    group_a: str
    group_b: str
    axis: str
    search_range: tuple[float, float]
    at: float | None
    low: float | None
    high: float | None
    fraction_of_draws_crossing: float | None
    status: str


#: Why a calibrated comparison prints no interval for N_opt and D_opt (`FrontierPoint.interval_withheld`).
FRONTIER_INTERVAL_WITHHELD = (
    "no interval for N_opt or D_opt: the nested backtests calibrate losses (a held-out run has a measured loss), "
    "but no study run, and no point of the public suite, is a measured compute-optimal allocation, so an allocation "
    "interval cannot be calibrated; the bootstrap spread alone is known to be far too narrow (on the public suite "
    "the bootstrap band of the curve covered 27% of held-out losses at 95%)")


@dataclass
class FrontierPoint:
    """Compute-optimal allocation of one group at one budget.

    ``interval_withheld`` says why ``params_nonembed`` and ``tokens`` carry no interval (a
    calibrated comparison: their bootstrap spread is not calibrated, so it is not given); the
    ``loss`` interval is then the calibrated one of the budget's target."""

    group: str
    flops: float
    params_nonembed: Estimate
    tokens: Estimate
    loss: Estimate
    interval_withheld: str | None = None


@dataclass
class Comparison:
    targets: list[TargetLoss] = field(default_factory=list)
    differences: list[PairDifference] = field(default_factory=list)
    crossovers: list[Crossover] = field(default_factory=list)
    frontier: list[FrontierPoint] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return to_jsonable(asdict(self))


def _group_params(result: FitResult, group: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    point = {k: np.array([[v]]) for k, v in result.groups[group].params.items()}
    draws = result.draws(group) if result.groups[group].bootstrap else None
    return point, draws


def _estimate(point: np.ndarray, draws: np.ndarray | None, level: float, noise: np.ndarray | None = None) -> Estimate:
    value = float(np.ravel(point)[0])
    if draws is None:
        return Estimate(value)
    tail = (1.0 - level) / 2.0
    with np.errstate(all="ignore"):  # infinite draws (no interior optimum) make inf - inf inside the quantile
        lo, hi = np.nanquantile(draws, [tail, 1.0 - tail])
    est = Estimate(value, float(lo), float(hi))
    if noise is not None:
        with np.errstate(all="ignore"):
            plo, phi = np.nanquantile(draws * np.exp(noise), [tail, 1.0 - tail])
        est.pred_low, est.pred_high = float(plo), float(phi)
    return est


def _first_crossing(log_x: np.ndarray, diff: np.ndarray) -> np.ndarray:
    """Per row of ``diff`` (M, K): log x of the first sign change (log-linear interpolation), NaN if none."""
    sign = np.sign(diff)
    change = (sign[:, :-1] * sign[:, 1:]) < 0
    out = np.full(diff.shape[0], np.nan)
    rows = np.flatnonzero(change.any(axis=1))
    if rows.size:
        k = change[rows].argmax(axis=1)
        d0, d1 = diff[rows, k], diff[rows, k + 1]
        out[rows] = log_x[k] + (log_x[k + 1] - log_x[k]) * d0 / (d0 - d1)
    return out


class _Curves:
    """Loss of every group along the size and compute axes, for the point fit (0) and the
    bootstrap draws (1); results are cached because crossovers reuse them for every pair."""

    def __init__(self, result: FitResult, flops_models: Mapping[str, FlopsModel]) -> None:
        self.result = result
        self.fm = flops_models
        self.params = {g: _group_params(result, g) for g in result.groups}
        self._cache: dict[tuple, tuple[np.ndarray, ...]] = {}

    def at_size(self, g: str, n: np.ndarray, tokens: str, which: int) -> tuple[np.ndarray, np.ndarray]:
        """(loss, tokens) at sizes ``n``; ``tokens`` is "optimal" or "20x"."""
        key = ("size", g, tokens, which, n.tobytes())
        if key not in self._cache:
            p = self.params[g][which]
            nn = np.asarray(n, dtype=float)[None, :]
            if tokens == "optimal":
                d = _optimal_tokens(p, nn, self.fm[g])
            else:
                d = TOKENS_PER_PARAM_RULE * nn * np.ones_like(p["E"])
            self._cache[key] = (_loss(p, nn, d), d)
        return self._cache[key]  # type: ignore[return-value]

    def at_compute(self, g: str, c: np.ndarray, which: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(loss, N_opt, D_opt) at budgets ``c``."""
        key = ("compute", g, which, c.tobytes())
        if key not in self._cache:
            p = self.params[g][which]
            cc = np.asarray(c, dtype=float)[None, :]
            n = _optimal_size(p, cc, self.fm[g])
            d = cc / self.fm[g].flops_per_token(n)
            self._cache[key] = (_loss(p, n, d), n, d)
        return self._cache[key]  # type: ignore[return-value]


def compare(
    result: FitResult,
    *,
    sizes: Sequence[float] = DEFAULT_SIZES,
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    flops_per_token: FlopsPerToken | Mapping[str, FlopsPerToken] | None = None,
    size_range: tuple[float, float] = DEFAULT_SIZE_RANGE,
    compute_range: tuple[float, float] = DEFAULT_COMPUTE_RANGE,
    level: float = 0.95,
    seed: int = 0,
    calibration: ModelAverage | None = None,
    n_comparisons: int | None = None,
) -> Comparison:
    """Compare every group of a ``chinchilla`` fit (or a ``power`` fit along its own input).

    ``flops_per_token``: one callable for all groups, or one per group; default ``6 N``.
    ``calibration`` (from `scaling.fit.calibration.calibrate` on the same data): losses,
    differences and crossovers then come from the form-averaged, backtest-calibrated model
    (`_calibrate`); the frontier's allocations stay the requested law's bootstrap. ``n_comparisons``:
    how many differences the caller judges together (default: all computed), for the
    family-wise level of "resolved".
    """
    groups = list(result.groups)
    if flops_per_token is None:
        f_map: dict[str, FlopsPerToken] = {g: six_n for g in groups}
    elif callable(flops_per_token):
        f_map = {g: flops_per_token for g in groups}
    else:
        missing = [g for g in groups if g not in flops_per_token]
        if missing:
            raise ValueError(f"flops_per_token has no entry for group(s) {missing}")
        f_map = dict(flops_per_token)
    if result.law == "power":
        out = _compare_power(result, sizes, budgets, size_range, compute_range, level, seed)
        if calibration is not None:
            x_name = result.law_input or "params_nonembed"
            _calibrate(out, calibration, level, seed, n_comparisons, {x_name: lambda g, grid: {x_name: grid}})
        return out
    if result.law != "chinchilla":
        raise ValueError(f"compare needs a chinchilla or power fit, not {result.law!r}")

    flops_models = {g: FlopsModel(f) for g, f in f_map.items()}
    curves = _Curves(result, flops_models)
    rng = np.random.default_rng(seed)
    out = Comparison(
        settings={
            "level": level,
            "flops_per_token": {g: getattr(f, "__name__", repr(f)) for g, f in f_map.items()},
            "tokens_per_param_rule": TOKENS_PER_PARAM_RULE,
            "size_range": list(size_range),
            "compute_range": list(compute_range),
            "n_bootstrap": result.n_bootstrap,
        }
    )
    has_draws = result.n_bootstrap > 0

    def noise(g: str, shape: tuple[int, ...]) -> np.ndarray | None:
        res = np.asarray(result.groups[g].residuals_log, dtype=float)
        return rng.choice(res, size=shape) if has_draws and res.size else None

    # Targets: sizes at optimal tokens and at 20 tokens/param, then budgets.
    target_losses: dict[str, dict[str, tuple[np.ndarray, np.ndarray | None]]] = {}
    for policy, label in (("optimal", "compute-optimal tokens"), ("20x", f"{TOKENS_PER_PARAM_RULE:g} tokens/param")):
        for n in sizes:
            name = f"N={sci(n)} params, {label}"
            target_losses[name] = {}
            for g in groups:
                pl, pd_ = curves.at_size(g, np.array([n]), policy, 0)
                dl = curves.at_size(g, np.array([n]), policy, 1)[0][:, 0] if has_draws else None
                target_losses[name][g] = (pl[0, 0], dl)
                f_n = float(flops_models[g].flops_per_token(np.array([n]))[0])
                out.targets.append(
                    TargetLoss(name, g, float(n), float(pd_[0, 0]), f_n * float(pd_[0, 0]),
                               _estimate(pl, dl, level, noise(g, dl.shape) if dl is not None else None))
                )
    for c in budgets:
        name = _budget_target(c)
        target_losses[name] = {}
        for g in groups:
            pl, pn, pdd = curves.at_compute(g, np.array([c]), 0)
            if has_draws:
                dl, dn, dd = (a[:, 0] for a in curves.at_compute(g, np.array([c]), 1))
            else:
                dl = dn = dd = None
            target_losses[name][g] = (pl[0, 0], dl)
            est = _estimate(pl, dl, level, noise(g, dl.shape) if dl is not None else None)
            out.targets.append(TargetLoss(name, g, float(pn[0, 0]), float(pdd[0, 0]), float(c), est))
            out.frontier.append(
                FrontierPoint(g, float(c), _estimate(pn, dn, level), _estimate(pdd, dd, level), _estimate(pl, dl, level))
            )

    for name, per_group in target_losses.items():
        for a, b in itertools.combinations(groups, 2):
            (pa, da), (pb, db) = per_group[a], per_group[b]
            ddiff = None if da is None else da - db
            out.differences.append(
                PairDifference(
                    name, a, b, _estimate(np.array([pa - pb]), ddiff, level),
                    None if ddiff is None else float(np.mean(ddiff < 0)),
                )
            )

    size_grid = np.geomspace(*size_range, 400)
    compute_grid = np.geomspace(*compute_range, 400)
    for a, b in itertools.combinations(groups, 2):
        for axis, grid, fn in (
            ("params_nonembed at compute-optimal tokens", size_grid, lambda g, w: curves.at_size(g, size_grid, "optimal", w)[0]),
            ("params_nonembed at 20 tokens/param", size_grid, lambda g, w: curves.at_size(g, size_grid, "20x", w)[0]),
            ("flops at compute-optimal allocation", compute_grid, lambda g, w: curves.at_compute(g, compute_grid, w)[0]),
        ):
            out.crossovers.append(_crossover(a, b, axis, grid, fn, has_draws, level))
    if calibration is not None:
        def path(kind: str) -> Callable[[str, np.ndarray], dict[str, np.ndarray]]:
            def X(g: str, grid: np.ndarray) -> dict[str, np.ndarray]:
                if kind == "compute":
                    _, n, d = curves.at_compute(g, grid, 0)
                    n, d = n[0], d[0]
                else:
                    _, d = curves.at_size(g, grid, kind, 0)
                    n, d = grid, d[0]
                return {"params_nonembed": n, "tokens": d, "flops": flops_models[g].flops_per_token(n) * d}
            return X
        _calibrate(out, calibration, level, seed, n_comparisons, {
            "params_nonembed at compute-optimal tokens": path("optimal"),
            "params_nonembed at 20 tokens/param": path("20x"),
            "flops at compute-optimal allocation": path("compute"),
        })
    return out


def _budget_target(flops: float) -> str:
    """The name of the compute-optimal target at budget ``flops``."""
    return f"C={sci(flops)} FLOPs, compute-optimal"


#: Joint draws per calibrated difference or crossover.
_CALIBRATED_DRAWS = 2000


def _target_inputs(t: TargetLoss) -> dict[str, np.ndarray]:
    return {k: np.array([v]) for k, v in (("params_nonembed", t.params_nonembed), ("tokens", t.tokens),
                                           ("flops", t.flops)) if v is not None}


def _calibrate(out: Comparison, model: ModelAverage, level: float, seed: int, n_comparisons: int | None,
               paths: Mapping[str, Callable[[str, np.ndarray], dict[str, np.ndarray]]]) -> None:
    """Replace the bootstrap-only numbers of ``out`` by calibrated, form-averaged ones.

    Targets: the weighted-mean prediction, the calibrated interval of the expected loss
    (``low``/``high``) and of a new run (``pred_*``), and each form's own prediction.
    Frontier: the loss takes its budget target's calibrated interval; N_opt and D_opt keep their
    point values and lose their (uncalibrated) bootstrap intervals, with the reason.
    Differences: quantiles of joint draws (`ModelAverage.loss_draws`), P(a better), and the
    family-wise interval. Crossovers: first crossings of the joint draws along the point fit's
    path; the interval is withheld (None) unless most draws cross.
    """
    tail = (1.0 - level) / 2.0
    by_target: dict[tuple[str, str], TargetLoss] = {}
    for t in out.targets:
        X = _target_inputs(t)
        pred, lo, hi = model.interval(t.group, X, level, new_run=False)
        _, plo, phi = model.interval(t.group, X, level, new_run=True)
        t.loss = Estimate(float(pred[0]), float(lo[0]), float(hi[0]), float(plo[0]), float(phi[0]))
        t.forms = {f.name: float(np.atleast_1d(f.result.predict(t.group, X))[0]) for f in model.forms.values()
                   if f.result is not None}
        by_target[(t.target, t.group)] = t
    for fp in out.frontier:
        t = by_target.get((_budget_target(fp.flops), fp.group))
        if t is not None:
            fp.loss = Estimate(t.loss.value, t.loss.low, t.loss.high, t.loss.pred_low, t.loss.pred_high)
        fp.params_nonembed = Estimate(fp.params_nonembed.value)
        fp.tokens = Estimate(fp.tokens.value)
        fp.interval_withheld = FRONTIER_INTERVAL_WITHHELD
    m = max(1, n_comparisons if n_comparisons is not None else len(out.differences))
    family_level = 1.0 - (1.0 - level) / m
    ftail = (1.0 - family_level) / 2.0
    for i, d in enumerate(out.differences):
        ta, tb = by_target[(d.target, d.group_a)], by_target[(d.target, d.group_b)]
        draws = model.loss_draws([d.group_a, d.group_b], {d.group_a: _target_inputs(ta), d.group_b: _target_inputs(tb)},
                                 _CALIBRATED_DRAWS, seed + i)
        diff = draws[d.group_a][:, 0] - draws[d.group_b][:, 0]
        lo, hi = np.quantile(diff, [tail, 1.0 - tail])
        flo, fhi = np.quantile(diff, [ftail, 1.0 - ftail])
        d.difference = Estimate(ta.loss.value - tb.loss.value, float(lo), float(hi))
        d.p_a_better = float(np.mean(diff < 0))
        d.family_low, d.family_high, d.family_level = float(flo), float(fhi), float(family_level)
    for i, c in enumerate(out.crossovers):
        X_of = paths.get(c.axis)
        if X_of is None:
            continue
        grid = np.geomspace(*c.search_range, 200)
        Xa, Xb = X_of(c.group_a, grid), X_of(c.group_b, grid)
        log_x = np.log(grid)
        mu_a, _ = model.components(c.group_a, Xa)
        mu_b, _ = model.components(c.group_b, Xb)
        point = _first_crossing(log_x, (np.exp(mu_a) - np.exp(mu_b))[None, :])[0]
        draws = model.loss_draws([c.group_a, c.group_b], {c.group_a: Xa, c.group_b: Xb}, 1000, seed + 7919 + i)
        first = _first_crossing(log_x, draws[c.group_a] - draws[c.group_b])
        crossing = first[np.isfinite(first)]
        c.fraction_of_draws_crossing = float(crossing.size / first.size)
        c.at = float(np.exp(point)) if np.isfinite(point) else None
        c.low = c.high = None
        if crossing.size and c.fraction_of_draws_crossing >= 0.5:
            c.low, c.high = (float(np.exp(q)) for q in np.quantile(crossing, [tail, 1.0 - tail]))
        if c.at is not None:
            c.status = f"curves cross at {sci(c.at)}"
        else:
            c.status = f"no crossover in range [{sci(c.search_range[0])}, {sci(c.search_range[1])}]"
        if c.fraction_of_draws_crossing < 0.5:
            c.status += f"; only {c.fraction_of_draws_crossing:.0%} of calibrated draws cross, so no interval is given"
    out.settings["calibrated"] = True
    out.settings["family_level"] = family_level
    out.settings["n_comparisons"] = m
    out.settings["calibration"] = model.summary()


def _crossover(
    a: str, b: str, axis: str, grid: np.ndarray, curve: Callable[[str, int], np.ndarray], has_draws: bool, level: float
) -> Crossover:
    log_x = np.log(grid)
    point = _first_crossing(log_x, curve(a, 0) - curve(b, 0))[0]
    rng_pair = (float(grid[0]), float(grid[-1]))
    lo = hi = frac = None
    if has_draws:
        draws = _first_crossing(log_x, curve(a, 1) - curve(b, 1))
        crossing = draws[np.isfinite(draws)]
        frac = float(crossing.size / draws.size)
        if crossing.size:
            tail = (1.0 - level) / 2.0
            lo, hi = (float(np.exp(q)) for q in np.quantile(crossing, [tail, 1.0 - tail]))
    if np.isfinite(point):
        status = f"curves cross at {sci(float(np.exp(point)))}"
        at = float(np.exp(point))
    else:
        status = f"no crossover in range [{sci(rng_pair[0])}, {sci(rng_pair[1])}]"
        at = None
    return Crossover(a, b, axis, rng_pair, at, lo, hi, frac, status)


def _compare_power(
    result: FitResult,
    sizes: Sequence[float],
    budgets: Sequence[float],
    size_range: tuple[float, float],
    compute_range: tuple[float, float],
    level: float,
    seed: int,
) -> Comparison:
    """A power law has one input: compare at sizes (x = params) or budgets (x = flops) only."""
    x_name = result.law_input or "params_nonembed"
    targets = sizes if x_name == "params_nonembed" else budgets
    grid = np.geomspace(*(size_range if x_name == "params_nonembed" else compute_range), 400)
    groups = list(result.groups)
    has_draws = result.n_bootstrap > 0
    rng = np.random.default_rng(seed)
    out = Comparison(settings={"level": level, "axis": x_name, "n_bootstrap": result.n_bootstrap})
    per_target: dict[str, dict[str, tuple[float, np.ndarray | None]]] = {}
    for x in targets:
        name = f"{x_name}={sci(x)}"
        per_target[name] = {}
        for g in groups:
            pl = result.predict(g, {x_name: np.array([x])})
            dl = result.predict_draws(g, {x_name: np.array([x])})[:, 0] if has_draws else None
            res = np.asarray(result.groups[g].residuals_log)
            nz = rng.choice(res, size=dl.shape) if dl is not None and res.size else None
            per_target[name][g] = (float(pl[0]), dl)
            out.targets.append(
                TargetLoss(name, g, float(x) if x_name == "params_nonembed" else None, None,
                           float(x) if x_name == "flops" else None, _estimate(pl, dl, level, nz))
            )
    for name, per_group in per_target.items():
        for a, b in itertools.combinations(groups, 2):
            (pa, da), (pb, db) = per_group[a], per_group[b]
            ddiff = None if da is None else da - db
            out.differences.append(
                PairDifference(name, a, b, _estimate(np.array([pa - pb]), ddiff, level),
                               None if ddiff is None else float(np.mean(ddiff < 0)))
            )
    for a, b in itertools.combinations(groups, 2):
        def curve(g: str, which: int) -> np.ndarray:
            X = {x_name: grid}
            return result.predict(g, X)[None, :] if which == 0 else result.predict_draws(g, X)
        out.crossovers.append(_crossover(a, b, x_name, grid, curve, has_draws, level))
    return out
