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


def _two_loop(
    g: np.ndarray, S: np.ndarray, Y: np.ndarray, rho: np.ndarray, count: np.ndarray, head: np.ndarray
) -> np.ndarray:
    """Search directions ``-H g`` from each row's own (s, y) history (ring buffers)."""
    n, m, _ = S.shape
    rows = np.arange(n)
    q = g.copy()
    alphas = np.zeros((m, n))
    slots = [(head - 1 - j) % m for j in range(m)]  # newest first
    for j in range(m):
        valid = j < count
        if not valid.any():
            break
        s, y, r = S[rows, slots[j]], Y[rows, slots[j]], np.where(valid, rho[rows, slots[j]], 0.0)
        a = r * np.einsum("ij,ij->i", s, q)
        alphas[j] = a
        q -= a[:, None] * y
    newest = slots[0]
    s0, y0 = S[rows, newest], Y[rows, newest]
    yy = np.einsum("ij,ij->i", y0, y0)
    gamma = np.where(count > 0, np.einsum("ij,ij->i", s0, y0) / np.where(yy > 0, yy, 1.0), 1.0)
    q *= gamma[:, None]
    for j in reversed(range(m)):
        valid = j < count
        if not valid.any():
            continue
        s, y, r = S[rows, slots[j]], Y[rows, slots[j]], np.where(valid, rho[rows, slots[j]], 0.0)
        b = r * np.einsum("ij,ij->i", y, q)
        q += (alphas[j] - b)[:, None] * s
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
        t[gp] = np.where(np.isinf(hi[gp]), 4.0 * tp[grow], 0.5 * (tp[grow] + hi[gp]))
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
    ftol: float = 1e-13,
    max_line_search: int = 40,
    c1: float = 1e-4,
    c2: float = 0.9,
) -> BatchResult:
    """Minimise ``fun`` from every row of ``x0`` (shape ``(S, P)``) as independent L-BFGS runs.

    Stopping, per row: max-abs gradient <= ``gtol``, or relative decrease
    ``(f_k - f_k+1) / max(|f_k|, |f_k+1|, 1) <= ftol`` (scipy's L-BFGS-B test), or
    ``max_iter`` iterations, or a line search that finds no decrease.
    """
    x = np.array(x0, dtype=float)
    n_rows, n_params = x.shape
    all_rows = np.arange(n_rows)
    f, g = fun(x, all_rows)
    n_eval = np.ones(n_rows, dtype=int)
    n_iter = np.zeros(n_rows, dtype=int)
    status = np.zeros(n_rows, dtype=np.int8)
    status[~np.isfinite(f)] = LINE_SEARCH_FAILED
    status[(status == RUNNING) & (np.abs(g).max(axis=1) <= gtol)] = CONVERGED_GTOL
    S = np.zeros((n_rows, memory, n_params))
    Y = np.zeros((n_rows, memory, n_params))
    rho = np.zeros((n_rows, memory))
    count = np.zeros(n_rows, dtype=int)
    head = np.zeros(n_rows, dtype=int)

    for _ in range(max_iter):
        act = np.flatnonzero(status == RUNNING)
        if act.size == 0:
            break
        ga = g[act]
        d = _two_loop(ga, S[act], Y[act], rho[act], count[act], head[act])
        gd = np.einsum("ij,ij->i", ga, d)
        not_descent = ~(gd < 0)
        if not_descent.any():  # stale curvature: restart that row from steepest descent
            d[not_descent] = -ga[not_descent]
            gd[not_descent] = -np.einsum("ij,ij->i", ga[not_descent], ga[not_descent])
            count[act[not_descent]] = 0
        first = count[act] == 0
        t0 = np.where(first, np.minimum(1.0, 1.0 / np.maximum(np.abs(ga).max(axis=1), 1e-300)), 1.0)
        t, f_new, g_new, ok, evaluated = _line_search(
            fun, act, x[act], f[act], d, gd, t0, max_line_search, c1, c2
        )
        n_eval[act] += evaluated
        n_iter[act] += 1
        status[act[~ok]] = LINE_SEARCH_FAILED
        moved = act[ok]
        s_new = t[ok, None] * d[ok]
        y_new = g_new[ok] - g[moved]
        f_old = f[moved]
        x[moved] += s_new
        f[moved], g[moved] = f_new[ok], g_new[ok]
        sy = np.einsum("ij,ij->i", s_new, y_new)
        yy = np.einsum("ij,ij->i", y_new, y_new)
        keep = sy > 1e-12 * yy
        kr = moved[keep]
        S[kr, head[kr]] = s_new[keep]
        Y[kr, head[kr]] = y_new[keep]
        rho[kr, head[kr]] = 1.0 / sy[keep]
        head[kr] = (head[kr] + 1) % memory
        count[kr] = np.minimum(count[kr] + 1, memory)
        gmax = np.abs(g[moved]).max(axis=1)
        small_step = (f_old - f[moved]) <= ftol * np.maximum(np.maximum(np.abs(f_old), np.abs(f[moved])), 1.0)
        status[moved[small_step]] = CONVERGED_FTOL
        status[moved[gmax <= gtol]] = CONVERGED_GTOL
    status[status == RUNNING] = MAX_ITER
    return BatchResult(
        x=x, f=f, grad_max=np.abs(g).max(axis=1), n_iter=n_iter, n_eval=n_eval, status=status
    )
