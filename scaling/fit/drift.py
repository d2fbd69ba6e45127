"""Extrapolation drift as a random effect, and the calibration constants chosen on the public suite.

Why: beyond its largest run, a fitted law drifts away from the truth, and the drift is shared by
every point of a held-out rung (a whole isoFLOP curve shifts together). How fast it drifts is a
property of the study (data, recipe, the form's misfit) that a study with few rungs cannot measure
itself. So the drift scale ``k`` (log *reducible* loss per decade of compute) is treated as a draw
from the distribution of drift scales seen on the public scaling-law suite (`scaling.fit.suite`),
a log-normal fitted by marginal maximum likelihood with the families weighted equally:

* a study whose nested leave-top-rung-out backtests ran weighs its own evidence (the likelihood
  of its nested errors, tempered by `CalibrationConstants.temper` because the nested splits
  overlap) against that distribution: its posterior over ``k``;
* a study with too few rungs for a nested backtest has no evidence of its own: its interval takes
  the whole spread of the suite's distribution (the posterior is the prior), and says so.

The error of a new point at distance ``d > 0`` decades with reducible share ``s = 1 - E / L`` is
``r | k ~ N(0, v0 + tau^2 + (k d s)^2)`` (``v0``: seed noise, lack of fit, parameter and form
variance; ``tau``: a shift of the whole rung that does not grow with distance, fitted with the
distribution of ``k``),
so the predictive error is a scale mixture of normals over the posterior of ``k``: heavier-tailed
the less the study knows about its own drift. Each level's interval is that mixture's own
quantile, times a per-level factor `CalibrationConstants.level_scale` chosen on the suite so that
each of 50/80/90/95% covers what it says (never a t-scaling of the 95% one).

Every number in `CalibrationConstants` (the prior's log-normal, the tempering, the per-level
factors) is chosen by leave-one-family-out cross-validation on the suite (`scaling.fit.lofo`);
the shipped values (``calibration_constants.json`` beside this file) are the same procedure on
all families, written by ``python benchmarks/calibration.py --write-constants``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from scipy import optimize, special

#: Drift scales the posterior is evaluated on (log reducible loss per decade): 0 and 1e-4..3.
K_GRID: np.ndarray = np.concatenate([[0.0], np.geomspace(1e-4, 3.0, 160)])
_LOG_K = np.log(np.maximum(K_GRID, 1e-300))
CONSTANTS_FILE = Path(__file__).with_name("calibration_constants.json")
#: Levels the per-level factors are fitted at; other levels interpolate between them.
LEVELS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)


@dataclass(frozen=True)
class DriftPrior:
    """Log-normal distribution of drift scales ``k`` across studies: ``log k ~ N(mu, sigma)``;
    and ``shift_sd``, the sd of the shift of a whole rung beyond the data that does not grow with
    the distance (an isoFLOP curve a rung up that sits 0.6% off the law, whatever the gap)."""

    mu: float
    sigma: float
    shift_sd: float = 0.0

    def weights(self) -> np.ndarray:
        """Probability of each `K_GRID` value (k = 0 gets none: no law extrapolates perfectly)."""
        z = (_LOG_K[1:] - self.mu) / self.sigma
        w = np.exp(-0.5 * z * z)
        out = np.concatenate([[0.0], w])
        return out / out.sum()

    @property
    def median(self) -> float:
        return math.exp(self.mu)


@dataclass(frozen=True)
class CalibrationConstants:
    """Everything the calibrated intervals take from outside the study (see the module doc)."""

    prior: DriftPrior
    #: power on the study's own nested-backtest likelihood (0: ignore it, 1: full weight)
    temper: float
    #: multiplier of each level's mixture half-width, fitted at `LEVELS`
    level_scale: Mapping[float, float]
    #: power on the inverse nested MSE form weights (0: equal weights, 1: inverse MSE)
    form_temper: float = 1.0
    #: where the numbers came from (families, cases, command); informational
    provenance: Mapping[str, object] = field(default_factory=dict)

    def scale(self, level: float) -> float:
        """The per-level factor at ``level``: linear in the normal quantile between fitted levels."""
        levels = sorted(float(k) for k in self.level_scale)
        values = [float(self.level_scale[k]) for k in sorted(self.level_scale, key=float)]
        if not levels:
            return 1.0
        z = special.ndtri(0.5 + np.asarray(levels) / 2.0)
        return float(np.interp(special.ndtri(0.5 + level / 2.0), z, values))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["level_scale"] = {f"{float(k):g}": float(v) for k, v in self.level_scale.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "CalibrationConstants":
        return cls(prior=DriftPrior(float(d["prior"]["mu"]), float(d["prior"]["sigma"]),
                                    float(d["prior"].get("shift_sd", 0.0))), temper=float(d["temper"]),
                   level_scale={float(k): float(v) for k, v in d["level_scale"].items()},
                   form_temper=float(d.get("form_temper", 1.0)), provenance=dict(d.get("provenance", {})))


#: Before any suite run: the old point prior (0.04 per decade) as a narrow log-normal, no tempering.
FALLBACK = CalibrationConstants(DriftPrior(math.log(0.04), 0.5), temper=1.0, level_scale={lv: 1.0 for lv in LEVELS},
                                provenance={"source": "fallback: no calibration_constants.json"})


def load_constants(path: Path | None = None) -> CalibrationConstants:
    """The shipped constants (``calibration_constants.json``), or `FALLBACK` when absent."""
    p = CONSTANTS_FILE if path is None else Path(path)
    if not p.exists():
        return FALLBACK
    return CalibrationConstants.from_dict(json.loads(p.read_text()))


def save_constants(constants: CalibrationConstants, path: Path | None = None) -> Path:
    p = CONSTANTS_FILE if path is None else Path(path)
    p.write_text(json.dumps(constants.to_dict(), indent=2, sort_keys=True) + "\n")
    return p


# ---------------------------------------------------------------------------- likelihoods
@dataclass(frozen=True)
class Shift:
    """Errors that share one drift draw: one held-out rung (or one nested split) of one group.

    ``r``: log errors log(actual / predicted); ``a``: the drift loading ``d * s`` of each point
    (decades beyond the fit times the reducible share); ``v``: each point's variance without drift;
    ``b``: 1 where the point lies beyond the data (it takes the rung shift), else 0."""

    r: np.ndarray
    a: np.ndarray
    v: np.ndarray
    b: np.ndarray

    @classmethod
    def of(cls, r: Sequence[float], a: Sequence[float], v: Sequence[float] | float) -> "Shift":
        r_, a_ = np.asarray(r, float), np.asarray(a, float)
        return cls(r_, a_, np.broadcast_to(np.maximum(np.asarray(v, float), 1e-12), r_.shape).copy(),
                   (a_ > 0).astype(float))


def _stats(shift: Shift) -> np.ndarray:
    """The five weighted cross-products the likelihood needs: a'a, a'r, b'b, b'r, a'b over v."""
    v, r, a, b = shift.v, shift.r, shift.a, shift.b
    return np.array([np.sum(a * a / v), np.sum(a * r / v), np.sum(b * b / v), np.sum(b * r / v), np.sum(a * b / v)])


