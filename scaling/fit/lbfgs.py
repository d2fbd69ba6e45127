"""Batched L-BFGS: many independent minimisations advanced together with array operations.

Why: Hoffmann et al. minimise from 4,500 starts, and a bootstrap refits hundreds of times. A
Python loop over `scipy.optimize.minimize` spends its time in per-call overhead on a 240-point
problem; here every start is a row of one array, so each step costs a handful of vectorised
operations for all starts at once.

Each row behaves as its own L-BFGS run: its own history of curvature pairs, its own search
direction, its own weak-Wolfe line search (bracketing with safeguarded quadratic interpolation)
and its own stopping test. Rows that stop leave the active set and cost nothing afterwards.
Nothing couples rows except that they share the objective's code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

#: f(theta (s, P), rows (s,)) -> (values (s,), gradients (s, P))
BatchedObjective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

RUNNING, CONVERGED_GTOL, CONVERGED_FTOL, MAX_ITER, LINE_SEARCH_FAILED = 0, 1, 2, 3, 4
STATUS_NAMES = {
    RUNNING: "running",
    CONVERGED_GTOL: "gradient below gtol",
    CONVERGED_FTOL: "relative decrease below ftol",
    MAX_ITER: "iteration limit",
    LINE_SEARCH_FAILED: "line search found no decrease",
}


@dataclass
class BatchResult:
    """Per-row outcome; ``status`` codes are in `STATUS_NAMES`."""

    x: np.ndarray
    f: np.ndarray
    grad_max: np.ndarray
    n_iter: np.ndarray
    n_eval: np.ndarray
    status: np.ndarray

    @property
    def converged(self) -> np.ndarray:
        """Rows that stopped on a tolerance (not on a limit or a failed search)."""
        return (self.status == CONVERGED_GTOL) | (self.status == CONVERGED_FTOL)


def _two_loop(g: np.ndarray, S: np.ndarray, Y: np.ndarray, rho: np.ndarray, gamma: np.ndarray, head: int) -> np.ndarray:
    """Search directions ``-H g`` from each row's own (s, y) history.

    ``S``, ``Y``: ``(m, rows, P)`` ring buffers with one write position for all rows; a row that
    skipped an update (or restarted) has ``rho = 0`` in that slot, which makes the slot a no-op
    for it. ``gamma``: each row's initial inverse-Hessian scale, ``s'y / y'y`` of its newest pair.
    """
    m = S.shape[0]
    q = g.copy()
    slots = [(head - 1 - j) % m for j in range(m)]  # newest first
    alphas = []
    for slot in slots:
        a = rho[slot] * np.einsum("ij,ij->i", S[slot], q)
        alphas.append(a)
        q -= a[:, None] * Y[slot]
    q *= gamma[:, None]
    for slot, a in zip(reversed(slots), reversed(alphas)):
        b = rho[slot] * np.einsum("ij,ij->i", Y[slot], q)
        q += (a - b)[:, None] * S[slot]
    return -q


def _line_search(
    fun: BatchedObjective,
    rows: np.ndarray,
    x: np.ndarray,
    f: np.ndarray,
    d: np.ndarray,
    gd: np.ndarray,
    t0: np.ndarray,
    max_steps: int,
    c1: float,
    c2: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weak-Wolfe search along ``d`` for every row independently.

    Returns step sizes, new values, new gradients, a success mask and each row's number of
    evaluations. A row whose search runs out of steps falls back to the best
    point found with sufficient decrease, if any.
    """
    n = len(rows)
    lo, hi, t = np.zeros(n), np.full(n, np.inf), t0.copy()
    f_lo, gd_lo = f.copy(), gd.copy()
    out_t, out_f = np.zeros(n), f.copy()
    out_g = np.zeros_like(x)
    done = np.zeros(n, dtype=bool)
    have_lo = np.zeros(n, dtype=bool)
    lo_g = np.zeros_like(x)
    pending = np.arange(n)
    evaluated = np.zeros(n, dtype=int)
    for _ in range(max_steps):
        if pending.size == 0:
            break
        tp = t[pending]
        ft, gt = fun(x[pending] + tp[:, None] * d[pending], rows[pending])
        evaluated[pending] += 1
        gdt = np.einsum("ij,ij->i", gt, d[pending])
        finite = np.isfinite(ft) & np.isfinite(gdt)
        armijo = finite & (ft <= f[pending] + c1 * tp * gd[pending])
        curvature = gdt >= c2 * gd[pending]
        accept = armijo & curvature
        acc = pending[accept]
        out_t[acc], out_f[acc], out_g[acc] = tp[accept], ft[accept], gt[accept]
        done[acc] = True
        # Too long: shrink towards lo, by safeguarded quadratic interpolation.
        shrink = ~armijo
        sp = pending[shrink]
        hi[sp] = tp[shrink]
        width = hi[sp] - lo[sp]
        curv = np.where(finite[shrink], ft[shrink], np.inf) - f_lo[sp] - gd_lo[sp] * width
        with np.errstate(divide="ignore", invalid="ignore"):
            t_q = lo[sp] - gd_lo[sp] * width * width / (2.0 * curv)
        t_q = np.where(np.isfinite(t_q), t_q, lo[sp] + 0.5 * width)
        t[sp] = np.clip(t_q, lo[sp] + 0.1 * width, lo[sp] + 0.5 * width)
        # Too short: move lo up, expand (or bisect once bracketed).
        grow = armijo & ~curvature
        gp = pending[grow]
        lo[gp], f_lo[gp], gd_lo[gp] = tp[grow], ft[grow], gdt[grow]
        lo_g[gp] = gt[grow]
        have_lo[gp] = True
        # x10: on this near-piecewise-linear (Huber) objective the slope often stays flat for long
        t[gp] = np.where(np.isinf(hi[gp]), 10.0 * tp[grow], 0.5 * (tp[grow] + hi[gp]))
        pending = pending[~accept]
    fallback = ~done & have_lo
    out_t[fallback], out_f[fallback], out_g[fallback] = lo[fallback], f_lo[fallback], lo_g[fallback]
    return out_t, out_f, out_g, done | fallback, evaluated


