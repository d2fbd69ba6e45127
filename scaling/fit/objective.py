"""Hoffmann et al.'s objective for many starts at once: summed Huber loss on log-loss residuals.

Why this exact objective: it is the one Chinchilla's Approach 3 used (and Epoch AI replicated),
so our optima can be checked against published numbers. Residual ``r = LSE_k(u_k) - log L``;
loss ``sum_i w_i * huber_delta(r_i)``, summed, not averaged, so the balance between the Huber
threshold and the number of points is Hoffmann's.

Values are returned in units of ``delta`` (``huber / delta``): the minimiser is the same, but
the scale of the values and gradients no longer depends on ``delta``, which keeps the
optimiser's tolerances meaningful for any ``delta``.

Everything is vectorised over starts: ``theta`` is ``(S, P)``, each term is one matrix product
with its design matrix, and the gradient is one matrix product per term back.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def huber(residual: np.ndarray, delta: float) -> np.ndarray:
    """Huber loss as Hoffmann et al. define it: quadratic within ``delta``, linear beyond."""
    a = np.abs(residual)
    return np.where(a <= delta, 0.5 * residual**2, delta * (a - 0.5 * delta))


class HuberLSEObjective:
    """``f(theta) = sum_i w_si * huber(LSE_k(theta_s . M_k[i]) - y_i) / delta`` and its gradient.

    ``weights`` (optional, ``(S_total, n)``) gives each start its own point weights: a bootstrap
    resample is a start whose weights are the resample counts. ``log_loss`` is ``(n,)`` for one
    data set or ``(S_total, n)`` to give each start its own observed losses (many simulated data
    sets on one design). ``rows`` passed on each call says which starts the given ``theta`` rows
    are, so the optimiser can evaluate any subset.
    """

    def __init__(
        self,
        designs: Sequence[np.ndarray],
        log_loss: np.ndarray,
        delta: float,
        weights: np.ndarray | None = None,
        block_elements: int = 16384,
    ) -> None:
        if delta <= 0:
            raise ValueError("Huber delta must be positive")
        self.delta = float(delta)
        self.log_loss = np.asarray(log_loss, dtype=float)
        self.weights = None if weights is None else np.asarray(weights, dtype=float)
        self.block_elements = int(block_elements)
        n = self.log_loss.shape[-1]
        designs = [np.ascontiguousarray(M, dtype=float) for M in designs]
        self._designs = designs
        # A term whose design row is the same for every point (e.g. a shared ``e``) is one
        # number per start: no per-point exp needed.
        constant = [bool(np.all(M == M[0])) for M in designs]
        self._varying = [M for M, c in zip(designs, constant) if not c]
        # Augmented transposes: [theta, -shift] @ A_k = theta . M_k - shift in one product.
        self._varying_aug_T = [np.ascontiguousarray(np.vstack([M.T, np.ones((1, n))])) for M in self._varying]
        self._constant_rows = [M[0].copy() for M, c in zip(designs, constant) if c]
        self._column_ranges = [(M.min(axis=0), M.max(axis=0)) for M in designs]
        self.n_stable_rows = 0  # how often the slow elementwise-max path was needed

    def _targets(self, rows: np.ndarray) -> np.ndarray:
        return self.log_loss if self.log_loss.ndim == 1 else self.log_loss[rows]

    def residuals(self, theta: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """``log L_hat - log L`` for each start and point, ``(S, n)``."""
        rows = np.arange(theta.shape[0]) if rows is None else rows
        u = np.stack([theta @ M.T for M in self._designs])
        top = u.max(axis=0)
        return top + np.log(np.exp(u - top).sum(axis=0)) - self._targets(rows)

    def __call__(self, theta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values ``(S,)`` and gradients ``(S, P)`` for the starts ``rows``.

        Evaluated in blocks of rows small enough that the temporaries stay in the CPU cache:
        the work is a chain of elementwise passes, and from main memory it is bandwidth-bound.
        """
        block = max(1, self.block_elements // max(1, self.log_loss.shape[-1]))
        if theta.shape[0] <= block:
            return self._evaluate(theta, rows)
        f = np.empty(theta.shape[0])
        grad = np.empty_like(theta)
        for start in range(0, theta.shape[0], block):
            stop = start + block
            f[start:stop], grad[start:stop] = self._evaluate(theta[start:stop], rows[start:stop])
        return f, grad

    def _evaluate(self, theta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One block, shifted per row by an upper bound of its terms.

        The bound comes from the parameters and each design column's range, so ``exp`` cannot
        overflow and no elementwise max is needed. Rows where the bound is so loose that every
        term of some point underflows are redone with the elementwise-max form.
        """
        with np.errstate(all="ignore"):  # rows that under/overflow are redone below
            f, grad, bad = self._evaluate_fast(theta, rows)
        if bad.any():
            self.n_stable_rows += int(bad.sum())
            with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
                f[bad], grad[bad] = self._evaluate_stable(theta[bad], rows[bad])
        return f, grad

    def _evaluate_fast(self, theta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Values, gradients and a mask of rows whose result is unusable (to redo stably)."""
        s = theta.shape[0]
        # Per term, bounds over points of theta . M_k[i] from each column's range: the upper
        # bounds give the shift; the lower bounds prove no point can underflow entirely.
        shift = np.full(s, -np.inf)
        floor = np.full(s, -np.inf)
        for lo, hi in self._column_ranges:
            a, b = theta * lo, theta * hi
            np.maximum(shift, np.maximum(a, b).sum(axis=1), out=shift)
            np.maximum(floor, np.minimum(a, b).sum(axis=1), out=floor)
        shifted = np.concatenate([theta, -shift[:, None]], axis=1)
        ex = [shifted @ A for A in self._varying_aug_T]
        for e in ex:
            np.exp(e, out=e)
        z = ex[0].copy() if ex else np.zeros((s, self.log_loss.shape[-1]))
        for e in ex[1:]:
            z += e
        const = [np.exp(theta @ m - shift) for m in self._constant_rows]
        if const:
            z += np.sum(const, axis=0)[:, None]
        r = np.log(z)
        r += shift[:, None]
        r -= self._targets(rows)
        bad = ~np.isfinite(shift)
        unproven = ~(floor - shift > -600.0)  # some point might have every term underflow
        if unproven.any():
            bad |= unproven & ~(z.min(axis=1) >= 1e-280)
        point_terms = list(zip(ex, self._varying))
        f, grad = self._huber_and_gradient(theta, rows, r, z, point_terms, list(zip(const, self._constant_rows)))
        return f, grad, bad

    def _evaluate_stable(self, theta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Elementwise-max log-sum-exp: slower, used only where the row bound would underflow."""
        u = [theta @ M.T for M in self._designs]
        top = u[0].copy()
        for uk in u[1:]:
            np.maximum(top, uk, out=top)
        z = np.zeros_like(top)
        for uk in u:
            uk -= top
            np.exp(uk, out=uk)
            z += uk
        r = np.log(z) + top - self._targets(rows)
        return self._huber_and_gradient(theta, rows, r, z, list(zip(u, self._designs)), [])

    def _huber_and_gradient(
        self,
        theta: np.ndarray,
        rows: np.ndarray,
        r: np.ndarray,
        z: np.ndarray,
        point_terms: list[tuple[np.ndarray, np.ndarray]],
        row_terms: list[tuple[np.ndarray, np.ndarray]],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Huber value (units of delta) and gradient.

        ``point_terms``: ``(exp(u_k - shift) per point, M_k)``; ``row_terms``: the same for
        constant terms, one number per row and one design row. Overwrites the exps.
        """
        psi = r * (1.0 / self.delta)
        np.clip(psi, -1.0, 1.0, out=psi)  # d(huber/delta)/dr
        half = psi * (0.5 * self.delta)
        np.subtract(r, half, out=half)  # huber/delta = psi * (r - delta * psi / 2)
        if self.weights is not None:
            psi *= self.weights[rows]
        f = np.einsum("ij,ij->i", psi, half)
        psi /= z  # d(huber/delta)/du_k = psi * exp(u_k - shift)
        grad = np.zeros_like(theta)
        for e, M in point_terms:
            e *= psi
            grad += e @ M
        if row_terms:
            psum = psi.sum(axis=1)
            for c, m in row_terms:
                grad += (c * psum)[:, None] * m[None, :]
        return f, grad
