"""Seed noise from intermediate checkpoints: how much a run's evaluated loss scatters around a
smooth curve late in training.

Why: the calibrated intervals (`scaling.fit.calibration`) split the in-sample scatter of a fit
into seed noise (a rerun of the same configuration lands elsewhere) and lack of fit (the form
misses the runs). A study with repeated seeds measures the first directly; most studies run one
seed per configuration, and then the split was unknown and all the scatter was called lack of
fit. But every run is evaluated many times along its training: late in training, where the
curve is smooth and slowly bending, the evaluations scatter around it by the run-to-run noise of
the optimiser's trajectory (the same validation windows are scored each time, so what moves is
the model, as it would between seeds). That scatter is this module's estimate:

1. per run, keep the validation losses of the second half of its training (``LATE_FRACTION``);
2. fit ``log loss = a + b log step + c (log step)^2`` to them by least squares (a smooth curve
   that follows the learning-rate decay's bend over half a run);
3. pool the squared residuals over the runs of a series, with ``n - 3`` degrees of freedom per
   run; runs with fewer than ``MIN_LATE_POINTS`` late evaluations give nothing.

It is a proxy, and says so: checkpoint-to-checkpoint jitter of one trajectory leaves out the
part of seed noise that persists along a run (a lucky initialisation or data order stays lucky),
so it is a lower bound on true seed noise where trajectories differ persistently, and an upper
bound where the smooth curve misses the bend. Repeated seeds, where a study has them, win
(`scaling.fit.calibration.replicate_variance`).

Measured against repeated seeds it is far too small (issue 21: SWLA at the quickstart's 48K rung
ranged 2.198-2.351 nats over 4 seeds, sd ~0.06, where the checkpoint scatter said ~0.01), so the
seed noise it stands for is the scatter times `SEED_TO_CHECKPOINT_SD_RATIO`
(`CheckpointNoise.seed_variance`), and every consumer (the calibration, hence the fitted
intervals, the verdict and the in-range comparison) reads that calibrated value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np

#: The part of a run's training whose evaluations are used (by step): the second half.
LATE_FRACTION = 0.5
#: Evaluations needed in that part for a run to count (3 are spent on the smooth curve).
MIN_LATE_POINTS = 6
#: Seed-to-seed standard deviation of a run's final loss divided by this module's checkpoint-scatter
#: standard deviation, for the same configurations. Measured by benchmarks/mc_vs_base.py: it trains
#: one configuration (base and MC series at one rung) under several seeds, takes the sample standard
#: deviation of the final losses between seeds, and divides it by the pooled late-checkpoint scatter
#: (`checkpoint_noise`) of the same runs. A one-seed study's checkpoint scatter times this ratio is
#: its seed noise ("a proxy calibrated against repeated seeds").
#: Measured (issue 21, this CPU, quickstart settings, 3 seeds per cell, 17 series x cells: 24K at 40
#: tokens/param, 7 series incl. the plain-softmax variants; 12K at 40, 5 series; the quickstart's 48K
#: rung at 10, 5 series): root of the mean seed variance over the mean checkpoint variance 7.8 (per
#: cell 1.6-20.8, median 4.5; the cells pooled alone 5.2, 7.2 and 13.3). Smaller rungs at 10
#: tokens/param have too few late evaluations to measure.
SEED_TO_CHECKPOINT_SD_RATIO = 7.8


@dataclass
class CheckpointNoise:
    """Pooled checkpoint scatter of one series, in log-loss units."""

    variance: float
    dof: int
    n_runs: int  # runs that contributed
    n_skipped: int  # runs with fewer than MIN_LATE_POINTS late evaluations

    @property
    def std(self) -> float:
        return float(np.sqrt(self.variance))

    @property
    def seed_variance(self) -> float:
        """The seed noise this scatter stands for: the variance times the squared calibration
        ratio (`SEED_TO_CHECKPOINT_SD_RATIO`), because the raw scatter understates seed noise."""
        return self.variance * SEED_TO_CHECKPOINT_SD_RATIO ** 2

    def to_dict(self) -> dict:
        return asdict(self)


def late_residuals(steps: Sequence[float], losses: Sequence[float], late_fraction: float = LATE_FRACTION,
                   min_points: int = MIN_LATE_POINTS) -> np.ndarray | None:
    """Residuals of one run's late log losses around their smooth fit; None with too few points."""
    step = np.asarray(steps, dtype=float)
    loss = np.asarray(losses, dtype=float)
    ok = np.isfinite(step) & (step > 0) & np.isfinite(loss) & (loss > 0)
    step, loss = step[ok], loss[ok]
    if step.size == 0:
        return None
    late = step >= (1.0 - late_fraction) * step.max()
    if int(late.sum()) < min_points:
        return None
    x = np.log(step[late])
    y = np.log(loss[late])
    x = (x - x.mean()) / (x.std() or 1.0)  # conditioning only: the fitted curve is the same
    design = np.stack([np.ones_like(x), x, x * x], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return y - design @ coef


def checkpoint_noise(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], series_of: Mapping[str, str],
                     late_fraction: float = LATE_FRACTION, min_points: int = MIN_LATE_POINTS) -> dict[str, CheckpointNoise]:
    """Per series: the pooled late-checkpoint variance of its runs. ``curves``: run id -> (steps,
    validation losses); ``series_of``: run id -> series (runs not in it are ignored). A series
    whose runs all have too few late evaluations gets ``dof = 0`` (not measured)."""
    ss: dict[str, float] = {}
    dof: dict[str, int] = {}
    used: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for run, (steps, losses) in curves.items():
        series = series_of.get(run)
        if series is None:
            continue
        for table in (ss, dof, used, skipped):
            table.setdefault(series, 0)
        r = late_residuals(steps, losses, late_fraction, min_points)
        if r is None:
            skipped[series] += 1
            continue
        ss[series] += float(np.sum(r * r))
        dof[series] += int(r.size - 3)
        used[series] += 1
    return {s: CheckpointNoise(ss[s] / dof[s] if dof[s] else 0.0, dof[s], used[s], skipped[s]) for s in ss}
