"""The estimator: Hoffmann et al.'s robust fit from a grid of starts, and a run-level bootstrap.

Why this procedure: it is Chinchilla's Approach 3 (Huber loss, delta = 1e-3, on log-loss
residuals, summed, L-BFGS from a 4,500-point grid, best start wins), so the same code that fits
our MC-vs-Transformer ladders reproduces published fits on published points. All starts run
together as one batched L-BFGS problem (`scaling.fit.lbfgs`); every bootstrap resample is a
weighted copy of the problem, solved batched too and spread over processes.

Groups (architectures) are fitted independently unless some parameters are shared; with a shared
parameter (typically ``e``, the irreducible loss of a common data set) all groups are fitted
jointly, starting from combinations of each group's best optima found on its own grid.

`fit_many` fits several data sets that share one design (same inputs, groups and runs, only the
losses differ) as one batched problem: simulation studies (coverage checks, how many sizes a
study needs) cost about as much as a single fit.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.context import BaseContext
from typing import Callable, Sequence

import numpy as np

from scaling.errors import UserInputError
from scaling.fit.data import FitData, validate_for_law
from scaling.fit.laws import SINGLE_INPUT_LAWS, Law
from scaling.fit.layout import Layout, feature_centers
from scaling.fit.lbfgs import STATUS_NAMES, minimize_batched
from scaling.fit.objective import HuberLSEObjective
from scaling.fit.resample import resample_weights
from scaling.fit.result import FitResult, GroupFit

#: progress(done, total): called as bootstrap resamples finish.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class FitOptions:
    """Settings of a fit; every field is recorded in ``FitResult.settings``.

    ``starts``: law-shaped starts in fit coordinates (``e, a, alpha, ...``); default the law's
    grid (Hoffmann's 4,500 for ``chinchilla``). ``bootstrap_starts``: each resample is refitted
    from this many distinct optima of the full-data fit (the resample's optimum lies near one of
    them; re-running the whole grid per resample would cost ``grid`` times more for the same
    answer). ``n_workers``: processes for the bootstrap (``None``: all cores when the work is
    large enough to pay for starting them). ``ftol``/``gtol`` apply to the Huber loss in units of
    ``delta``; ``ftol = 1e-9`` is ~1000x tighter than scipy's L-BFGS-B default on this objective.
    """

    delta: float = 1e-3
    bootstrap: int = 0
    bootstrap_starts: int = 2
    seed: int = 0
    n_workers: int | None = None
    max_iter: int = 1000
    gtol: float = 1e-7
    ftol: float = 1e-9
    starts: np.ndarray | None = field(default=None, compare=False)

    def optimizer_kwargs(self) -> dict[str, float]:
        return {"max_iter": self.max_iter, "gtol": self.gtol, "ftol": self.ftol}


@dataclass
class _Problem:
    """Batched minimisation for one layout: centred designs, observed log losses per data set
    ``(M, n)``, the map back to plain coordinates and the bounds per column."""

    layout: Layout
    designs: list[np.ndarray]
    T: np.ndarray  # plain = centred @ T.T
    log_loss: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    def to_centred(self, theta_plain: np.ndarray) -> np.ndarray:
        flat = theta_plain.reshape(-1, theta_plain.shape[-1])
        return np.linalg.solve(self.T, flat.T).T.reshape(theta_plain.shape)

    def to_plain(self, theta_centred: np.ndarray) -> np.ndarray:
        return theta_centred @ self.T.T


def _build_problem(design: FitData, log_loss: np.ndarray, layout: Layout) -> _Problem:
    law = layout.law
    group_index = np.array([layout.groups.index(str(g)) for g in design.group])
    centers = feature_centers(design.features, law.features)
    designs, T = layout.designs(design.features, group_index, centers)
    lower = np.empty(layout.n_params)
    upper = np.empty(layout.n_params)
    for col, (_, name) in enumerate(layout.columns):
        p = law.param(name)
        lo, hi = p.bounds
        lower[col] = (math.log(lo) if lo > 0 else -math.inf) if p.log_scale else lo
        upper[col] = math.log(hi) if p.log_scale else hi
    return _Problem(layout, designs, T, log_loss, lower, upper)


def _in_bounds(theta_plain: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    return np.all((theta_plain >= lower) & (theta_plain <= upper), axis=-1)


def _best(f: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``f`` (R, S): the lowest value among in-bounds columns (any finite one if none
    is in bounds), and whether it was in bounds."""
    finite = np.isfinite(f)
    valid = ok & finite
    has_valid = valid.any(axis=1)
    pool = np.where(has_valid[:, None], valid, finite)
    return np.argmin(np.where(pool, f, np.inf), axis=1), has_valid


def _distinct_optima(theta_c: np.ndarray, f: np.ndarray, ok: np.ndarray, k: int) -> np.ndarray:
    """``(k, P)``: the best optima that differ by > 1e-3 in some coordinate; padded with the best."""
    order = np.argsort(np.where(np.isfinite(f) & ok, f, np.inf))
    chosen: list[np.ndarray] = [theta_c[order[0]]]
    for i in order[1:]:
        if len(chosen) == k or not (np.isfinite(f[i]) and ok[i]):
            break
        if all(np.max(np.abs(theta_c[i] - c)) > 1e-3 for c in chosen):
            chosen.append(theta_c[i])
    while len(chosen) < k:
        chosen.append(chosen[0])
    return np.array(chosen)


@dataclass
class _LayoutFit:
    """Best plain parameters per data set ``(M, P)`` with diagnostics and distinct optima."""

    theta: np.ndarray
    objective_huber: np.ndarray
    in_bounds: np.ndarray
    n_starts: int
    n_converged: int
    status_counts: dict[str, int]
    optima_c: np.ndarray  # (M, K, P), centred, best first


def _fit_layout(problem: _Problem, starts_plain: np.ndarray, options: FitOptions, n_optima: int | None = None) -> _LayoutFit:
    """Minimise from ``starts_plain`` (``(S, P)`` for every data set, or ``(M, S, P)``); keep the
    ``n_optima`` (default ``options.bootstrap_starts``) best distinct optima."""
    n_optima = options.bootstrap_starts if n_optima is None else n_optima
    M = problem.log_loss.shape[0]
    starts = np.broadcast_to(starts_plain, (M,) + starts_plain.shape[-2:])
    S = starts.shape[1]
    targets = problem.log_loss[0] if M == 1 else np.repeat(problem.log_loss, S, axis=0)
    objective = HuberLSEObjective(problem.designs, targets, options.delta)
    result = minimize_batched(objective, problem.to_centred(starts.reshape(M * S, -1)), **options.optimizer_kwargs())
    x_c = result.x.reshape(M, S, -1)
    plain = problem.to_plain(x_c)
    f = result.f.reshape(M, S)
    ok = _in_bounds(plain, problem.lower, problem.upper)
    best, valid = _best(f, ok)
    rows = np.arange(M)
    statuses = {STATUS_NAMES[int(s)]: int(c) for s, c in zip(*np.unique(result.status, return_counts=True))}
    return _LayoutFit(
        theta=plain[rows, best],
        objective_huber=f[rows, best] * options.delta,
        in_bounds=valid,
        n_starts=S,
        n_converged=int(result.converged.sum()),
        status_counts=statuses,
        optima_c=np.stack([_distinct_optima(x_c[m], f[m], ok[m], n_optima) for m in range(M)]),
    )


def _bootstrap_chunk(
    designs: list[np.ndarray],
    T: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    delta: float,
    opt: dict[str, float],
    weights: np.ndarray,
    log_loss: np.ndarray,
    starts_c: np.ndarray,
) -> np.ndarray:
    """Refit resamples: ``weights`` and ``log_loss`` ``(R, n)``, starts ``(R, K, P)`` centred.

    Returns the best plain parameters per resample ``(R, P)`` (in bounds where any start is).
    Top-level (picklable) so a process pool can run it.
    """
    R, K, _ = starts_c.shape
    objective = HuberLSEObjective(
        designs, np.repeat(log_loss, K, axis=0), delta, weights=np.repeat(weights, K, axis=0)
    )
    result = minimize_batched(objective, starts_c.reshape(R * K, -1), **opt)
    plain = (result.x @ T.T).reshape(R, K, -1)
    best, _ = _best(result.f.reshape(R, K), _in_bounds(plain, lower, upper))
    return plain[np.arange(R), best]


def _pool_context() -> BaseContext:
    """``fork`` where the platform has it: workers start in milliseconds and, unlike ``spawn``,
    do not re-import the caller's ``__main__`` (a user script without a ``__main__`` guard would
    otherwise run again in every worker). The workers only run numpy code."""
    methods = get_all_start_methods()
    return get_context("fork" if "fork" in methods and sys.platform.startswith("linux") else "spawn")


def _auto_workers(n_rows: int, n_points: int) -> int:
    """Processes worth starting: only when the bootstrap is big enough to amortise them."""
    return 1 if n_rows * n_points < 400_000 else (os.cpu_count() or 1)


def _run_bootstrap(
    problem: _Problem,
    weights: np.ndarray,
    log_loss: np.ndarray,
    starts_c: np.ndarray,
    options: FitOptions,
    progress: Progress | None,
) -> np.ndarray:
    """Best plain parameters per resample ``(R, P)``, in chunks, in worker processes if worthwhile."""
    R = weights.shape[0]
    elements = R * starts_c.shape[1] * weights.shape[1]
    workers = options.n_workers or _auto_workers(R * starts_c.shape[1], weights.shape[1])
    # Few, large chunks: each chunk pays the batched optimiser's tail (its slowest row) once.
    n_chunks = 2 * workers if workers > 1 else int(np.clip(elements // 250_000, 1, 10))
    n_chunks = max(1, min(R, n_chunks))
    edges = np.linspace(0, R, n_chunks + 1).astype(int)
    chunks = [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    args = (problem.designs, problem.T, problem.lower, problem.upper, options.delta, options.optimizer_kwargs())
    out = np.empty((R, problem.layout.n_params))
    done = 0
    if progress:
        progress(0, R)
    if workers <= 1:
        for a, b in chunks:
            out[a:b] = _bootstrap_chunk(*args, weights[a:b], log_loss[a:b], starts_c[a:b])
            done += b - a
            if progress:
                progress(done, R)
        return out
    with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool:
        futures = {
            pool.submit(_bootstrap_chunk, *args, weights[a:b], log_loss[a:b], starts_c[a:b]): (a, b) for a, b in chunks
        }
        for fut in as_completed(futures):
            a, b = futures[fut]
            out[a:b] = fut.result()
            done += b - a
            if progress:
                progress(done, R)
    return out


#: Joint fits start from combinations of each group's best distinct optima: this many per group,
#: and at most `_MAX_JOINT_STARTS` combinations.
_JOINT_OPTIMA_PER_GROUP = 4
_MAX_JOINT_STARTS = 256


def _joint_starts(
    law: Law, layout: Layout, design: FitData, problem: _Problem, starts: np.ndarray, options: FitOptions
) -> np.ndarray:
    """Starts ``(M, S, P)`` for a joint fit with shared parameters.

    Why not the grid itself: with G groups the joint vector has 1 + 4G coordinates and a tied
    grid (every group at the same grid point) spends 4,500 long runs rediscovering each group's
    own optimum. Instead each group gets Hoffmann's full grid on its own, and the joint fit
    starts from every combination of the groups' best distinct optima (shared coordinates
    averaged): sharing E couples the groups through one number, so the joint optimum lies next
    to one of these combinations.
    """
    per_group = _JOINT_OPTIMA_PER_GROUP
    while per_group > 1 and per_group ** len(layout.groups) > _MAX_JOINT_STARTS:
        per_group -= 1
    optima: dict[str, np.ndarray] = {}
    for g in layout.groups:
        gmask = design.group.astype(str) == g
        sub = _build_problem(design.subset(gmask), problem.log_loss[:, gmask], Layout(law, (g,)))
        optima[g] = sub.to_plain(_fit_layout(sub, starts, options, n_optima=per_group).optima_c)  # (M, K, P_law)
    combos = itertools.product(*(range(per_group) for _ in layout.groups))
    joint = [layout.combine({g: optima[g][:, k] for g, k in zip(layout.groups, combo)}) for combo in combos]
    return np.stack(joint, axis=1)  # (M, combinations, P)


def _natural(law: Law, theta_law: np.ndarray) -> dict[str, np.ndarray]:
    """Law-ordered fit coordinates ``(..., n)`` -> reported parameters."""
    return {p.name: p.to_natural(theta_law[..., j]) for j, p in enumerate(law.params)}


def _same_design(a: FitData, b: FitData) -> bool:
    return (
        a.n_points == b.n_points
        and set(a.features) == set(b.features)
        and all(np.array_equal(a.features[k], b.features[k]) for k in b.features)
        and np.array_equal(a.group, b.group)
        and np.array_equal(a.unit, b.unit)
    )


def fit(
    data: FitData,
    law: Law,
    *,
    shared: Sequence[str] = (),
    options: FitOptions | None = None,
    progress: Progress | None = None,
) -> FitResult:
    """Fit ``law`` to every group of ``data``; bootstrap if ``options.bootstrap > 0``.

    ``shared`` names parameters common to all groups (reported or fit names, e.g. ``"E"``).
    """
    return fit_many([data], law, shared=shared, options=options, progress=progress)[0]


def fit_many(
    datasets: Sequence[FitData],
    law: Law,
    *,
    shared: Sequence[str] = (),
    options: FitOptions | None = None,
    progress: Progress | None = None,
) -> list[FitResult]:
    """`fit` for several data sets on one design (same inputs, groups, runs), batched together.

    Data set ``m`` is bootstrapped with its own resamples (one seeded stream for all, in order).
    """
    options = options or FitOptions()
    if options.delta <= 0:
        raise UserInputError("delta", f"the Huber delta must be positive, not {options.delta}", "use e.g. 1e-3")
    if options.bootstrap < 0:
        raise UserInputError("bootstrap", f"the number of resamples cannot be negative ({options.bootstrap})", "use 0 for no bootstrap")
    if options.bootstrap_starts < 1:
        raise UserInputError("bootstrap_starts", "needs at least one start per resample", "use 1 or more")
    if not datasets:
        raise ValueError("fit_many needs at least one data set")
    base = datasets[0]
    for d in datasets:
        validate_for_law(d, law)
        if not _same_design(base, d):
            raise ValueError("fit_many needs data sets with identical inputs, groups and runs; only losses may differ")
    try:
        shared_fit = frozenset(law.param(s).fit_name for s in shared)
    except KeyError as exc:
        raise UserInputError("shared", str(exc.args[0]), f"share one of {', '.join(law.param_names)}") from None
    M = len(datasets)
    groups = base.groups
    log_losses = np.log(np.stack([d.loss for d in datasets]))
    starts = law.start_grid() if options.starts is None else np.atleast_2d(np.asarray(options.starts, dtype=float))
    if starts.shape[-1] != len(law.params):
        raise ValueError(f"starts need {len(law.params)} columns ({', '.join(law.fit_names)}), got {starts.shape[-1]}")
    rng = np.random.default_rng(options.seed)
    joint = bool(shared_fit) and len(groups) > 1
    layouts = [Layout(law, groups, shared_fit)] if joint else [Layout(law, (g,)) for g in groups]

    params: list[dict[str, dict[str, float]]] = [{} for _ in range(M)]
    boot: list[dict[str, dict[str, np.ndarray]]] = [{} for _ in range(M)]
    diagnostics: list[list[dict]] = [[] for _ in range(M)]
    warnings: list[list[str]] = [[] for _ in range(M)]
    total = options.bootstrap * M * len(layouts)
    for i, layout in enumerate(layouts):
        offset = i * options.bootstrap * M
        sub_progress = (lambda d, t, o=offset: progress(o + d, total)) if progress else None
        lf, boot_plain, n_invalid = _solve_layout(law, layout, base, log_losses, starts, joint, options, rng, sub_progress)
        for m in range(M):
            if not lf.in_bounds[m]:
                warnings[m].append(
                    f"no start of {', '.join(layout.groups)} ended inside the parameter bounds {law.bounds}; "
                    "the best out-of-bounds optimum is reported"
                )
            if n_invalid[m]:
                warnings[m].append(f"{int(n_invalid[m])} bootstrap refit(s) of {', '.join(layout.groups)} ended outside the parameter bounds")
            diagnostics[m].append(
                {
                    "groups": list(layout.groups),
                    "objective_huber": float(lf.objective_huber[m]),
                    "n_starts": lf.n_starts,
                    "n_converged": lf.n_converged if M == 1 else None,
                    "stop_reasons": lf.status_counts if M == 1 else None,
                }
            )
            for g in layout.groups:
                cols = layout.group_columns(g)
                params[m][g] = {k: float(v) for k, v in _natural(law, lf.theta[m, cols]).items()}
                if boot_plain is not None:
                    boot[m][g] = _natural(law, boot_plain[m][:, cols])

    return [
        FitResult(
            law=law.name,
            law_input=law.features[0] if law.name in SINGLE_INPUT_LAWS else None,
            formula=law.formula,
            groups={g: _group_fit(law, data.of_group(g), params[m][g], boot[m].get(g)) for g in groups},
            shared=sorted(law.param(s).name for s in shared_fit),
            settings=_settings(options, law, shared_fit, data, len(starts), diagnostics[m], warnings[m]),
        )
        for m, data in enumerate(datasets)
    ]


def _solve_layout(
    law: Law,
    layout: Layout,
    base: FitData,
    log_losses: np.ndarray,
    starts: np.ndarray,
    joint: bool,
    options: FitOptions,
    rng: np.random.Generator,
    progress: Progress | None,
) -> tuple[_LayoutFit, np.ndarray | None, np.ndarray]:
    """Fit one layout for every data set; bootstrap it. Returns the fit, the plain bootstrap
    parameters ``(M, B, P)`` (or None) and per data set the count of out-of-bounds refits."""
    M = log_losses.shape[0]
    mask = np.isin(base.group.astype(str), layout.groups)
    design = base.subset(mask)
    problem = _build_problem(design, log_losses[:, mask], layout)
    layout_starts = _joint_starts(law, layout, design, problem, starts, options) if joint else starts
    lf = _fit_layout(problem, layout_starts, options)
    if options.bootstrap == 0:
        return lf, None, np.zeros(M, dtype=int)
    B = options.bootstrap
    group_index = np.array([layout.groups.index(str(g)) for g in design.group])
    weights = np.concatenate([resample_weights(group_index, design.unit, B, rng) for _ in range(M)])
    boot_flat = _run_bootstrap(
        problem, weights, np.repeat(problem.log_loss, B, axis=0), np.repeat(lf.optima_c, B, axis=0), options, progress
    )
    boot_plain = boot_flat.reshape(M, B, -1)
    n_invalid = (~_in_bounds(boot_plain, problem.lower, problem.upper)).sum(axis=1)
    return lf, boot_plain, n_invalid


def _group_fit(law: Law, data: FitData, params: dict[str, float], draws: dict[str, np.ndarray] | None) -> GroupFit:
    """One group's result: parameters, in-sample errors, residuals and bootstrap summaries."""
    pred = law.predict(params, data.features)
    rel = pred / data.loss - 1.0
    gf = GroupFit(
        params=params,
        n_points=data.n_points,
        residuals_log=(np.log(data.loss) - np.log(pred)).tolist(),
        mean_abs_rel_error=float(np.mean(np.abs(rel))),
        max_abs_rel_error=float(np.max(np.abs(rel))),
    )
    if draws is not None:
        gf.bootstrap = {k: v.tolist() for k, v in draws.items()}
        gf.ci95 = {k: [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))] for k, v in draws.items()}
    else:  # same keys either way; null in JSON says "no bootstrap was run"
        gf.ci95 = {k: [math.nan, math.nan] for k in law.param_names}
    return gf


def _settings(
    options: FitOptions, law: Law, shared_fit: frozenset[str], data: FitData, n_starts: int, fits: list[dict], warnings: list[str]
) -> dict:
    """What produced the fit, recorded with it so a saved result explains itself."""
    return {
        "delta": options.delta,
        "loss": "Huber on log-loss residuals, summed over points",
        "n_starts": n_starts,
        "start_grid": ("law default (Hoffmann et al.)" if options.starts is None else "custom")
        + (" per group; the joint fit starts from combinations of the groups' best optima" if shared_fit else ""),
        "optimizer": "batched L-BFGS (weak Wolfe line search), all starts together",
        "max_iter": options.max_iter,
        "gtol": options.gtol,
        "ftol": options.ftol,
        "bootstrap": options.bootstrap,
        "bootstrap_unit": "runs (points sharing a run id move together)" if len(set(data.unit)) < data.n_points else "rows",
        "bootstrap_starts": options.bootstrap_starts,
        "seed": options.seed,
        "shared": sorted(law.param(s).name for s in shared_fit),
        "fits": fits,
        "warnings": warnings,
    }
