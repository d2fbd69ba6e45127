"""Scaling-law functional forms, all written as a log-sum-exp of terms linear in the parameters.

Why one representation: Hoffmann et al. fit Chinchilla's law as
``log L = LSE(a - alpha log N, b - beta log D, e)`` with ``A = exp(a)``, ``B = exp(b)``,
``E = exp(e)``. Every law here has that shape (a sum of positive power-law terms plus an
irreducible loss), so one estimator, one gradient and one start grid serve them all, and a joint
fit across architectures only has to say which parameters are shared.

A `Law` knows its inputs (named with units: ``params_nonembed``, ``tokens``, ``flops``), its
parameters (natural names ``E``, ``A``, ``B``, ``alpha``, ``beta`` and the coordinates the fit
works in, ``e``, ``a``, ``b``, ``alpha``, ``beta``), their valid ranges, the default start grid and
`predict(params, X)`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from numpy.typing import ArrayLike

#: Hoffmann et al.'s start grid (as replicated by Epoch AI): 5 x 5 x 5 x 6 x 6 = 4,500 starts.
HOFFMANN_EXPONENT_GRID: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
HOFFMANN_E_GRID: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0)
HOFFMANN_SCALE_GRID: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)


@dataclass(frozen=True)
class Param:
    """One parameter: its reported (natural) name, the coordinate the fit uses, and its range.

    ``log_scale`` parameters are fitted as their logarithm (``e = log E``) so they stay
    positive without constraints, as in Hoffmann et al. ``bounds`` are in natural units and mark
    the physically sensible region: the fit is unconstrained (as Hoffmann's), but the best start
    is chosen among optima inside these bounds.
    """

    name: str
    fit_name: str
    log_scale: bool
    bounds: tuple[float, float]
    grid: tuple[float, ...]

    def to_natural(self, value: ArrayLike) -> np.ndarray:
        """Fit coordinate -> reported value (``exp`` for log-scale parameters).

        A fit coordinate past ~709 (a bootstrap refit that ran off, e.g. E = 2.75e-44 traded
        against A = e^800) has no float value: it is inf, which the bounds checks downstream
        reject. That is the intended result, so numpy's overflow warning is not raised for it.
        """
        value = np.asarray(value, dtype=float)
        if not self.log_scale:
            return value
        with np.errstate(over="ignore"):
            return np.exp(value)

    def to_fit(self, value: ArrayLike) -> np.ndarray:
        """Reported value -> fit coordinate."""
        value = np.asarray(value, dtype=float)
        return np.log(value) if self.log_scale else value


@dataclass(frozen=True)
class Term:
    """One exponent inside the log-sum-exp: ``intercept - sum(slope * log(feature))``."""

    intercept: str
    slopes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Law:
    """A scaling law ``L = exp(LSE(terms))``; see the module docstring."""

    name: str
    features: tuple[str, ...]
    params: tuple[Param, ...]
    terms: tuple[Term, ...]
    formula: str

    @property
    def param_names(self) -> tuple[str, ...]:
        """Reported names, e.g. ``("E", "A", "alpha")``."""
        return tuple(p.name for p in self.params)

    @property
    def fit_names(self) -> tuple[str, ...]:
        """Fit coordinates, e.g. ``("e", "a", "alpha")``."""
        return tuple(p.fit_name for p in self.params)

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        """Valid range of each reported parameter."""
        return {p.name: p.bounds for p in self.params}

    def param(self, name: str) -> Param:
        """Look a parameter up by reported or fit name."""
        for p in self.params:
            if name in (p.name, p.fit_name):
                return p
        raise KeyError(f"law {self.name!r} has no parameter {name!r}; it has {self.param_names}")

    def start_grid(self) -> np.ndarray:
        """All combinations of each parameter's grid, shape ``(n_starts, n_params)``, fit coordinates."""
        return np.array(list(itertools.product(*(p.grid for p in self.params))), dtype=float)

    def log_predict(self, params: Mapping[str, ArrayLike], X: Mapping[str, ArrayLike]) -> np.ndarray:
        """``log L`` for reported ``params`` (scalars or broadcastable arrays) at inputs ``X``.

        Arrays broadcast: ``params`` of shape ``(B, 1)`` (bootstrap draws) and ``X`` of shape
        ``(n,)`` give ``(B, n)``.
        """
        # A scale that underflowed to 0 in a bootstrap draw (a term the data switched off) is a
        # log of 0: -inf in the log-sum-exp, i.e. the term contributes nothing, as it should.
        with np.errstate(divide="ignore", over="ignore"):
            fit = {p.fit_name: p.to_fit(params[p.name]) for p in self.params}
        exponents = []
        for term in self.terms:
            u = fit[term.intercept]
            for slope, feature in term.slopes:
                u = u - fit[slope] * np.log(np.asarray(X[feature], dtype=float))
            exponents.append(np.asarray(u, dtype=float))
        stacked = np.stack(np.broadcast_arrays(*exponents))
        top = stacked.max(axis=0)
        return top + np.log(np.exp(stacked - top).sum(axis=0))

    def predict(self, params: Mapping[str, ArrayLike], X: Mapping[str, ArrayLike]) -> np.ndarray:
        """Predicted loss ``L`` (same broadcasting as `log_predict`)."""
        with np.errstate(over="ignore"):  # a run-off parameter predicts inf, rejected by its caller's checks
            return np.exp(self.log_predict(params, X))


_EXPONENT_BOUNDS = (0.0, 3.0)  # a negative exponent means loss grows with scale: not a fit
_LOSS_FLOOR_BOUNDS = (0.0, 20.0)  # nats per token; any real LM loss floor lies well inside
_SCALE_BOUNDS = (0.0, 1e30)


def _e_param() -> Param:
    return Param("E", "e", True, _LOSS_FLOOR_BOUNDS, HOFFMANN_E_GRID)


#: Coarser grids for the forms with more parameters: their start grid is the product of every
#: parameter's grid, and 3 values each keep a 7-parameter form at a few thousand starts.
_COARSE_SCALE_GRID: tuple[float, ...] = (0.0, 10.0, 20.0)
_COARSE_EXPONENT_GRID: tuple[float, ...] = (0.1, 0.5, 1.5)
_COARSE_E_GRID: tuple[float, ...] = (-0.5, 0.5)


def _nd_law(name: str, formula: str, tied: bool = False, second_n: bool = False) -> Law:
    """A law in N and D with a floor: ``E + A / N^alpha + B / D^beta``, with ``beta = alpha``
    (``tied``) or a second term ``A2 / N^alpha2`` (``second_n``, on the coarse grids)."""
    scale, expo, e_grid = ((_COARSE_SCALE_GRID, _COARSE_EXPONENT_GRID, _COARSE_E_GRID) if second_n else
                           (HOFFMANN_SCALE_GRID, HOFFMANN_EXPONENT_GRID, HOFFMANN_E_GRID))
    beta = "alpha" if tied else "beta"
    params = [Param("E", "e", True, _LOSS_FLOOR_BOUNDS, e_grid), Param("A", "a", True, _SCALE_BOUNDS, scale),
              Param("alpha", "alpha", False, _EXPONENT_BOUNDS, expo), Param("B", "b", True, _SCALE_BOUNDS, scale)]
    params += [] if tied else [Param("beta", "beta", False, _EXPONENT_BOUNDS, expo)]
    terms = [Term("a", (("alpha", "params_nonembed"),)), Term("b", ((beta, "tokens"),))]
    if second_n:
        params += [Param("A2", "a2", True, _SCALE_BOUNDS, scale), Param("alpha2", "alpha2", False, _EXPONENT_BOUNDS, expo)]
        terms.append(Term("a2", (("alpha2", "params_nonembed"),)))
    return Law(name, ("params_nonembed", "tokens"), tuple(params), tuple(terms) + (Term("e"),), formula)


CHINCHILLA = _nd_law("chinchilla", "L(N, D) = E + A / N^alpha + B / D^beta")

#: Power-law exponents for compute are small (~0.05), so the grid reaches below Hoffmann's 0.5.
_POWER_EXPONENT_GRID: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0)


