"""Which next run buys the most certainty: expected shrinkage of the calibrated interval of the
headline difference per device-hour, for a handful of candidate runs.

Why: a user deciding where to spend a cluster wants to know whether one more rung, more seeds or
another token budget narrows the interval they care about most for the money. The calibrated
variance components (`scaling.fit.calibration`) say where the width comes from; each candidate
changes some of them in a predictable way:

* **the next rung up** (twice the series' largest size on the study's own token rule) moves the
  data's edge ``Delta = log10(C_new / C_max)`` decades closer to the target: the extrapolation,
  parameter and form components scale with the lever arm, ``((d - Delta) / d)^2``, and the
  parameter component also by ``n / (n + 1)``;
* **4x the tokens at the largest size** is the same with ``C_new = 4 C_max``;
* **another seed at the largest size** shrinks the parameter component by ``n / (n + 1)`` and
  measures seed noise, which then leaves the expected loss's interval: at most the seed noise
  the public data show (OLMo reruns differ by 0.015-0.03%, `SEED_NOISE_PRIOR`);
* **another segment length** (caching series only) opens a new series: it informs the segment
  choice but does not narrow the headline difference (shrinkage 0, said so).

The headline difference's width is taken as ``sqrt(L_a^2 V_a + L_b^2 V_b)`` (log-loss variances
of the expected losses; correlation ignored, which only rescales every candidate alike), and a
candidate's value is ``1 - W_new / W``. Device-hours come from the exact FLOPs of the run
(``flops_per_token(N) * tokens``) at ``device_flops_per_second``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Mapping

import numpy as np

from scaling.fit.calibration import ModelAverage

#: Seed-to-seed std of log loss seen in the public data (OLMo ladder reruns: 0.015-0.03%).
SEED_NOISE_PRIOR = 3e-4
#: Default device: an H200 at ~50% of its ~790 TFLOP/s measured bf16 matmul rate.
DEFAULT_DEVICE_FLOPS_PER_SECOND = 4e14

FlopsPerToken = Callable[[np.ndarray], np.ndarray]


@dataclass
class Candidate:
    """One candidate run and what it is expected to buy."""

    action: str
    series: str
    params_nonembed: float
    tokens: float
    flops: float
    device_hours: float
    shrinkage: float  # expected fractional reduction of the headline interval's width
    shrinkage_per_device_hour: float
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SeriesEdge:
    """A series' largest run and its ladder rule: what the next runs would be."""

    params_nonembed: float
    tokens: float
    flops: float
    n_runs: int
    tokens_per_param: float | None  # the study's rule; None for a fixed token budget
    caching: bool


def _variances(model: ModelAverage, series: str, X: Mapping[str, np.ndarray]) -> tuple[float, dict[str, float]]:
    mu, comps = model.components(series, X)
    return float(np.exp(mu[0])), {k: float(v[0]) for k, v in comps.items()}


def _after(comps: dict[str, float], lever: float, n_ratio: float, seed_removed: float) -> dict[str, float]:
    out = dict(comps)
    out["extrapolation"] *= lever
    out["form"] *= lever
    out["parameters"] *= lever * n_ratio
    out["lack of fit"] = max(out["lack of fit"] - seed_removed, 0.0)
    return out


def _width(parts: list[tuple[float, dict[str, float]]]) -> float:
    return math.sqrt(sum(L * L * sum(v for k, v in c.items() if k != "seed noise") for L, c in parts))


def advise(
    model: ModelAverage,
    series_a: str,
    series_b: str,
    X: Mapping[str, Mapping[str, np.ndarray]],
    edges: Mapping[str, SeriesEdge],
    flops_per_token: Mapping[str, FlopsPerToken],
    device_flops_per_second: float = DEFAULT_DEVICE_FLOPS_PER_SECOND,
) -> list[Candidate]:
    """Candidates for ``series_a`` and ``series_b`` (the headline pair), best value per
    device-hour first. ``X[s]``: the target's inputs for series ``s``."""
    state = {s: _variances(model, s, X[s]) for s in (series_a, series_b)}
    base = _width(list(state.values()))
    out: list[Candidate] = []
    for s in (series_a, series_b):
        edge = edges[s]
        d = float(model.distance(s, X[s])[0])
        gc = model.groups[s]

        def shrink(c_new: float, n_added: int, seed_removed: float, s: str = s, d: float = d) -> float:
            delta = max(math.log10(c_new / edge.flops), 0.0) if c_new > 0 else 0.0
            lever = ((max(d - delta, 0.0) / d) ** 2) if d > 0 else 1.0
            L, comps = state[s]
            parts = [(L, _after(comps, lever, edge.n_runs / (edge.n_runs + n_added), seed_removed))]
            parts += [v for k, v in state.items() if k != s]
            return 1.0 - _width(parts) / base if base > 0 else 0.0

        def add(action: str, n: float, tokens: float, value: float, note: str = "") -> None:
            flops = float(np.atleast_1d(flops_per_token[s](np.array([n])))[0]) * tokens
            hours = flops / device_flops_per_second / 3600.0
            out.append(Candidate(action, s, n, tokens, flops, hours, value, value / hours if hours > 0 else math.inf, note))

        n2 = 2.0 * edge.params_nonembed
        d2 = edge.tokens_per_param * n2 if edge.tokens_per_param else edge.tokens
        c2 = float(np.atleast_1d(flops_per_token[s](np.array([n2])))[0]) * d2
        add("next rung up (2x the largest size, the study's token rule)", n2, d2, shrink(c2, 1, 0.0))
        add("4x the tokens at the largest size", edge.params_nonembed, 4.0 * edge.tokens,
            shrink(4.0 * edge.flops, 1, 0.0))
        seed_removed = 0.0 if gc.seed_dof else min(gc.lack_of_fit_var, SEED_NOISE_PRIOR ** 2)
        add("another seed at the largest size", edge.params_nonembed, edge.tokens, shrink(0.0, 1, seed_removed),
            "measures seed noise; the extrapolation does not move")
        if edge.caching:
            add("another segment length at the largest size", edge.params_nonembed, edge.tokens, 0.0,
                "opens a new series (informs the segment choice); does not narrow this difference")
    out.sort(key=lambda c: -c.shrinkage_per_device_hour)
    return out