def _loglik_from_stats(st: np.ndarray, shift_sd: float, k: np.ndarray) -> np.ndarray:
    """`shift_loglik` from `_stats` rows (``st``: (n, 5)) at each ``k``: (n, len(k))."""
    s_aa, s_ar, s_bb, s_br, s_ab = (st[:, i:i + 1] for i in range(5))
    t2 = shift_sd ** 2
    k2 = np.asarray(k, float)[None, :] ** 2
    det = (1.0 + t2 * s_bb) * (1.0 + k2 * s_aa) - t2 * k2 * s_ab ** 2
    quad = (s_br * ((1.0 + k2 * s_aa) * t2 * s_br - t2 * k2 * s_ab * s_ar)
            + s_ar * (-k2 * t2 * s_ab * s_br + (1.0 + t2 * s_bb) * k2 * s_ar)) / det
    return -0.5 * (np.log(det) - quad)


def shift_loglik(shift: Shift, shift_sd: float = 0.0, k: np.ndarray = K_GRID) -> np.ndarray:
    """log N(r; 0, diag(v) + tau^2 b b^T + k^2 a a^T) at each ``k`` (up to a constant): the points
    move together by ``tau z1 b + k z2 a`` (two shared normals; Woodbury with a 2x2 core)."""
    return _loglik_from_stats(_stats(shift)[None, :], shift_sd, k)[0]


def posterior(prior: DriftPrior, shifts: Sequence[Shift], temper: float) -> np.ndarray:
    """Posterior weights over `K_GRID` given a study's nested shifts (the prior without any)."""
    logw = np.log(np.maximum(prior.weights(), 1e-300))
    if shifts and temper > 0:
        logw = logw + temper * np.sum([shift_loglik(s, prior.shift_sd) for s in shifts], axis=0)
    logw[0] = -np.inf  # k = 0 keeps no mass (its prior weight is 0)
    w = np.exp(logw - np.max(logw))
    return w / w.sum()


