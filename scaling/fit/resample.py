"""Bootstrap resampling of whole runs, as point weights.

Why whole runs: checkpoints of one training run share its seed, data order and learning-rate
schedule, so they are not independent observations; resampling them one by one would make the
intervals far too narrow. A resample draws runs (units) with replacement, within each group so
every architecture keeps its number of runs, and becomes a weight per point: the number of
times its run was drawn. Weights let all resamples share one design and be solved as one
batched problem.
"""

from __future__ import annotations

import numpy as np


def resample_weights(group: np.ndarray, unit: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_resamples, n_points)`` counts: each group's units drawn with replacement."""
    n = len(group)
    weights = np.zeros((n_resamples, n))
    for g in sorted(set(group.tolist())):
        rows = np.flatnonzero(group == g)
        units, codes = np.unique(unit[rows], return_inverse=True)
        counts = rng.multinomial(len(units), np.full(len(units), 1.0 / len(units)), size=n_resamples)
        weights[:, rows] = counts[:, codes]
    return weights
