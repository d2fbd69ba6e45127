"""A study's recorded results -> the points the report fits, and the ones it had to leave out.

Why a separate step: the fit must see only runs that finished their budget with a usable
validation loss, and the report must say which runs were left out and why (a diverged 70M run
silently dropped would bias the law). Reading never changes anything in the store.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from scaling.errors import UserInputError
from scaling.report.schema import DroppedPoint, Point, TrainingCurve, finite_number
from scaling.spec import FitSettings, StudySpec, parse_spec_text
from scaling.study.store import NEEDLE_PREFIX, ResultStore
from scaling.train.learned import not_learned_reason


@dataclass
class StudyResults:
    """What a report is built from: the spec (for the fit settings and model shapes) and the tables."""

    name: str
    root: str
    spec: StudySpec
    trials: Any  # pandas.DataFrame, one row per trial
    curves: Any  # pandas.DataFrame, long format

    @property
    def fit_settings(self) -> FitSettings:
        return self.spec.fit


def load_study(store: ResultStore) -> StudyResults:
    """Read a study's spec and tables; clear errors when the study or its results are missing."""
    if not store.exists():
        raise UserInputError("STUDY", f"no study {store.study!r} under {store.root}",
                             "check the name and --storage (list studies with `mcscale ls --storage ...`)")
    text = store.read_text("spec.yaml")
    if text is None:
        raise UserInputError("STUDY", f"{store.root} has no spec.yaml, so the study's fit settings and model "
                             "shapes are unknown", "run or resume the study with `mcscale run SPEC` first")
    spec = parse_spec_text(text, source=f"{store.root}/spec.yaml", field=f"{store.root}/spec.yaml")
    trials = store.read_trials()
    if trials.empty:
        raise UserInputError("STUDY", f"study {store.study!r} has no recorded trials yet",
                             "run it first (`mcscale run SPEC`), or resume it (`mcscale resume NAME`)")
    return StudyResults(store.study, store.root, spec, trials, store.read_curves())


def _vocab_of(row: Any, default: int | None) -> int | None:
    """The trial's model vocabulary, from its recorded config (else the spec's)."""
    try:
        vocab = json.loads(row.get("config_json") or "{}").get("model", {}).get("vocab_size")
    except (TypeError, ValueError, AttributeError):
        vocab = None
    return int(vocab) if isinstance(vocab, (int, float)) and vocab > 1 else default


def _drop_reason(row: Any, vocab_size: int | None = None) -> str | None:
    """Why a trial cannot be a fit point, or None when it can."""
    status = str(row.get("status") or "unknown")
    if status == "diverged":
        step = finite_number(row.get("diverged_step"))
        return "diverged" + (f" at step {int(step)}" if step is not None else "")
    if status != "completed":
        return f"not finished (status {status})"
    # a run that finished its budget but learned nothing (judged again here, so results recorded
    # before the trial marked it are caught too; the trial's own mark counts as well)
    reason = not_learned_reason(row.get("val_loss"), _vocab_of(row, vocab_size))
    if reason is None and finite_number(row.get("learned")) == 0:
        reason = "learned nothing: the trial marked itself as not beating the uniform predictor"
    if reason is not None:
        return reason
    for column, what in (("val_loss", "validation loss"), ("params_nonembed", "parameter count"),
                         ("tokens", "token count"), ("flops", "FLOP count")):
        value = finite_number(row.get(column))
        if value is None or value <= 0:
            return f"no positive {what} recorded ({column} = {row.get(column)!r})"
    return None


def select_points(results: StudyResults) -> tuple[list[Point], list[DroppedPoint]]:
    """The ladder's finished trials as fit points, in (series, size) order, and the rest with reasons."""
    trials = results.trials
    if "phase" in trials.columns:
        trials = trials[trials["phase"].fillna("ladder") == "ladder"]
    trials = trials.sort_values(["series", "params_nonembed", "seed"], kind="stable", na_position="last")
    needle_cols = [c for c in trials.columns if c.startswith(NEEDLE_PREFIX)]
    data = results.spec.data
    vocab = data.vocab_size or (256 if data.corpus.tokenizer == "bytes" else None)
    points: list[Point] = []
    dropped: list[DroppedPoint] = []
    for _, row in trials.iterrows():
        series = str(row.get("series") or row.get("arch") or "unknown")
        reason = _drop_reason(row, vocab)
        if reason is not None:
            dropped.append(DroppedPoint(str(row["trial_id"]), series, str(row.get("size_label") or "-"), reason))
            continue
        needles = {c[len(NEEDLE_PREFIX):]: float(row[c]) for c in needle_cols if finite_number(row.get(c)) is not None}
        n_seg = finite_number(row.get("n_segments"))
        seed = finite_number(row.get("seed"))
        points.append(Point(
            trial_id=str(row["trial_id"]), series=series, arch=str(row.get("arch") or series),
            strategy=str(row.get("strategy") or "none"), segment_len=str(row.get("segment_len") or "-"),
            n_segments=int(n_seg) if n_seg is not None else 1, size_label=str(row.get("size_label") or "-"),
            params_nonembed=float(row["params_nonembed"]), tokens=float(row["tokens"]), flops=float(row["flops"]),
            val_loss=float(row["val_loss"]), mqar_acc=finite_number(row.get("mqar_acc")), needle_acc=needles,
            seed=int(seed) if seed is not None else None,
        ))
    if not points:
        reasons = sorted({d.reason for d in dropped})
        raise UserInputError("STUDY", f"study {results.name!r} has no finished trial with a validation loss "
                             f"({len(dropped)} left out: {'; '.join(reasons)[:300]})",
                             "finish the ladder first (`mcscale resume NAME`); diverged trials and trials that "
                             "learned nothing need a lower optimizer.lr")
    return points, dropped


def training_curves(results: StudyResults, points: list[Point]) -> list[TrainingCurve]:
    """Validation loss against training FLOPs for every fitted trial (faint lines on the compute plot)."""
    curves = results.curves
    if curves is None or curves.empty:
        return []
    val = curves[curves["metric"] == "val_loss"]
    series_of = {p.trial_id: p.series for p in points}
    out: list[TrainingCurve] = []
    for trial_id, frame in val.groupby("trial_id", sort=True):
        if trial_id not in series_of:
            continue
        frame = frame.sort_values("step")
        ok = frame["flops"].notna() & (frame["flops"] > 0) & frame["value"].notna()
        out.append(TrainingCurve(str(trial_id), series_of[trial_id], frame.loc[ok, "flops"].astype(float).tolist(),
                                 frame.loc[ok, "value"].astype(float).tolist()))
    return out
