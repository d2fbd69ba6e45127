"""A realistic `Report` built by hand from a known law, for the figure and renderer tests.

Why by hand: the renderers and figure makers only read a `Report`, so they can be tested
without training or fitting anything. Every series follows ``loss = E + A * flops^-alpha``
(with 20 tokens per parameter, so ``flops = 120 N^2``) with a per-series ``A`` and a small
deterministic wobble, so the numbers are plausible and the tests are repeatable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from scaling.formatting import sci

from scaling.report.schema import (
    Band,
    ContextCost,
    CrossoverRow,
    DroppedPoint,
    Point,
    PositionProfile,
    Report,
    TargetRow,
    TrainingCurve,
    VersusRow,
)

E = 2.0
ALPHA = 0.2
TOKENS_PER_PARAM = 20.0
TARGET_SIZES = (1.3e9, 7e9, 7e10)
MAX_FLOPS = 1e24
MAX_PARAMS = 7e10
SEQ_LENS = tuple(2 ** k for k in range(10, 18))  # 1024 .. 131072
COST_SIZE = 1.3e9


@dataclass(frozen=True)
class _Series:
    name: str
    arch: str
    strategy: str
    segment_len: str
    n_segments: int
    a: float  # the law's A: lower is better
    size_factor: float  # non-embedding parameters relative to the Transformer at the same label


def _series(segment_sweep: bool) -> list[_Series]:
    out = [
        _Series("transformer", "transformer", "none", "-", 1, 520.0, 1.0),
        _Series("swla", "swla", "none", "-", 1, 540.0, 1.02),
        _Series("swla+grm@C32", "swla+grm", "grm", "32", 8, 490.0, 1.06),
    ]
    if segment_sweep:
        out.append(_Series("swla+grm@C64", "swla+grm", "grm", "64", 4, 500.0, 1.06))
    return out


def _flops(params: Any) -> Any:
    """Training FLOPs at 20 tokens per parameter with 6 N FLOPs per token."""
    return 6.0 * params * TOKENS_PER_PARAM * params


def _law(a: float, flops: np.ndarray | float) -> np.ndarray | float:
    return E + a * np.asarray(flops, dtype=float) ** -ALPHA


def _wobble(i: int, j: int) -> float:
    """A small deterministic log-residual (about +-1%) for size i of series j."""
    return 0.01 * math.sin(1.7 * i + 2.3 * j + 0.4)


def _trial_id(s: _Series, label: str) -> str:
    seg = "na" if s.segment_len == "-" else s.segment_len
    return f"ladder-{s.arch.replace('+', '_')}-c{seg}-{label.lower()}-s0"


def _size_label(params: float) -> str:
    return f"{params / 1e3:.3g}K"


def _points(series: list[_Series], n_sizes: int, recall: bool) -> list[Point]:
    points = []
    for j, s in enumerate(series):
        for i in range(n_sizes):
            base = 8e3 * 2 ** i
            n = base * s.size_factor
            flops = _flops(n)
            loss = float(_law(s.a, flops)) * math.exp(_wobble(i, j))
            cached = 0.08 + 0.01 * s.n_segments if s.strategy == "grm" else 0.0
            mqar = round(min(0.99, 0.15 + 0.18 * i + cached), 3) if recall else None
            penalty = (0.2 if s.arch == "swla" else 0.0) + 0.01 * s.n_segments
            needle = ({str(ctx): round(max(0.0, min(1.0, 0.9 - 0.1 * k + 0.05 * i - penalty)), 3)
                       for k, ctx in enumerate((1024, 4096, 16384))} if recall else {})
            points.append(Point(
                trial_id=_trial_id(s, _size_label(base)), series=s.name, arch=s.arch, strategy=s.strategy,
                segment_len=s.segment_len, n_segments=s.n_segments, size_label=_size_label(base),
                params_nonembed=n, tokens=TOKENS_PER_PARAM * n, flops=flops, val_loss=loss,
                mqar_acc=mqar, needle_acc=needle,
            ))
    return points


#: the position profiles' known numbers (`positions=True`): 8 buckets of 32 tokens of a 256-token window; an
#: MC series is EARLY_GAP above its base before its first segment ends and LATE_GAP[series] below after it
POSITION_SEQ_LEN, POSITION_BUCKETS = 256, 8
EARLY_GAP = 0.01
LATE_GAP = {"swla+grm@C32": -0.03, "swla+grm@C64": -0.02}


def online_gates(segment_len: int) -> tuple[list[float], list[float]]:
    """(trained, at init) gate weight on the online memory per segment of a 256-token window: trained
    0.93 in segment 1 falling by 0.03 a segment; at init e^b / (e^b + s) with e^b = 3 (N - 1)."""
    n = POSITION_SEQ_LEN // segment_len
    share = 3.0 * (n - 1)
    return ([1.0] + [0.93 - 0.03 * (s - 1) for s in range(1, n)], [share / (share + s) for s in range(n)])


def position_profile(point: Point, seed: int = 0, early: float = EARLY_GAP, late: float | None = None) -> PositionProfile:
    """The known position profile of one run: 3.0 - 0.05 i in bucket i, plus an MC series' gap to its base."""
    width = POSITION_SEQ_LEN // POSITION_BUCKETS
    segment = int(point.segment_len) if point.segment_len.isdigit() else POSITION_SEQ_LEN
    late = LATE_GAP.get(point.series, 0.0) if late is None else late
    gap = [0.0 if point.strategy == "none" else (early if i * width < segment else late) for i in range(POSITION_BUCKETS)]
    gates, init = online_gates(segment) if point.strategy == "grm" else ([], [])
    return PositionProfile(
        trial_id=point.trial_id if seed == 0 else point.trial_id.replace("-s0", f"-s{seed}"), series=point.series,
        strategy=point.strategy, size_label=point.size_label, params_nonembed=point.params_nonembed, seed=seed,
        seq_len=POSITION_SEQ_LEN, val_loss_pos=[3.0 - 0.05 * i + d for i, d in enumerate(gap)],
        segment_bounds=list(range(0, POSITION_SEQ_LEN + 1, segment)), online_gate_seg=gates, online_gate_init_seg=init)


