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
    resample is a start whose weights are the resample counts. ``rows`` passed on each call says
    which starts the given ``theta`` rows are, so the optimiser can evaluate any subset.
    """

    def __init__(
        self,
        designs: Sequence[np.ndarray],
        log_loss: np.ndarray,
        delta: float,
        weights: np.ndarray | None = None,
    ) -> None:
        if delta <= 0:
            raise ValueError("Huber delta must be positive")
        self.designs_T = [np.ascontiguousarray(np.asarray(M, dtype=float).T) for M in designs]
        self.designs = [np.ascontiguousarray(M, dtype=float) for M in designs]
        self.log_loss = np.asarray(log_loss, dtype=float)
        self.delta = float(delta)
        self.weights = None if weights is None else np.asarray(weights, dtype=float)

    def residuals(self, theta: np.ndarray) -> np.ndarray:
        """``log L_hat - log L`` for each start and point, ``(S, n)``."""
        u = np.stack([theta @ MT for MT in self.designs_T])
        top = u.max(axis=0)
        return top + np.log(np.exp(u - top).sum(axis=0)) - self.log_loss

    def __call__(self, theta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values ``(S,)`` and gradients ``(S, P)`` for the starts ``rows``."""
        delta = self.delta
        u = [theta @ MT for MT in self.designs_T]
        top = u[0].copy()
        for uk in u[1:]:
            np.maximum(top, uk, out=top)
        z = np.zeros_like(top)
        for uk in u:
            uk -= top
            np.exp(uk, out=uk)  # u now holds exp(u_k - top)
            z += uk
        r = np.log(z)
        r += top
        r -= self.log_loss
        # Huber in units of delta: r^2 / (2 delta) inside, |r| - delta / 2 outside.
        psi = r / delta
        np.clip(psi, -1.0, 1.0, out=psi)  # d huber / d r, in units of delta
        value = r * psi
        value -= 0.5 * delta * psi * psi
        if self.weights is not None:
            w = self.weights[rows]
            value *= w
            psi *= w
        f = value.sum(axis=1)
        psi /= z
        grad = np.zeros_like(theta)
        for uk, M in zip(u, self.designs):
            uk *= psi
            grad += uk @ M
        return f, grad
