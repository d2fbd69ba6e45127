"""The MLflow outbox: a durable, append-only queue of a study's MLflow writes on the driver's disk.

Why it exists: the result store (Parquet) is the source of truth and MLflow is a view of it, so a
study must never wait for, or die with, its tracking server. The driver's bookkeeping writes the
store first, then hands every MLflow write to this outbox, which returns at once (one SQLite
insert). A background thread replays the records in order whenever the tracking store answers,
probing it every few seconds while it does not; records that are not replayed when the driver
exits stay on disk and the next `mcscale run`, `resume` or `sync` of the study replays them.

Why SQLite: it is in the standard library, survives a killed process (WAL journal, one
transaction per record), and lets `mcscale sync` in another process read what a driver left.
The file is driver-local on purpose (a write to S3 per metric report would be slower than the
MLflow call it replaces): `<storage>/<study>/mlflow-outbox.db` for local storage, else
`$MCSCALE_STATE_DIR` (default `$XDG_STATE_HOME/mcscale`, i.e. ~/.local/state/mcscale) /
`outbox/<bucket>/<prefix>/<study>.db` - never the current directory.

Replays are idempotent, so a record replayed twice (the driver died between the MLflow call and
deleting the record) changes nothing: runs are found by their `trial_id` / `config_hash` tags
(`StudyTracker.trial_run`), metric points at a step MLflow already holds are skipped, finishing a
finished run is a no-op. A record that a reachable server keeps refusing (3 tries) is set aside
in the `failed` table with the error, never retried forever; `mcscale sync` backfills from the
store what such a record would have written.

One process at a time replays an outbox: it holds an exclusive `flock` on `<outbox>.lock` for as
long as it is open, so `mcscale sync` cannot race a running driver into creating a run twice.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROBE_EVERY_S = (2.0, 30.0)  # first and longest wait between probes of a tracking store that is down
MAX_ATTEMPTS = 3  # a record a reachable server refuses this often is set aside (table `failed`)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ops (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, trial_id TEXT,
                                payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS trials (trial_id TEXT PRIMARY KEY, phase TEXT NOT NULL, tags TEXT NOT NULL,
                                   config TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS failed (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, trial_id TEXT, payload TEXT NOT NULL,
                                   error TEXT NOT NULL, failed_at REAL NOT NULL);
"""


class OutboxBusy(RuntimeError):
    """Another process (a running driver) holds this outbox."""


def state_dir() -> Path:
    """mcscale's per-user state folder (not the current directory)."""
    explicit = os.environ.get("MCSCALE_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base).resolve() / "mcscale"


def outbox_path(storage: str, study: str) -> Path:
    """Where the driver keeps the outbox of `study` (see the module docstring)."""
    if storage.startswith("s3://"):
        parts = [p for p in storage[len("s3://"):].split("/") if p not in ("", ".", "..")]
        return state_dir() / "outbox" / Path(*parts) / f"{study}.db"
    if storage.startswith("file://"):
        from urllib.parse import urlparse

        storage = urlparse(storage).path
    return Path(os.path.abspath(os.path.expanduser(storage))) / study / "mlflow-outbox.db"


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=_plain, allow_nan=True)


