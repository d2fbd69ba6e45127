"""Where each group's parameters live in the flat vector the optimiser sees.

Why a separate layout: a joint fit across architectures shares some coordinates (above all the
irreducible loss ``e`` for architectures trained on the same data) while ``a, alpha, b, beta``
stay per architecture. The layout turns (law, groups, shared names) into column indices and
builds, for every log-sum-exp term, a design matrix ``M_k`` of shape ``(n_points, n_params)`` so
that term ``k`` of every start is one matrix product ``theta @ M_k.T``. The objective and its
gradient then need no knowledge of laws or groups.

The optimiser works in *centred* coordinates: ``a' = a - alpha * mean(log N)``. That is a linear
change of variables (same minima, same values), but it removes the near-collinearity of
``a`` and ``alpha`` (log N is ~20 for every point) that otherwise makes the Hessian badly
conditioned and L-BFGS slow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from scaling.fit.laws import Law


@dataclass(frozen=True)
class Layout:
    """Columns of the joint parameter vector: one per shared name, one per (group, other name)."""

    law: Law
    groups: tuple[str, ...]
    shared: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        unknown = set(self.shared) - set(self.law.fit_names)
        if unknown:
            raise ValueError(f"cannot share {sorted(unknown)}: law {self.law.name} has {self.law.fit_names}")
        for term in self.law.terms:
            for slope, _ in term.slopes:
                if term.intercept in self.shared and slope not in self.shared:
                    raise ValueError(
                        f"sharing {term.intercept!r} needs {slope!r} shared too: a common scale with "
                        "per-group exponents has no common origin"
                    )

    @property
    def columns(self) -> tuple[tuple[str | None, str], ...]:
        """``(group or None if shared, fit_name)`` per column, shared first."""
        shared = [(None, n) for n in self.law.fit_names if n in self.shared]
        own = [(g, n) for g in self.groups for n in self.law.fit_names if n not in self.shared]
        return tuple(shared + own)

    @property
    def n_params(self) -> int:
        return len(self.columns)

    def index(self, group: str, fit_name: str) -> int:
        """Column of ``fit_name`` as seen by ``group``."""
        key = (None, fit_name) if fit_name in self.shared else (group, fit_name)
        return self.columns.index(key)

    def group_columns(self, group: str) -> list[int]:
        """Columns of the law's parameters for ``group``, in the law's order."""
        return [self.index(group, n) for n in self.law.fit_names]

    def unpack(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """``(..., n_params)`` -> per group ``(..., n_law_params)`` in the law's order."""
        return {g: theta[..., self.group_columns(g)] for g in self.groups}

    def tie(self, per_group_start: np.ndarray) -> np.ndarray:
        """Law-shaped starts ``(S, n_law_params)`` -> joint starts with every group set alike."""
        theta = np.empty((per_group_start.shape[0], self.n_params))
        for g in self.groups:
            theta[:, self.group_columns(g)] = per_group_start
        return theta

    def combine(self, per_group: Mapping[str, np.ndarray]) -> np.ndarray:
        """Per-group law vectors ``(..., n_law_params)`` -> one joint vector; shared columns averaged."""
        first = np.asarray(next(iter(per_group.values())))
        theta = np.zeros(first.shape[:-1] + (self.n_params,))
        counts = np.zeros(self.n_params)
        for g in self.groups:
            for k, col in enumerate(self.group_columns(g)):
                theta[..., col] += np.asarray(per_group[g])[..., k]
                counts[col] += 1.0
        return theta / counts

    def designs(
        self, features: Mapping[str, np.ndarray], group_index: np.ndarray, centers: Mapping[str, float]
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Design matrices in centred coordinates and the map back to plain coordinates.

        Returns ``(designs, T)``: term ``k`` of point ``i`` is ``theta_c @ designs[k][i]`` and the
        plain (Hoffmann) coordinates are ``theta = theta_c @ T.T``.
        """
        n = len(group_index)
        P = self.n_params
        T = np.eye(P)
        designs = []
        for term in self.law.terms:
            M = np.zeros((n, P))
            for gi, g in enumerate(self.groups):
                rows = group_index == gi
                icol = self.index(g, term.intercept)
                M[rows, icol] = 1.0
                for slope, feature in term.slopes:
                    scol = self.index(g, slope)
                    M[rows, scol] = -(np.log(features[feature][rows]) - centers[feature])
                    T[icol, scol] = centers[feature]
            designs.append(M)
        return designs, T


def feature_centers(features: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, float]:
    """Mean log of each feature: the origin of the centred coordinates."""
    return {name: float(np.mean(np.log(features[name]))) for name in names}
