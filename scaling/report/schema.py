"""`Report`: everything the extrapolation report says, as plain data that round-trips through JSON.

Why a typed value between analysis and rendering: the HTML page, the Markdown page, the JSON
file and the figures must all show the same numbers. The analysis computes them once into this
structure; the renderers and figure makers only read it, so each can be tested on a `Report`
built by hand, and `report.json` is exactly what the pages were drawn from.

Units are in the field names: ``params_nonembed`` (count), ``tokens``, ``flops`` (training
FLOPs), ``*_bytes``; losses are nats per token on the study's validation split.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from scaling.fit.result import to_jsonable


def finite_number(value: Any) -> float | None:
    """`value` as a finite float, or None (a missing, non-numeric, NaN or infinite cell of a results table)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


#: how `scaling.fit.compare` names targets: at a compute budget ("C=..." for chinchilla, "flops=..." for a
#: power law in compute) and at a size ("N=..." for chinchilla, "params_nonembed=..." for a power law in params)
COMPUTE_TARGET_PREFIXES = ("C=", "flops=")
SIZE_TARGET_PREFIXES = ("N=", "params_nonembed=")


@dataclass
class DroppedPoint:
    """A trial that the fit did not use, and why (diverged, unfinished, no validation loss...)."""

    trial_id: str
    series: str
    size_label: str
    reason: str


@dataclass
class Point:
    """One finished trial as the report uses it (its final evaluation)."""

    trial_id: str
    series: str
    arch: str
    strategy: str
    segment_len: str
    n_segments: int
    size_label: str
    params_nonembed: float
    tokens: float
    flops: float
    val_loss: float
    mqar_acc: float | None = None
    needle_acc: dict[str, float] = field(default_factory=dict)  # context length (as text) -> accuracy
    #: the trial's seed: several points of one series and size label with different seeds are
    #: repeated seeds, whose spread is the seed noise of that rung (None: not recorded)
    seed: int | None = None


@dataclass
class Band:
    """A fitted curve of one series along one axis, with its 95% confidence band (the curve's
    uncertainty) and prediction band (where a new run would land). Bands are None without a bootstrap."""

    series: str
    axis: str  # "flops" or "params_nonembed"
    x: list[float]
    loss: list[float]
    fit_low: list[float] | None = None
    fit_high: list[float] | None = None
    pred_low: list[float] | None = None
    pred_high: list[float] | None = None


@dataclass
class TrainingCurve:
    """Validation loss along one trial's training (from the study's curves/), for the compute plot."""

    trial_id: str
    series: str
    flops: list[float]
    val_loss: list[float]


@dataclass
class ContextCost:
    """Inference cost per token of one series at one context length, at the report's reference size."""

    series: str
    seq_len: int
    params_nonembed: float
    forward_flops_per_token: float
    cached_read_flops_per_token: float
    state_bytes: float
    cache_bytes: float
    transformer_kv_cache_bytes: float  # a Transformer of the same width and depth, for comparison


@dataclass
class TargetRow:
    """One series' predicted loss at one target (a size or a compute budget)."""

    target: str
    series: str
    params_nonembed: float | None
    tokens: float | None
    flops: float | None
    loss: float
    low: float | None
    high: float | None
    pred_low: float | None
    pred_high: float | None
    forms: dict[str, float] = field(default_factory=dict)  # each functional form's own prediction
    unidentified: str | None = None  # why this number is not a result (then it is not shown)


@dataclass
class VersusRow:
    """``series`` minus the baseline at one target: negative means ``series`` has the lower loss."""

    target: str
    series: str
    baseline: str
    difference: float
    low: float | None
    high: float | None
    p_better: float | None  # P(series' loss < baseline's) over the calibrated draws
    family_low: float | None = None  # the interval at the family-wise level "resolved" is judged on
    family_high: float | None = None
    family_level: float | None = None


def resolved(v: VersusRow) -> bool:
    """The difference's calibrated interval at the family-wise level (every series x target
    compared, Bonferroni) excludes zero; the plain 95% interval where no family level exists."""
    low, high = (v.family_low, v.family_high) if v.family_low is not None else (v.low, v.high)
    return low is not None and high is not None and (high < 0 or low > 0)


