"""The report's section "Where Memory Caching helps": MC minus its base memory by position, and how
much of the read MC's gates leave to the online memory.

Why by position: a token in the first segment of an MC model has no cache to read, so there MC
computes what its base memory computes; only later tokens can gain from the caches. The
evaluation (scaling.train.evaluate) scores the validation windows in equal position buckets, the
same for every architecture, so the difference MC minus base reads bucket by bucket: a gap already
in the first bucket says the weights the two share trained differently (the caches cannot cause
it), a gap growing after the first segment is what the caches buy. The gate weight on the online
memory per segment index says how much the read leans on the caches at all (at initialisation it is
the online-gate bias rule's e^b / (e^b + caches), scaling.models.config.online_gate_rule).

Compared at the largest ladder rung that every MC series and its base memory trained (each pair's
own largest common rung where no rung is common to all), as seed means. Studies recorded before
these metrics existed, and studies without an MC series and its base, get no section.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scaling.formatting import signed
from scaling.models.config import GATED_STRATEGIES, ModelConfig
from scaling.report.blocks import FigureRef, Heading, Paragraph, Table
from scaling.report.in_range import base_of
from scaling.report.schema import Point, PositionProfile, Report, finite_number

if TYPE_CHECKING:
    from scaling.report.inputs import StudyResults

GAP_FIGURE = "mc_position_gap.png"
GATE_FIGURE = "online_gate_mass.png"
GAP_TITLE = ("Memory Caching minus its base memory: validation loss by position in the sequence (seed means at the "
             "largest rung both trained); dotted: where each MC series' first segment ends")
GATE_TITLE = ("Gate weight on the online memory per segment index (mean over the gated layers and seeds); dotted: at "
              "initialisation")
POSITION_PREFIX, GATE_PREFIX = "val_loss_pos", "online_gate_seg"


# ---------------------------------------------------------------------------- data
def _series_of(values: Any, prefix: str, count: int) -> list[float] | None:
    """[row[prefix0], ..., row[prefix{count-1}]] when every one is a finite number, else None."""
    out = [finite_number(values.get(f"{prefix}{i}")) for i in range(count)]
    return None if any(v is None for v in out) else out  # type: ignore[return-value]


def online_share_at_init(model: ModelConfig, bounds: list[int]) -> list[float]:
    """Per segment index, the online memory's gate at initialisation with all cached logits at zero:
    e^b / (e^b + n) for the n caches a token of that segment reads (SSC: at most top_k)."""
    share = math.exp(model.online_gate_bias)
    out = []
    for s in range(len(bounds) - 1):
        n = min(s, model.top_k) if model.caching == "ssc" else s
        out.append(share / (share + n))
    return out


def position_profiles(results: "StudyResults", points: list[Point]) -> list[PositionProfile]:
    """The position profiles of the finished ladder trials `points` whose rows carry them (none for
    trials recorded before the evaluation measured them)."""
    trials = results.trials
    if trials is None or trials.empty or not any(str(c).startswith(POSITION_PREFIX) for c in trials.columns):
        return []
    wanted = {p.trial_id: p for p in points}
    out: list[PositionProfile] = []
    for _, row in trials[trials["trial_id"].isin(list(wanted))].iterrows():
        point = wanted[str(row["trial_id"])]
        try:
            config = json.loads(row.get("config_json") or "{}")
            model = ModelConfig(**config["model"])
            buckets = int(config.get("eval_position_buckets") or 0)
        except (KeyError, TypeError, ValueError):
            continue
        losses = _series_of(row, POSITION_PREFIX, buckets) if buckets > 0 else None
        if losses is None:
            continue
        bounds = model.segment_bounds(model.seq_len)
        gates = _series_of(row, GATE_PREFIX, len(bounds) - 1) if model.caching in GATED_STRATEGIES else None
        seed = finite_number(row.get("seed"))
        out.append(PositionProfile(
            trial_id=point.trial_id, series=point.series, strategy=point.strategy, size_label=point.size_label,
            params_nonembed=point.params_nonembed, seed=int(seed) if seed is not None else 0, seq_len=model.seq_len,
            val_loss_pos=losses, segment_bounds=list(bounds), online_gate_seg=gates or [],
            online_gate_init_seg=online_share_at_init(model, bounds) if gates else []))
    return out


def bucket_bounds(seq_len: int, buckets: int) -> list[int]:
    """[0, ..., seq_len]: bucket i holds the positions p with p * buckets // seq_len == i, i.e. from
    ceil(i * seq_len / buckets) (the evaluation's rule, scaling.train.evaluate.position_buckets)."""
    return [-(-i * seq_len // buckets) for i in range(buckets + 1)]


# ---------------------------------------------------------------------------- the comparison
@dataclass(frozen=True)
class PositionGap:
    """An MC series minus its base memory by position at one rung (seed means), with the MC series'
    gate weight on its online memory per segment."""

    series: str
    base: str
    size_label: str
    seeds: int  # runs averaged per series (the fewer of the two)
    seq_len: int
    bounds: list[int]  # bucket boundaries in tokens, [0, ..., seq_len]
    difference: list[float]  # MC minus base per bucket, nats/token
    first_segment_end: int  # the first token that can read a cache
    online_gate: list[float]  # per segment index; [] for a strategy without gates
    online_gate_init: list[float]

    @property
    def mid_tokens(self) -> list[float]:
        """Each bucket's middle position (tokens), the figure's x."""
        return [(a + b - 1) / 2.0 for a, b in zip(self.bounds[:-1], self.bounds[1:])]

    @property
    def after_first_segment(self) -> list[int]:
        """The buckets every token of which reads at least one cache."""
        return [i for i, start in enumerate(self.bounds[:-1]) if start >= self.first_segment_end]


def _mean(rows: list[list[float]]) -> list[float]:
    return [sum(col) / len(col) for col in zip(*rows)]


def _rung_order(profiles: list[PositionProfile], label: str) -> float:
    return max(p.params_nonembed for p in profiles if p.size_label == label)


def position_gaps(report: Report) -> list[PositionGap]:
    """Every MC series with position profiles minus its base memory's, at the largest rung that
    every pair trained (else each pair's own largest common rung); [] without such a pair."""
    profiles = [p for p in report.positions if p.val_loss_pos]
    series_seen = list(dict.fromkeys(p.series for p in profiles))
    order = [s for s in report.series if s in series_seen] + [s for s in series_seen if s not in report.series]
    pairs: dict[str, tuple[str, set[str]]] = {}
    for series in order:
        base = base_of(series)
        mine = [p for p in profiles if p.series == series]
        if mine[0].strategy == "none" or base == series:
            continue
        shapes = {(p.seq_len, len(p.val_loss_pos)) for p in mine}  # comparable: the same buckets
        common = {p.size_label for p in mine} & {q.size_label for q in profiles
                                                 if q.series == base and (q.seq_len, len(q.val_loss_pos)) in shapes}
        if common:
            pairs[series] = (base, common)
    if not pairs:
        return []
    shared = set.intersection(*(labels for _, labels in pairs.values()))
    out = []
    for series, (base, labels) in pairs.items():
        label = max(shared or labels, key=lambda lab: _rung_order(profiles, lab))
        mine = [p for p in profiles if p.series == series and p.size_label == label]
        shape = (mine[0].seq_len, len(mine[0].val_loss_pos))
        mine = [p for p in mine if (p.seq_len, len(p.val_loss_pos)) == shape]
        theirs = [p for p in profiles if p.series == base and p.size_label == label
                  and (p.seq_len, len(p.val_loss_pos)) == shape]
        gated = [p for p in mine if p.online_gate_seg]
        out.append(PositionGap(
            series=series, base=base, size_label=label, seeds=min(len(mine), len(theirs)), seq_len=shape[0],
            bounds=bucket_bounds(*shape),
            difference=[a - b for a, b in zip(_mean([p.val_loss_pos for p in mine]),
                                              _mean([p.val_loss_pos for p in theirs]))],
            first_segment_end=mine[0].segment_bounds[1] if len(mine[0].segment_bounds) > 1 else shape[0],
            online_gate=_mean([p.online_gate_seg for p in gated]) if gated else [],
            online_gate_init=gated[0].online_gate_init_seg if gated else []))
    return out


# ---------------------------------------------------------------------------- text
def _tokens(n: float) -> str:
    return f"{int(n):,}"


def gap_text(g: PositionGap) -> str:
    """The position comparison of one pair, in words, from its numbers: before the first segment ends
    (the buckets wholly inside it; else the first bucket), and where every token reads a cache."""
    early = [i for i in range(len(g.difference)) if g.bounds[i + 1] <= g.first_segment_end]
    only_online = bool(early)
    early = early or [0]
    before = sum(g.difference[i] for i in early) / len(early)
    text = (f"{g.series} is {signed(before)} nats from {g.base} in the first {_tokens(g.bounds[early[-1] + 1])} tokens"
            + (" (where it reads only its online memory)" if only_online else ""))
    late = g.after_first_segment
    if late:
        mean = sum(g.difference[i] for i in late) / len(late)
        text += f", {signed(mean)}" + (" on average" if len(late) > 1 else "")
        text += f" from token {_tokens(g.bounds[late[0]])} on (where every token reads a cache)"
        if len(late) > 1:
            text += f", {signed(g.difference[-1])} in the last {_tokens(g.seq_len - g.bounds[-2])} tokens"
    return text


def gate_text(g: PositionGap) -> str:
    """How much of the read the online memory keeps where there are caches (segments 1 on)."""
    later = g.online_gate[1:]
    if not later:
        return ""

    def span(values: list[float]) -> str:
        return f"{min(values):.2f}-{max(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"

    text = f"{span(later)} of the read in {g.series}'s segments 1-{len(g.online_gate) - 1}"
    init = g.online_gate_init[1:]
    return text + (f" ({span(init)} at initialisation)" if init else "")


def headline(gaps: list[PositionGap]) -> str:
    """The section's paragraph: what the comparison is, then each pair's numbers."""
    labels = list(dict.fromkeys(g.size_label for g in gaps))
    seeds = max(g.seeds for g in gaps)
    where = (f"at {labels[0]}, the largest rung every MC series and its base memory trained" if len(labels) == 1
             else "at each pair's largest common rung (" + ", ".join(f"{g.series}: {g.size_label}" for g in gaps) + ")")
    lead = (f"Validation loss by position, {where}"
            + (f" (means over up to {seeds} seeds)" if seeds > 1 else "") + ". Until an MC model's first segment ends it "
            "reads only its online memory and computes what its base computes, so a gap there comes from the weights "
            "the two share having trained differently, not from the caches; what the caches buy shows after it. ")
    text = lead + "By position: " + "; ".join(gap_text(g) for g in gaps) + "."
    gates = [t for t in (gate_text(g) for g in gaps if g.online_gate) if t]
    if gates:
        text += " Where there are caches to read, the gates (mean over the gated layers) leave the online memory " \
                + "; ".join(gates) + "."
    return text


# ---------------------------------------------------------------------------- the section
def positions_section(report: Report) -> list[Any]:
    """The blocks of the section (empty without an MC series and its base measured by position)."""
    gaps = position_gaps(report)
    if not gaps:
        return []
    blocks: list[Any] = [Heading("Where Memory Caching helps"), Paragraph(headline(gaps))]
    if GAP_FIGURE in report.figures:
        blocks.append(FigureRef(GAP_FIGURE, GAP_TITLE))
    for shape in dict.fromkeys((g.seq_len, len(g.difference)) for g in gaps):
        same = [g for g in gaps if (g.seq_len, len(g.difference)) == shape]
        bounds = same[0].bounds
        blocks.append(Table(
            ["series", "base", "size", "seeds", "first segment (tokens)"]
            + [f"tokens {_tokens(a)}-{_tokens(b - 1)}" for a, b in zip(bounds[:-1], bounds[1:])],
            [[g.series, g.base, g.size_label, str(g.seeds), f"0-{_tokens(g.first_segment_end - 1)}"]
             + [signed(d) for d in g.difference] for g in same],
            "Validation loss of each MC series minus its base memory's (nats/token) in equal position buckets of the "
            f"{_tokens(shape[0])}-token validation windows; seed means of each run's last evaluation, no interval "
            "(the section on what the ladder resolved tests the whole-sequence difference against seed noise)."))
    gated = [g for g in gaps if g.online_gate]
    if gated:
        if GATE_FIGURE in report.figures:
            blocks.append(FigureRef(GATE_FIGURE, GATE_TITLE))
        n = max(len(g.online_gate) for g in gated)
        blocks.append(Table(
            ["series", "size", "seeds"] + [f"segment {s}" for s in range(n)],
            [[g.series, g.size_label, str(g.seeds)]
             + [f"{g.online_gate[s]:.2f} ({g.online_gate_init[s]:.2f})" if s < len(g.online_gate) else ""
                for s in range(n)] for g in gated],
            "Mean gate weight on the online memory of the tokens in each segment (over the gated layers, heads, "
            "validation tokens and seeds); in brackets the value at initialisation, e^b / (e^b + caches read) with b "
            "the online-gate bias. Segment 0 has no cache to read, so its weight is 1."))
    return blocks