def power_law(x: str = "params_nonembed", broken: bool = False) -> Law:
    """``L(x) = E + A * x^(-alpha)`` with ``x`` = ``params_nonembed`` or ``flops``; ``broken`` adds
    ``A2 * x^(-alpha2)`` (a smooth break; named ``broken_power``)."""
    if x not in ("params_nonembed", "flops"):
        raise ValueError(f"power law input must be 'params_nonembed' or 'flops', not {x!r}")
    scale = _COARSE_SCALE_GRID if broken else HOFFMANN_SCALE_GRID
    params = (_e_param(), Param("A", "a", True, _SCALE_BOUNDS, scale),
              Param("alpha", "alpha", False, _EXPONENT_BOUNDS, _POWER_EXPONENT_GRID))
    terms: tuple[Term, ...] = (Term("a", (("alpha", x),)),)
    if broken:
        params += (Param("A2", "a2", True, _SCALE_BOUNDS, scale),
                   Param("alpha2", "alpha2", False, _EXPONENT_BOUNDS, _COARSE_EXPONENT_GRID))
        terms += (Term("a2", (("alpha2", x),)),)
    second = f" + A2 * {x}^(-alpha2)" if broken else ""
    return Law("broken_power" if broken else "power", (x,), params, terms + (Term("e"),),
               f"L({x}) = E + A * {x}^(-alpha){second}")


#: Gadre et al. (2024): Chinchilla's law with one exponent for N and D, which makes the loss a
#: function of compute and the token multiplier D/N alone; one parameter fewer to pin.
GADRE = _nd_law("gadre", "L(N, D) = E + A / N^alpha + B / D^alpha", tied=True)

#: Chinchilla's law with a second power of N: a smoothly broken curve in N (the local exponent
#: moves from one alpha to the other), the simplest way a ladder can bend away from one power.
BROKEN = _nd_law("broken", "L(N, D) = E + A / N^alpha + A2 / N^alpha2 + B / D^beta", second_n=True)


def broken_power_law(x: str = "params_nonembed") -> Law:
    """``L(x) = E + A x^(-alpha) + A2 x^(-alpha2)``: the power law with a smooth break."""
    return power_law(x, broken=True)


LAW_NAMES: tuple[str, ...] = ("chinchilla", "power")
#: Every form the estimator knows, including the alternatives model averaging fits.
ALL_LAW_NAMES: tuple[str, ...] = ("chinchilla", "power", "gadre", "broken", "broken_power")
#: Laws that take one input (``x``): the rest take N and D.
SINGLE_INPUT_LAWS: frozenset[str] = frozenset({"power", "broken_power"})


def get_law(name: str, x: str = "params_nonembed") -> Law:
    """The law called ``name``; ``x`` picks the input of the single-input laws."""
    if name == "chinchilla":
        return CHINCHILLA
    if name == "power":
        return power_law(x)
    if name == "gadre":
        return GADRE
    if name == "broken":
        return BROKEN
    if name == "broken_power":
        return broken_power_law(x)
    raise ValueError(f"unknown law {name!r}; choose one of {LAW_NAMES}")