def minimize_batched(
    fun: BatchedObjective,
    x0: np.ndarray,
    *,
    memory: int = 10,
    max_iter: int = 1000,
    gtol: float = 1e-7,
    ftol: float = 1e-10,
    max_line_search: int = 20,
    c1: float = 1e-4,
    c2: float = 0.9,
) -> BatchResult:
    """Minimise ``fun`` from every row of ``x0`` (shape ``(S, P)``) as independent L-BFGS runs.

    Stopping, per row: max-abs gradient <= ``gtol``, or relative decrease
    ``(f_k - f_k+1) / max(|f_k|, |f_k+1|, 1) <= ftol`` (scipy's L-BFGS-B test), or
    ``max_iter`` iterations, or a line search that finds no decrease. Finished rows are
    dropped from the working arrays, so the remaining runs cost only what they use.
    """
    x_out = np.array(x0, dtype=float)
    n_rows, n_params = x_out.shape
    f_out, g_out = fun(x_out, np.arange(n_rows))
    n_eval = np.ones(n_rows, dtype=int)
    n_iter = np.zeros(n_rows, dtype=int)
    status = np.zeros(n_rows, dtype=np.int8)
    status[~np.isfinite(f_out)] = LINE_SEARCH_FAILED
    status[(status == RUNNING) & (np.abs(g_out).max(axis=1) <= gtol)] = CONVERGED_GTOL

    # Working state of the rows still running; ``idx`` maps them back to their original row.
    idx = np.flatnonzero(status == RUNNING)
    x, f, g = x_out[idx], f_out[idx], g_out[idx]
    S = np.zeros((memory, idx.size, n_params))
    Y = np.zeros((memory, idx.size, n_params))
    rho = np.zeros((memory, idx.size))  # 0 marks an empty or skipped slot
    gamma = np.ones(idx.size)
    fresh = np.ones(idx.size, dtype=bool)  # no curvature pair kept yet: scale the first step
    head = 0

    for _ in range(max_iter):
        if idx.size == 0:
            break
        d = _two_loop(g, S, Y, rho, gamma, head)
        gd = np.einsum("ij,ij->i", g, d)
        restart = ~(gd < 0)
        if restart.any():  # stale curvature: restart that row from steepest descent
            d[restart] = -g[restart]
            gd[restart] = -np.einsum("ij,ij->i", g[restart], g[restart])
            rho[:, restart] = 0.0
            gamma[restart] = 1.0
            fresh |= restart
        t0 = np.where(fresh, np.minimum(1.0, 1.0 / np.maximum(np.abs(g).max(axis=1), 1e-300)), 1.0)
        t, f_new, g_new, ok, evaluated = _line_search(fun, idx, x, f, d, gd, t0, max_line_search, c1, c2)
        n_eval[idx] += evaluated
        n_iter[idx] += 1

        step = t[:, None] * d
        y = g_new - g
        sy = np.einsum("ij,ij->i", step, y)
        yy = np.einsum("ij,ij->i", y, y)
        store = ok & (sy > 1e-12 * yy) & (yy > 0)
        S[head], Y[head] = step, y
        rho[head] = np.divide(1.0, sy, out=np.zeros_like(sy), where=store)
        gamma = np.where(store, sy / np.where(store, yy, 1.0), gamma)
        fresh &= ~store
        head = (head + 1) % memory

        f_old = f
        x = np.where(ok[:, None], x + step, x)
        f = np.where(ok, f_new, f)
        g = np.where(ok[:, None], g_new, g)
        outcome = np.where(ok, RUNNING, LINE_SEARCH_FAILED).astype(np.int8)
        scale = np.maximum(np.maximum(np.abs(f_old), np.abs(f)), 1.0)
        outcome[ok & (f_old - f <= ftol * scale)] = CONVERGED_FTOL
        outcome[ok & (np.abs(g).max(axis=1) <= gtol)] = CONVERGED_GTOL
        finished = outcome != RUNNING
        if finished.any():
            done = idx[finished]
            x_out[done], f_out[done], g_out[done], status[done] = x[finished], f[finished], g[finished], outcome[finished]
            live = ~finished
            idx, x, f, g = idx[live], x[live], f[live], g[live]
            S, Y, rho = S[:, live], Y[:, live], rho[:, live]
            gamma, fresh = gamma[live], fresh[live]
    x_out[idx], f_out[idx], g_out[idx], status[idx] = x, f, g, MAX_ITER
    return BatchResult(
        x=x_out, f=f_out, grad_max=np.abs(g_out).max(axis=1), n_iter=n_iter, n_eval=n_eval, status=status
    )
