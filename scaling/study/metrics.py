"""Live Prometheus metrics of a study, exported through Ray's metrics API (`ray.util.metrics`).

Why Ray's API and not a Prometheus client of our own: every Ray node already runs a metrics
agent that serves `/metrics` on its export port (`ray start --metrics-export-port`), which a
cluster's Prometheus scrapes for Ray's own metrics (GPU utilisation, memory, ...). Metrics
recorded here ride on the same endpoint, so one scrape job and one Grafana data source show
both, and trials on any node need no port of their own. Ray prefixes every name with `ray_`:
`mcscale_trial_val_loss` is scraped as `ray_mcscale_trial_val_loss`.

Two producers:
* a trial, at every eval (`export_trial_metrics`, called from the Tune reporter): gauges of
  its latest step, throughput, losses, MFU, peak device memory and last checkpoint time, and a
  counter of evals reported, labelled study / series / size / trial;
* the driver (`export_trial_states`, called from its bookkeeping): trials by state.

Metrics never stop a study: a failure to record is logged once and ignored.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Iterable, Mapping

logger = logging.getLogger(__name__)

TRIAL_LABELS = ("study", "series", "size", "trial")
STATE_LABELS = ("study", "state")

TRIAL_GAUGES: dict[str, tuple[str, str]] = {
    # metric name -> (key in the trial's reported metrics, description)
    "mcscale_trial_step": ("step", "Optimiser steps done by the trial."),
    "mcscale_trial_tokens": ("tokens", "Training tokens consumed by the trial."),
    "mcscale_trial_tokens_per_second": ("tokens_per_second", "Training throughput of the trial (tokens/s)."),
    "mcscale_trial_train_loss": ("train_loss", "Training loss (nats/token) at the last eval."),
    "mcscale_trial_val_loss": ("val_loss", "Validation loss (nats/token) at the last eval."),
    "mcscale_trial_mfu": ("mfu", "Model FLOPs utilisation: achieved FLOP/s over the device's peak (0 if unknown)."),
    "mcscale_trial_device_memory_peak_bytes": ("device_memory_peak_bytes",
                                               "Peak device memory of the trial (CUDA allocator, or peak RSS on CPU)."),
    "mcscale_trial_checkpoint_seconds": ("checkpoint_seconds", "Time spent writing the trial's last checkpoint."),
}
EVALS_COUNTER = "mcscale_trial_evals"  # scraped as ray_mcscale_trial_evals_total
STATES_GAUGE = "mcscale_study_trials"
TRIAL_STATES = ("PENDING", "RUNNING", "COMPLETED", "DIVERGED", "STOPPED", "ERROR")
EXPORT_PREFIX = "ray_"  # what Ray's exporter puts before every custom metric name

STATES_EVERY_SECONDS = 1.0  # the driver calls on every Tune loop step; Prometheus scrapes every ~15 s

_metrics: dict[str, Any] = {}  # one metric object per name and process (Ray refuses duplicates)
_warned = False
_states_exported: dict[str, tuple[float, dict[str, int]]] = {}  # study -> (when, counts)


def exported_names() -> list[str]:
    """The names a Prometheus scrape shows for mcscale's own metrics (dashboards query these)."""
    names = [EXPORT_PREFIX + n for n in TRIAL_GAUGES]
    return names + [f"{EXPORT_PREFIX}{EVALS_COUNTER}_total", EXPORT_PREFIX + STATES_GAUGE]


def _metric(name: str, kind: str, description: str, labels: tuple[str, ...]) -> Any:
    if name not in _metrics:
        from ray.util import metrics

        cls = metrics.Counter if kind == "counter" else metrics.Gauge
        _metrics[name] = cls(name, description=description, tag_keys=labels)
    return _metrics[name]


def _guarded(record) -> None:  # noqa: ANN001 - a zero-argument callable
    global _warned
    try:
        record()
    except Exception as exc:  # never let monitoring fail a trial or the driver
        if not _warned:
            logger.warning("mcscale metrics could not be recorded (%s); the study goes on without them", exc)
            _warned = True


def export_trial_metrics(metrics: Mapping[str, Any], study: str, series: str, size: str, trial: str) -> None:
    """Record one eval's metrics of one trial (values that are missing or not numbers are skipped)."""
    tags = {"study": study, "series": series, "size": size, "trial": trial}

    def record() -> None:
        for name, (key, description) in TRIAL_GAUGES.items():
            value = metrics.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                _metric(name, "gauge", description, TRIAL_LABELS).set(float(value), tags=tags)
        _metric(EVALS_COUNTER, "counter", "Evals reported by the trial.", TRIAL_LABELS).inc(1.0, tags=tags)

    _guarded(record)


def count_states(states: Iterable[str]) -> dict[str, int]:
    """Trials per state, with every known state present (a state with no trial reads 0, not absent)."""
    counts = {state: 0 for state in TRIAL_STATES}
    for state in states:
        counts[state.upper()] = counts.get(state.upper(), 0) + 1
    return counts


def export_trial_states(study: str, states: Iterable[str]) -> None:
    """Record the driver's view: how many of the study's trials are in each state (on every change,
    else at most once a second)."""
    now, counts = time.monotonic(), count_states(states)
    when, before = _states_exported.get(study, (-math.inf, {}))
    if counts == before and now - when < STATES_EVERY_SECONDS:
        return
    _states_exported[study] = (now, counts)

    def record() -> None:
        gauge = _metric(STATES_GAUGE, "gauge", "Trials of the study by state (driver's view).", STATE_LABELS)
        for state, count in counts.items():
            gauge.set(float(count), tags={"study": study, "state": state})

    _guarded(record)