def _plain(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
    except ImportError:  # pragma: no cover
        pass
    return str(value)


@dataclass
class ReplayStats:
    """What one outbox did in this process: records written to MLflow, set aside, still waiting."""

    replayed: int = 0
    failed: int = 0
    pending: int = 0
    offline_reason: str | None = None
    errors: list[str] = field(default_factory=list)


class MlflowOutbox:
    """Durable MLflow writes of one study, replayed by a background thread (see module docstring)."""

    def __init__(self, path: Path, tracking_uri: str, study: str, background: bool = True,
                 artifact_location: str | None = None) -> None:
        self.path, self.tracking_uri, self.study = Path(path), tracking_uri, study
        self.artifact_location = artifact_location  # where the experiment keeps artifacts, if the outbox creates it
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(f"{self.path}.lock", "a+")  # noqa: SIM115 - held for the outbox's life
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise OutboxBusy(f"{self.path} is in use by another mcscale process (a running study driver)") from None
        self._db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._mutex = threading.Lock()  # one connection, used by the driver thread and the replay thread
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._closed = False
        self._tracker = None
        self._run_ids: dict[str, str] = {}
        self._failed_probes = 0  # connection attempts that found the tracking store down
        self.stats = ReplayStats()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._loop, name=f"mlflow-outbox-{study}", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ recording (never blocks on MLflow)
    def _put(self, kind: str, trial_id: str | None = None, **payload: Any) -> None:
        with self._mutex:
            self._db.execute("INSERT INTO ops (kind, trial_id, payload) VALUES (?, ?, ?)",
                             (kind, trial_id, _json(payload)))
        self._wake.set()

    def trial(self, trial_id: str, phase: str, tags: dict[str, Any], config: dict[str, Any]) -> None:
        """What creating the trial's run needs (its tags and params); recorded once per trial."""
        with self._mutex:
            self._db.execute("INSERT OR REPLACE INTO trials (trial_id, phase, tags, config) VALUES (?, ?, ?, ?)",
                             (trial_id, phase, _json(tags), _json(config)))

    def phase_started(self, phase: str) -> None:
        self._put("phase_start", phase=phase)

    def phase_finished(self, phase: str, status: str = "FINISHED") -> None:
        self._put("phase_finish", phase=phase, status=status)

    def trial_status(self, trial_id: str, status: str) -> None:
        """SCHEDULED or RUNNING (terminal states go through `trial_finished`)."""
        self._put("trial_status", trial_id, status=status)

    def trial_metrics(self, trial_id: str, metrics: dict[str, Any], step: int) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        self._put("trial_metrics", trial_id, metrics=clean, step=int(step))

    def trial_artifact(self, trial_id: str, name: str, obj: Any) -> None:
        self._put("trial_artifact", trial_id, name=name, obj=obj)

    def trial_finished(self, trial_id: str, status: str) -> None:
        self._put("trial_finish", trial_id, status=status)

    # ------------------------------------------------------------------ state
    def pending(self) -> int:
        with self._mutex:
            return int(self._db.execute("SELECT COUNT(*) FROM ops").fetchone()[0])

    def failed(self) -> list[tuple[str, str | None, str]]:
        """(kind, trial_id, error) of the records set aside."""
        with self._mutex:
            return list(self._db.execute("SELECT kind, trial_id, error FROM failed ORDER BY seq"))

    @property
    def online(self) -> bool:
        return self._tracker is not None

    def drain(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for every record to be replayed; True when none is left. Stops
        waiting as soon as a fresh attempt finds the tracking store down."""
        deadline = time.monotonic() + timeout_s
        failed_before = self._failed_probes
        self._wake.set()
        with self._idle:
            while self.pending():
                left = deadline - time.monotonic()
                if left <= 0 or self._closed or self._failed_probes > failed_before:
                    break
                self._idle.wait(min(left, 0.5))
        return self.pending() == 0

    def replay_now(self) -> ReplayStats:
        """Replay in the calling thread until the outbox is empty or the store stops answering."""
        self._replay_all()
        self.stats.pending = self.pending()
        return self.stats

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._mutex:
            self._db.close()
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        finally:
            self._lock_file.close()
        _OPEN.pop(str(self.path), None)

    # ------------------------------------------------------------------ replay
    def _connect(self) -> bool:
        from scaling.study.tracking import StudyTracker, probe_tracking

        if self._tracker is not None:
            return True
        problem = probe_tracking(self.tracking_uri)
        if problem is None:
            try:
                self._tracker = StudyTracker(self.tracking_uri, self.study, artifact_location=self.artifact_location)
                self._run_ids.clear()
                self.stats.offline_reason = None
                return True
            except Exception as exc:  # noqa: BLE001 - MLflow errors of every kind mean "not now"
                problem = f"{type(exc).__name__}: {str(exc)[:300]}"
        self.stats.offline_reason = problem
        self._failed_probes += 1
        return False

    def _loop(self) -> None:
        wait = PROBE_EVERY_S[0]
        while not self._closed:
            self._wake.wait(timeout=wait)
            self._wake.clear()
            if self._closed:
                break
            if self._replay_all():
                wait = PROBE_EVERY_S[0]
            else:
                wait = min(PROBE_EVERY_S[1], wait * 2)

    def _replay_all(self) -> bool:
        """Replay records in order; False when the tracking store does not answer (records kept)."""
        try:
            while not self._closed or self._thread is None:
                with self._mutex:
                    row = self._db.execute("SELECT seq, kind, trial_id, payload, attempts FROM ops "
                                           "ORDER BY seq LIMIT 1").fetchone()
                if row is None:
                    return True
                if not self._connect():
                    return False
                seq, kind, trial_id, payload, attempts = row
                try:
                    self._apply(kind, trial_id, json.loads(payload))
                except Exception as exc:  # noqa: BLE001 - sorted out below: store down, or a bad record
                    self._tracker = None  # re-probe before the next record
                    if not self._connect():
                        return False
                    self._set_aside_or_retry(seq, kind, trial_id, payload, attempts, exc)
                    continue
                with self._mutex:
                    self._db.execute("DELETE FROM ops WHERE seq = ?", (seq,))
                self.stats.replayed += 1
            return True
        finally:
            with self._idle:
                self._idle.notify_all()

    def _set_aside_or_retry(self, seq: int, kind: str, trial_id: str | None, payload: str, attempts: int,
                            exc: Exception) -> None:
        error = f"{type(exc).__name__}: {str(exc)[:500]}"
        with self._mutex:
            if attempts + 1 < MAX_ATTEMPTS:
                self._db.execute("UPDATE ops SET attempts = ? WHERE seq = ?", (attempts + 1, seq))
                return
            self._db.execute("INSERT OR REPLACE INTO failed (seq, kind, trial_id, payload, error, failed_at) "
                             "VALUES (?, ?, ?, ?, ?, ?)", (seq, kind, trial_id, payload, error, time.time()))
            self._db.execute("DELETE FROM ops WHERE seq = ?", (seq,))
        self.stats.failed += 1
        self.stats.errors.append(f"{kind} {trial_id or ''}: {error}")

    def _run_id(self, trial_id: str) -> str:
        if trial_id not in self._run_ids:
            with self._mutex:
                row = self._db.execute("SELECT phase, tags, config FROM trials WHERE trial_id = ?",
                                       (trial_id,)).fetchone()
            if row is None:
                raise KeyError(f"the outbox holds no run description of trial {trial_id}")
            phase, tags, config = row[0], json.loads(row[1]), json.loads(row[2])
            self._run_ids[trial_id] = self._tracker.trial_run(trial_id, phase, tags, config, reopen=False)
        return self._run_ids[trial_id]

    def _apply(self, kind: str, trial_id: str | None, payload: dict[str, Any]) -> None:
        tracker = self._tracker
        if kind == "phase_start":
            tracker.phase_run(payload["phase"])
        elif kind == "phase_finish":
            tracker.phase_run(payload["phase"], reopen=False)
            tracker.finish_phase(payload["phase"], payload["status"])
        elif kind == "trial_status":
            tracker.client.update_run(self._run_id(trial_id), status=payload["status"])
        elif kind == "trial_metrics":
            metrics = {k: v for k, v in payload["metrics"].items() if v is not None}
            tracker.log_metrics(self._run_id(trial_id), metrics, payload["step"])
        elif kind == "trial_artifact":
            tracker.log_artifact_json(self._run_id(trial_id), payload["name"], payload["obj"])
        elif kind == "trial_finish":
            tracker.finish_trial(self._run_id(trial_id), payload["status"])
        else:
            raise ValueError(f"unknown outbox record kind {kind!r}")


_OPEN: dict[str, MlflowOutbox] = {}
_OPEN_LOCK = threading.Lock()


def open_outbox(storage: str, study: str, tracking_uri: str, background: bool = True,
                artifact_location: str | None = None) -> MlflowOutbox:
    """This process's outbox of `study` (one per file: the driver's callbacks share it)."""
    path = outbox_path(storage, study)
    with _OPEN_LOCK:
        box = _OPEN.get(str(path))
        if box is None or box._closed:
            box = MlflowOutbox(path, tracking_uri, study, background=background, artifact_location=artifact_location)
            _OPEN[str(path)] = box
        return box


__all__ = ["MlflowOutbox", "OutboxBusy", "ReplayStats", "open_outbox", "outbox_path", "state_dir"]