def _band(s: _Series, axis: str, x: np.ndarray, with_bootstrap: bool) -> Band:
    """The true law along ``axis`` with bands that widen with the distance from the data."""
    flops = x if axis == "flops" else _flops(x)
    loss = np.asarray(_law(s.a, flops))
    if not with_bootstrap:
        return Band(s.name, axis, x.tolist(), loss.tolist())
    spread = 0.004 * (1.0 + np.log10(x / x[0]))
    noise = spread + 0.012
    return Band(s.name, axis, x.tolist(), loss.tolist(),
                fit_low=(loss * (1 - spread)).tolist(), fit_high=(loss * (1 + spread)).tolist(),
                pred_low=(loss * (1 - noise)).tolist(), pred_high=(loss * (1 + noise)).tolist())


def _bands(series: list[_Series], points: list[Point], with_bootstrap: bool) -> list[Band]:
    out = []
    for s in series:
        mine = [p for p in points if p.series == s.name]
        if not mine:
            continue
        out.append(_band(s, "flops", np.geomspace(min(p.flops for p in mine), MAX_FLOPS, 60), with_bootstrap))
        out.append(_band(s, "params_nonembed",
                         np.geomspace(min(p.params_nonembed for p in mine), MAX_PARAMS, 60), with_bootstrap))
    return out


def _interval(loss: float, with_bootstrap: bool, width: float) -> tuple[float | None, float | None]:
    return (loss * (1 - width), loss * (1 + width)) if with_bootstrap else (None, None)


def _targets(series: list[_Series], with_bootstrap: bool) -> list[TargetRow]:
    rows = []
    for n in TARGET_SIZES:
        for s in series:
            loss = float(_law(s.a, _flops(n)))
            low, high = _interval(loss, with_bootstrap, 0.02)
            plow, phigh = _interval(loss, with_bootstrap, 0.035)
            rows.append(TargetRow(f"N={sci(n)} params, {TOKENS_PER_PARAM:g} tokens/param", s.name, n,
                                  TOKENS_PER_PARAM * n, _flops(n), loss, low, high, plow, phigh))
    for n in TARGET_SIZES:
        c = _flops(n)
        for s in series:
            loss = float(_law(s.a, c))
            low, high = _interval(loss, with_bootstrap, 0.02)
            plow, phigh = _interval(loss, with_bootstrap, 0.035)
            rows.append(TargetRow(f"C={sci(c)} FLOPs, compute-optimal", s.name, n, TOKENS_PER_PARAM * n, c,
                                  loss, low, high, plow, phigh))
    return rows


def _versus(targets: list[TargetRow], baseline: str, with_bootstrap: bool) -> list[VersusRow]:
    base = {r.target: r.loss for r in targets if r.series == baseline}
    rows = []
    for r in targets:
        if r.series == baseline:
            continue
        diff = r.loss - base[r.target]
        low, high = (diff - 0.01, diff + 0.01) if with_bootstrap else (None, None)
        p_better = (0.97 if diff < 0 else 0.08) if with_bootstrap else None
        rows.append(VersusRow(r.target, r.series, baseline, diff, low, high, p_better))
    return rows


def _crossovers(series: list[_Series], baseline: str, with_bootstrap: bool) -> list[CrossoverRow]:
    """Same exponent, different A: the curves never cross."""
    return [CrossoverRow(s.name, baseline, "flops at compute-optimal allocation", None, None, None,
                         0.0 if with_bootstrap else None, "no crossover in range [1e17, 1e27]")
            for s in series if s.name != baseline]


def _training_curves(points: list[Point]) -> list[TrainingCurve]:
    curves = []
    for p in points:
        a = (p.val_loss - E) * p.flops ** ALPHA  # the curve ends on the point
        flops = np.geomspace(p.flops / 40.0, p.flops, 12)
        loss = E + a * flops ** -ALPHA * (1.0 + 0.15 * (1.0 - flops / p.flops))
        curves.append(TrainingCurve(p.trial_id, p.series, flops.tolist(), loss.tolist()))
    return curves