@dataclass
class CrossoverRow:
    """Where ``series``' curve crosses the baseline's along ``axis``."""

    series: str
    baseline: str
    axis: str
    at: float | None
    low: float | None
    high: float | None
    fraction_of_draws_crossing: float | None
    status: str
    search_range: list[float] | None = None  # [low, high] of the axis searched for a crossing


@dataclass
class RecallPoint:
    """One finished recall-phase trial (a model trained on MQAR itself): its accuracy on held-out
    sequences, its size and its inference memory per sequence (exact byte model, bf16)."""

    trial_id: str
    series: str
    arch: str
    strategy: str
    segment_len: str
    n_segments: int
    d_model: int
    seq_len: int  # context length L
    seed: int
    params_nonembed: float
    state_bytes: float
    cache_bytes: float
    mqar_acc: float
    queries_scored: int = 0  # held-out queries the accuracy was measured on

    @property
    def sequence_bytes(self) -> float:
        return self.state_bytes + self.cache_bytes


@dataclass
class PositionProfile:
    """One finished ladder trial's final evaluation by position (scaling.train.evaluate): its validation
    loss per equal position bucket and, for a gated Memory Caching model, the gate weight its tokens
    give their online memory per segment (mean over the gated layers). Read by the section "Where
    Memory Caching helps" (scaling.report.positions), which compares an MC series with its base
    memory bucket by bucket."""

    trial_id: str
    series: str
    strategy: str  # caching strategy: none, residual, grm, soup, ssc
    size_label: str
    params_nonembed: float
    seed: int
    seq_len: int  # input positions of the validation windows
    val_loss_pos: list[float]  # nats/token per bucket; bucket i holds the positions p with p * buckets // seq_len == i
    segment_bounds: list[int]  # token boundaries [0, ..., seq_len] of the model's segments ([0, seq_len]: none)
    online_gate_seg: list[float] = field(default_factory=list)  # per segment index; [] without gates
    online_gate_init_seg: list[float] = field(default_factory=list)  # the same at initialisation (the bias rule)


@dataclass
class Report:
    """The whole report. ``fit`` is a `FitResult` dict, ``backtest`` a dict with ``split``,
    ``error`` (why it could not run, or None) and per-series ``GroupBacktest`` dicts,
    ``comparison`` a `Comparison` dict (all targets, pairs, crossovers and frontier)."""

    study: str
    generated_at: str
    settings: dict[str, Any]
    verdict: str
    caveats: list[str]
    baseline: str
    series: list[str]
    points: list[Point]
    dropped: list[DroppedPoint]
    fit: dict[str, Any]
    backtest: dict[str, Any]
    comparison: dict[str, Any]
    targets: list[TargetRow]
    versus: list[VersusRow]
    crossovers: list[CrossoverRow]
    bands: list[Band]
    training_curves: list[TrainingCurve]
    costs: list[ContextCost]
    figures: list[str] = field(default_factory=list)  # names of the figures drawn (PNG files beside the report)
    recall: list[RecallPoint] = field(default_factory=list)  # the recall phase's runs (scaling.report.recall)
    positions: list[PositionProfile] = field(default_factory=list)  # loss by position, gate mass (positions.py)
    #: at most five sentences leading the report and ending `mcscale run` (scaling.report.headline.headline)
    headline: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Report":
        kinds = {"points": Point, "dropped": DroppedPoint, "targets": TargetRow, "versus": VersusRow,
                 "crossovers": CrossoverRow, "bands": Band, "training_curves": TrainingCurve, "costs": ContextCost,
                 "recall": RecallPoint, "positions": PositionProfile}
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name, kind in kinds.items():
            values[name] = [kind(**_nan_for_none(item, kind)) for item in data.get(name, [])]
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "Report":
        return cls.from_dict(json.loads(text))


_FLOAT_FIELDS_CACHE: dict[type, set[str]] = {}


def _nan_for_none(item: Mapping[str, Any], kind: type) -> dict[str, Any]:
    """JSON nulls back to NaN for required float fields (strict JSON wrote NaN as null)."""
    if kind not in _FLOAT_FIELDS_CACHE:
        _FLOAT_FIELDS_CACHE[kind] = {f.name for f in fields(kind) if f.type in ("float", float)}
    out = dict(item)
    for name in _FLOAT_FIELDS_CACHE[kind]:
        if out.get(name) is None:
            out[name] = math.nan
    return out