def fit_prior(groups: Sequence[Sequence[Shift]], weights: Sequence[float] | None = None,
              sigma_bounds: tuple[float, float] = (0.15, 2.5), shift_bounds: tuple[float, float] = (1e-4, 0.05),
              fit_shift: bool = True) -> DriftPrior:
    """Marginal maximum likelihood log-normal of drift scales (and the rung shift's sd): each entry
    of ``groups`` is one study (its shifts share one ``k``), weighted by ``weights`` (families
    weighted equally)."""
    if not groups:
        raise ValueError("fit_prior needs at least one study")
    w = np.ones(len(groups)) if weights is None else np.asarray(weights, float)

    # per study: its shifts' cross-products (the likelihood at any tau and k is a closed form of them)
    owner = np.concatenate([[i] * len(g) for i, g in enumerate(groups)]).astype(int)
    st = np.array([_stats(s) for g in groups for s in g]).reshape(-1, 5)
    cache: dict[float, np.ndarray] = {}

    def ll_of(tau: float) -> np.ndarray:
        if tau not in cache:
            per_shift = _loglik_from_stats(st, tau, K_GRID[1:])  # k > 0 (the log-normal's support)
            out = np.zeros((len(groups), K_GRID.size - 1))
            np.add.at(out, owner, per_shift)
            cache.clear()
            cache[tau] = out
        return cache[tau]

    def nll(theta: np.ndarray) -> float:
        mu, log_sigma = theta[0], theta[1]
        tau = math.exp(theta[2]) if fit_shift else 0.0
        z = (_LOG_K[1:] - mu) / math.exp(log_sigma)
        logp = -0.5 * z * z
        logp -= special.logsumexp(logp)
        return -float(np.sum(w * special.logsumexp(ll_of(tau) + logp[None, :], axis=1)))

    bounds = [(math.log(1e-4), math.log(3.0)), (math.log(sigma_bounds[0]), math.log(sigma_bounds[1])),
              (math.log(shift_bounds[0]), math.log(shift_bounds[1]))]
    best = None
    # a derivative-free simplex from a few starts: three parameters, a smooth but flat likelihood
    for mu0 in (math.log(0.01), math.log(0.05), math.log(0.2)):
        for s0 in (0.4, 1.2):
            t0 = 0.003 if fit_shift else 1e-4
            res = optimize.minimize(nll, np.array([mu0, math.log(s0), math.log(t0)]), method="Nelder-Mead",
                                    bounds=bounds if fit_shift else bounds[:2] + [(math.log(t0),) * 2],
                                    options={"xatol": 1e-3, "fatol": 1e-7, "maxiter": 600})
            if best is None or res.fun < best.fun:
                best = res
    assert best is not None
    return DriftPrior(float(best.x[0]), float(math.exp(best.x[1])), float(math.exp(best.x[2])) if fit_shift else 0.0)


# ---------------------------------------------------------------------------- intervals
def mixture_halfwidth(weights: np.ndarray, v0: np.ndarray, a: np.ndarray, level: float,
                      shift_sd: float = 0.0) -> np.ndarray:
    """Half-width ``h`` (log-loss units) with P(|r| <= h) = ``level`` for ``r`` a mixture over
    `K_GRID` (``weights``) of N(0, v0 + tau^2 [a > 0] + k^2 a^2), per point (bisection, vectorised)."""
    v0, a = np.atleast_1d(np.asarray(v0, float)), np.atleast_1d(np.asarray(a, float))
    v0 = v0 + shift_sd ** 2 * (a > 0)
    keep = weights > 1e-12
    w, k2 = weights[keep], K_GRID[keep] ** 2
    sd = np.sqrt(np.maximum(v0[:, None] + k2[None, :] * a[:, None] ** 2, 1e-300))  # (n, K)
    lo = np.zeros(v0.size)
    hi = special.ndtri(0.5 + (1.0 - 1e-6) / 2.0) * sd.max(axis=1)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        cover = (w[None, :] * special.erf(mid[:, None] / (sd * math.sqrt(2.0)))).sum(axis=1)
        below = cover < level
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def mean_square(weights: np.ndarray) -> float:
    """E[k^2] under ``weights``: the drift variance per squared decade a variance table shows."""
    return float(np.sum(weights * K_GRID ** 2))


def sample_k(weights: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draws of ``k`` from posterior ``weights`` (for joint draws of several series)."""
    return K_GRID[rng.choice(K_GRID.size, size=size, p=weights)]