def _costs(series: list[_Series]) -> list[ContextCost]:
    """Per-token inference cost of a 1.3B model (24 layers of width 2048, bf16) per context length."""
    layers, width, heads, head_dim = 24, 2048, 16, 96
    state = float(layers * heads * head_dim * head_dim * 2)
    rows = []
    for s in series:
        for t in SEQ_LENS:
            kv = float(2 * layers * width * t * 2)
            if s.arch == "transformer":
                read = 2.0 * layers * width * t  # attention over the KV cache
                forward, state_b, cache_b = 2 * COST_SIZE + read, 0.0, kv
            else:
                n_cached = t // int(s.segment_len) if s.segment_len.isdigit() else 0
                read = float(2 * layers * heads * head_dim * head_dim * n_cached)  # one read per cached memory
                forward = 2 * COST_SIZE + 4 * layers * width * head_dim + read
                state_b, cache_b = state, state * n_cached
            rows.append(ContextCost(s.name, t, COST_SIZE, float(forward), float(read), state_b, cache_b, kv))
    return rows


def _fit(series: list[_Series], points: list[Point], with_bootstrap: bool) -> dict:
    groups = {}
    for j, s in enumerate(series):
        mine = [p for p in points if p.series == s.name]
        res = [math.log(p.val_loss) - math.log(float(_law(s.a, p.flops))) for p in mine]
        rel = [abs(math.expm1(r)) for r in res]
        params = {"E": E, "A": s.a, "alpha": ALPHA}
        ci = ({k: [v * 0.9, v * 1.1] for k, v in params.items()} if with_bootstrap
              else {k: [None, None] for k in params})
        groups[s.name] = {"params": params, "n_points": len(mine), "ci95": ci, "residuals_log": res,
                          "mean_abs_rel_error": float(np.mean(rel)) if rel else None,
                          "max_abs_rel_error": max(rel) if rel else None, "bootstrap": {}}
    return {"law": "power", "law_input": "flops", "formula": "L = E + A * C^-alpha", "groups": groups,
            "shared": ["E"], "settings": {"n_bootstrap": 200 if with_bootstrap else 0}, "notes": []}


def sample_report(n_sizes: int = 4, with_bootstrap: bool = True, segment_sweep: bool = True,
                  recall: bool = True, costs: bool = True, positions: bool = False) -> Report:
    """A complete, plausible report: 3 series (4 with ``segment_sweep``: swla+grm at C=32 and C=64),
    ``n_sizes`` ladder sizes from 8K non-embedding parameters, doubling; with ``positions`` every run
    has its known position profile (`position_profile`)."""
    series = _series(segment_sweep)
    baseline = "transformer"
    points = _points(series, n_sizes, recall)
    targets = _targets(series, with_bootstrap)
    better = [s.name for s in series if s.a < 520.0]
    return Report(
        study="sample-study",
        generated_at="2024-01-01T00:00:00+00:00",
        settings={"law": "power", "law_input": "flops", "n_bootstrap": 200 if with_bootstrap else 0,
                  "target_sizes": list(TARGET_SIZES), "tokens_per_param": TOKENS_PER_PARAM},
        verdict=(f"{', '.join(better)} reach a lower loss than the Transformer at every target; "
                 "the gap is stable from the ladder out to 7e10 parameters."),
        caveats=["Extrapolated over five orders of magnitude of compute: treat the targets as indicative.",
                 "One seed per size."],
        baseline=baseline,
        series=[s.name for s in series],
        points=points,
        dropped=[DroppedPoint("ladder-swla-cna-128k-s0", "swla", "128K", "diverged (non-finite loss at step 1200)")],
        fit=_fit(series, points, with_bootstrap),
        backtest={"split": "fit on all but the largest size, predict the largest", "error": None, "groups": {}},
        comparison={},
        targets=targets,
        versus=_versus(targets, baseline, with_bootstrap),
        crossovers=_crossovers(series, baseline, with_bootstrap),
        bands=_bands(series, points, with_bootstrap),
        training_curves=_training_curves(points),
        costs=_costs(series) if costs else [],
        positions=[position_profile(p) for p in points] if positions else [],
    )


def on_the_shared_floor(report: Report) -> Report:
    """The degenerate case the quickstart's power law produced: every series' prediction at every
    target sits on the shared floor E, so the fit's differences there are ~1e-5 with P(lower)
    ~50% by construction. Marks the report as `scaling.report.analysis` does for such a fit (the
    floor-bound targets, the finding, the versus rows and their raw differences removed), with
    the degenerate numbers kept in the target rows so a test can check that none is printed."""
    from scaling.fit.degenerate import diagnose_floor_bound

    for t in report.targets:
        t.loss = E * (1.0 + 1e-5 * (1 + report.series.index(t.series)))
    losses = {name: {t.series: t.loss for t in report.targets if t.target == name}
              for name in dict.fromkeys(t.target for t in report.targets)}
    report.settings["floor_bound_targets"] = list(losses)
    report.settings["unidentified"] = [f.to_dict() for f in diagnose_floor_bound(losses, E)]
    report.settings["advice"] = {"candidates": [], "why": "there is no headline difference to narrow"}
    report.versus = []
    report.crossovers = []
    return report
