"""`mcscale sync`: make a study's MLflow view complete again from what was recorded.

Two sources, in this order:
1. the study's outbox on this machine (`scaling.study.outbox`): MLflow records a driver could not
   deliver while the tracking store was down, including what only the driver saw (the per-step
   training losses);
2. the result store, the source of truth: every trial row gets its run (found by trial id and
   config hash, created when missing), its params, its eval curves at every report step and its
   final status; phase runs are closed to match study.json.

Both are idempotent: a point MLflow holds already is skipped, a finished run stays finished, so
`sync` can be run any time, as often as wanted, and reports only what it added.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from scaling.errors import UserInputError
from scaling.study.outbox import MlflowOutbox, OutboxBusy, outbox_path
from scaling.study.store import ResultStore, is_number
from scaling.study.tracking import STATUS_MAP, StudyTracker

_TAG_FROM_COLUMN = {"arch": "architecture", "mixer": "mixer", "memory": "memory", "strategy": "strategy",
                    "segment_len": "segment_len", "n_segments": "n_segments", "size_label": "size_label",
                    "params_nonembed": "params_nonembed", "seed": "seed", "series": "series",
                    "config_hash": "config_hash", "phase": "phase"}
_PHASE_END = {"complete": "FINISHED", "ladder-complete": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}


@dataclass
class SyncResult:
    """What `sync` added to MLflow."""

    outbox_replayed: int = 0
    outbox_set_aside: int = 0
    outbox_pending: int = 0
    runs_created: int = 0
    runs_closed: int = 0
    points_added: int = 0
    trials: int = 0
    closed: list[str] = field(default_factory=list)  # names of the runs whose status sync changed
    problems: list[str] = field(default_factory=list)


def _tag_value(value) -> str | None:  # noqa: ANN001
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def sync_study(store: ResultStore, storage: str, tracking_uri: str, artifact_location: str | None = None) -> SyncResult:
    """Replay the outbox of `store`'s study, then backfill MLflow from the store (see module docstring)."""
    out = SyncResult()
    tracker = StudyTracker(tracking_uri, store.study, artifact_location=artifact_location)  # an unreachable store is a clear exit-2 error
    path = outbox_path(storage, store.study)
    if Path(path).exists():
        try:
            box = MlflowOutbox(path, tracking_uri, store.study, background=False)
        except OutboxBusy:
            raise UserInputError("STUDY", f"study {store.study!r} is running (its driver holds {path}) and "
                                 "replays MLflow itself", "run `mcscale sync` after the study ends") from None
        try:
            stats = box.replay_now()
            out.outbox_replayed, out.outbox_set_aside, out.outbox_pending = stats.replayed, stats.failed, stats.pending
            out.problems.extend(stats.errors)
            if stats.offline_reason:
                out.problems.append(f"outbox: {stats.offline_reason}")
        finally:
            box.close()

    trials = store.read_trials()
    curves = store.read_curves()
    known = {r.data.tags.get("trial_id") for r in tracker._search("tags.`mcscale.role` = 'trial'")}
    phases = sorted({p for p in trials["phase"].dropna()} if len(trials) else set())
    phases_before = {p for p in phases if tracker._find_phase(p) is not None}
    by_trial = {tid: group for tid, group in curves.groupby("trial_id")} if len(curves) else {}
    for _, row in trials.iterrows():
        trial_id = row["trial_id"]
        tags = {tag: v for column, tag in _TAG_FROM_COLUMN.items() if (v := _tag_value(row.get(column))) is not None}
        try:
            config = json.loads(row.get("config_json") or "{}")
        except json.JSONDecodeError:
            config = {}
        created = trial_id not in known
        run_id = tracker.trial_run(trial_id, row.get("phase") or "ladder", tags, config, reopen=False)
        out.runs_created += created
        group = by_trial.get(trial_id)
        if group is not None:
            for step, points in group.groupby("step"):
                metrics = {m: v for m, v in zip(points["metric"], points["value"]) if is_number(v)}
                first = points.iloc[0]
                for axis in ("tokens", "flops"):
                    if is_number(first[axis]) and not math.isnan(float(first[axis])):
                        metrics[axis] = float(first[axis])
                out.points_added += tracker.log_metrics(run_id, metrics, int(step))
        status = str(row.get("status") or "")
        if status.lower() in STATUS_MAP:
            run = tracker.client.get_run(run_id)
            before = (run.info.status, run.data.tags.get("status"))
            tracker.finish_trial(run_id, status)
            after = tracker.client.get_run(run_id)
            if (after.info.status, after.data.tags.get("status")) != before:
                out.runs_closed += 1
                out.closed.append(f"{trial_id}: {before[0]} -> {after.info.status}")
        out.trials += 1

    state = store.read_json("study.json") or {}
    end = _PHASE_END.get(str(state.get("status")))
    out.runs_created += len(set(phases) - phases_before)
    for phase in phases:
        run = tracker._find_phase(phase)
        if run is None:
            tracker.phase_run(phase)
            out.runs_created += 1
        if end is not None and (run is None or run.info.status != end):
            tracker.finish_phase(phase, end)
            out.runs_closed += 1
            out.closed.append(f"phase {phase}: {run.info.status if run else 'new'} -> {end}")
    return out


__all__ = ["SyncResult", "sync_study"]
