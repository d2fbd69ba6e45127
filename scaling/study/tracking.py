"""MLflow tracking for a study, batched, from the Ray Tune driver process.

One MLflow experiment per study (named after it); one parent run per phase ("tune", "ladder", "fit"),
reused when a study resumes; one child run per trial (tag `mlflow.parentRunId`), continued - never
duplicated - when the trial resumes, is re-reported or the driver restarts. Everything goes through
`mlflow.tracking.MlflowClient` (no global `mlflow.start_run` state, since the driver handles many trials
at once) and every report is one `log_batch` request (split only where MLflow's limits demand: 1,000
metrics or 100 params per request), because one request per metric through a server is ~100x slower.

A metric point is logged at most once per (run, key, step): when a trial resumes from a checkpoint and
re-reports steps that MLflow already holds, those points are skipped, so curves never show doubles.

Tracking URIs: `sqlite:///<path>/mlflow.db` is the local default (`default_tracking_uri`); any
`http(s)://` tracking server, `postgresql+psycopg2://...` and other MLflow backends work as well.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Iterable

from scaling.errors import UserInputError
from scaling.redact import redact_text, redact_uri
from scaling.study.store import is_number

ROLE_TAG = "mcscale.role"  # "phase" for a phase parent run, "trial" for a trial run
PHASE_TAG, TRIAL_TAG, STATUS_TAG, PARENT_TAG = "phase", "trial_id", "status", "mlflow.parentRunId"
MAX_PARAM_VALUE = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
MAX_TAG_VALUE = 8000
MAX_KEY = 250
PARAMS_PER_BATCH = 100  # MAX_PARAMS_TAGS_PER_BATCH
METRICS_PER_BATCH = 1000  # MAX_METRICS_PER_BATCH / MAX_ENTITIES_PER_BATCH
STEP_LOSS_KEY = "train_loss_step"
# MLflow 3's UI opens an experiment on its GenAI overview unless this tag says it trains models
# (the values are the UI's ExperimentKind: mlflow/server/js, "custom_model_development").
EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
TRUNCATED = "...[truncated]"

# mcscale trial status -> (MLflow run status, value of the `status` tag)
STATUS_MAP = {
    "completed": ("FINISHED", "completed"),
    "finished": ("FINISHED", "completed"),
    "diverged": ("FAILED", "diverged"),
    "stopped": ("KILLED", "stopped"),
    "killed": ("KILLED", "stopped"),
    "error": ("FAILED", "error"),
    "errored": ("FAILED", "error"),
    "failed": ("FAILED", "error"),
    "interrupted": ("KILLED", "interrupted"),  # the study was stopped (SIGINT/SIGTERM) mid-trial
}
_NOT_METRICS = {"step", "status", "train_loss_steps"}
_TERMINAL = {"FINISHED", "FAILED", "KILLED"}


def default_tracking_uri(storage_root_local: str) -> str:
    """The local default: `sqlite:///<absolute storage folder>/mlflow.db` (the folder is created)."""
    if "://" in str(storage_root_local):
        raise UserInputError("tracking_uri",
                             f"the default MLflow store needs a local folder, not {storage_root_local!r}",
                             "set tracking_uri (e.g. http://mlflow:5000) or keep results under a local storage folder")
    folder = Path(os.path.expanduser(str(storage_root_local))).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


# ============================================================================ reachability
PROBE_TIMEOUT_S = 5.0  # how long mcscale waits to decide that a tracking server is down
# MLflow's own client retries an http server for ~4 minutes by default (7 retries, backoff factor 2);
# the driver only ever calls MLflow from its outbox thread, which retries on its own schedule, so
# each call is allowed a couple of quick retries and a bounded timeout instead.
FAIL_FAST_MLFLOW_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
_DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def fail_fast_mlflow_calls() -> None:
    """Bound MLflow's http retries in this process (a user's explicit setting wins)."""
    for name, value in FAIL_FAST_MLFLOW_ENV.items():
        os.environ.setdefault(name, value)


def probe_tracking(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the tracking store at `uri` cannot be reached right now, or None when it answers.

    Seconds, not minutes: an http(s) server must answer `/health`; a database URI (postgresql,
    mysql, ...) must accept a TCP connection on its host and port (MLflow's SQLAlchemy store would
    otherwise retry for minutes with waits growing to 51 s); sqlite and file stores are local.
    """
    import socket
    from urllib.parse import urlsplit

    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else "file"
    if scheme in ("http", "https"):
        import requests

        try:
            response = requests.get(uri.rstrip("/") + "/health", timeout=timeout_s)
        except requests.RequestException as exc:
            return f"no answer from {redact_uri(uri)} ({type(exc).__name__})"
        return None if response.status_code < 500 else f"{redact_uri(uri)} answered HTTP {response.status_code}"
    if scheme in _DB_PORTS:
        parts = urlsplit(uri)
        host, port = parts.hostname or "localhost", parts.port or _DB_PORTS[scheme]
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return None
        except OSError as exc:
            return f"no database answers at {host}:{port} ({type(exc).__name__}: {exc.strerror or exc})"
    return None


def _client_uri(uri: str) -> str:
    """The URI handed to MlflowClient: a PostgreSQL URI gets a connect timeout (psycopg2's
    `connect_timeout`), so a database that goes away mid-study fails a call in seconds."""
    if uri.startswith("postgresql") and "connect_timeout=" not in uri:
        return uri + ("&" if "?" in uri else "?") + "connect_timeout=10"
    return uri


# ============================================================================ helpers
def _now_ms() -> int:
    return int(time.time() * 1000)


_BAD_KEY_CHARS = re.compile(r"[^\w.\- /]")


def _key(name: str) -> str:
    """A valid MLflow param/metric key: allowed characters only, no empty or dot path segments."""
    key = _BAD_KEY_CHARS.sub("_", str(name))
    parts = [p if p not in ("", ".", "..") else "_" for p in key.split("/")]
    key = "/".join(parts)
    return key[:MAX_KEY]


def _truncate(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - len(TRUNCATED)] + TRUNCATED


def _param_value(value: Any) -> str:
    if isinstance(value, (list, tuple, set)):
        text = json.dumps(list(value), default=str)
    elif isinstance(value, dict):  # only an empty dict gets here (non-empty ones are flattened)
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return _truncate(text, MAX_PARAM_VALUE)


def flatten_params(config: dict, prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: dot-separated keys, lists as JSON, values cut to 6,000 characters."""
    out: dict[str, str] = {}
    for name, value in (config or {}).items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if isinstance(value, dict) and value:
            out.update(flatten_params(value, key))
        else:
            out[_key(key)] = _param_value(value)
    return out


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _quote(value: str) -> str:
    if "'" in value or "\\" in value:
        raise UserInputError("trial_id", f"{value!r} contains a quote or backslash",
                             "use letters, digits, dashes, dots and underscores in trial ids and phases")
    return f"'{value}'"


# ============================================================================ the tracker
class StudyTracker:
    """MLflow bookkeeping of one study: experiment, phase parents, trial children, batched metrics."""

    def __init__(self, tracking_uri: str, study: str, artifact_location: str | None = None) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.study = study
        # MLflow prints "View run ... at: <tracking URI>" on stdout for server URIs: with the URI's password.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self._check_reachable(tracking_uri)
        if tracking_uri.startswith("sqlite:///"):
            db = tracking_uri[len("sqlite:///"):]
            if db and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)
                if artifact_location is None:  # else MLflow puts artifacts under ./mlruns of the current folder
                    artifact_location = (Path(db).parent / "mlartifacts").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=_client_uri(tracking_uri))
        try:
            self.experiment_id = self._experiment(study, artifact_location)
        except MlflowException as exc:
            raise UserInputError("tracking_uri", f"MLflow at {redact_uri(tracking_uri)} refused the study's "
                                 f"experiment: {redact_text(str(exc))}",
                                 "check the tracking URI and that the server or database is reachable "
                                 "and writable") from None
        self._phase_runs: dict[str, str] = {}
        self._logged_max: dict[str, dict[str, int]] = {}  # run_id -> metric key -> highest step logged

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _check_reachable(uri: str) -> None:
        problem = probe_tracking(uri)
        if problem is not None:
            raise UserInputError("tracking_uri", f"the MLflow tracking store cannot be reached: {problem}",
                                 "start the server (mlflow server --host ... --port ...) or the database, or fix "
                                 "tracking_uri; leave tracking_uri unset to record to a local SQLite store")

    def _experiment(self, name: str, artifact_location: str | None) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            try:
                return self.client.create_experiment(name, artifact_location=artifact_location,
                                                     tags={"mcscale.study": name,
                                                           EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
            except MlflowException:  # created concurrently by another driver
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise
        if exp.lifecycle_stage != "active":
            raise UserInputError("name", f"MLflow experiment {name!r} (id {exp.experiment_id}) is deleted, so the "
                                 "study cannot record into it",
                                 f"restore it (mlflow experiments restore --experiment-id {exp.experiment_id}), "
                                 "purge it for good (mlflow gc) or give the study another name")
        if EXPERIMENT_KIND_TAG not in exp.tags:  # an experiment made before mcscale tagged its kind
            self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        return exp.experiment_id

    # ------------------------------------------------------------------ lookups
    def _search(self, filter_string: str) -> list:
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=1000,
                                           order_by=["attributes.start_time ASC"], page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def _find_phase(self, phase: str):
        runs = self._search(f"tags.`{ROLE_TAG}` = 'phase' and tags.{PHASE_TAG} = {_quote(phase)}")
        return runs[0] if runs else None

    def _find_trial(self, trial_id: str, config_hash: str | None):
        runs = self._search(f"tags.`{ROLE_TAG}` = 'trial' and tags.{TRIAL_TAG} = {_quote(trial_id)}")
        if config_hash:
            runs = [r for r in runs if r.data.tags.get("config_hash") in (None, config_hash)]
        return runs[0] if runs else None

    def find_trial_run(self, trial_id: str, config_hash: str | None = None) -> str | None:
        """The run id of a trial's existing run, without reopening it (None when there is none)."""
        run = self._find_trial(trial_id, config_hash)
        return run.info.run_id if run is not None else None

    def _usable(self, run_id: str, trial_id: str, config_hash: str | None):
        """The run `run_id` if it exists, is active, belongs to this experiment and to this trial."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None
        tags = run.data.tags
        if (run.info.experiment_id != self.experiment_id or run.info.lifecycle_stage != "active"
                or tags.get(TRIAL_TAG, trial_id) != trial_id
                or (config_hash and tags.get("config_hash", config_hash) != config_hash)):
            return None
        return run

    def _reopen(self, run) -> None:
        if run.info.status != "RUNNING":
            self.client.update_run(run.info.run_id, status="RUNNING")

    # ------------------------------------------------------------------ runs
    def phase_run(self, phase: str, reopen: bool = True) -> str:
        """The parent run of `phase`, created once and reused on resume (found by its tags); an
        existing one is marked RUNNING again unless `reopen` is False."""
        if phase in self._phase_runs:
            return self._phase_runs[phase]
        run = self._find_phase(phase)
        if run is None:
            run = self.client.create_run(self.experiment_id, run_name=phase,
                                         tags={ROLE_TAG: "phase", PHASE_TAG: phase, "mcscale.study": self.study})
        elif reopen:
            self._reopen(run)
        self._phase_runs[phase] = run.info.run_id
        return run.info.run_id

    def trial_run(self, trial_id: str, phase: str, tags: dict[str, str], config: dict,
                  existing_run_id: str | None = None, reopen: bool = True) -> str:
        """The child run of `trial_id` under the `phase` parent, continued if it exists, else created.

        Looked up first by `existing_run_id` (the id a trial keeps in its checkpoint), then by the
        `trial_id` tag in this experiment (a run for the same trial id but another `config_hash` tag is
        another trial: an edited spec). Params are the flattened config; a continued run only gets the
        params it lacks (MLflow params are immutable). The run is (re)marked RUNNING unless `reopen`
        is False (a replayed record that only needs to find the run).
        """
        parent = self.phase_run(phase, reopen=reopen)
        config_hash = (tags or {}).get("config_hash")
        run = self._usable(existing_run_id, trial_id, config_hash) if existing_run_id else None
        if run is None:
            run = self._find_trial(trial_id, config_hash)
        all_tags = {str(k): _truncate(str(v), MAX_TAG_VALUE) for k, v in (tags or {}).items()}
        all_tags.update({TRIAL_TAG: trial_id, PHASE_TAG: phase, ROLE_TAG: "trial", PARENT_TAG: parent,
                         "mcscale.study": self.study})
        params = flatten_params(config)
        if run is None:
            run = self.client.create_run(self.experiment_id, run_name=run_name(trial_id, tags, config), tags=all_tags)
            run_id = run.info.run_id
            self._logged_max[run_id] = {}
            existing_params: dict[str, str] = {}
        else:
            run_id = run.info.run_id
            if reopen:
                self._reopen(run)
            stale = {k: v for k, v in all_tags.items() if run.data.tags.get(k) != v}
            if stale:
                self._log_tags(run_id, stale)
            existing_params = dict(run.data.params)
            self._logged_max[run_id] = self._high_water(run)
        missing = [(k, v) for k, v in params.items() if k not in existing_params]
        self._log_params(run_id, missing)
        return run_id

    def _log_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, v) for k, v in tags.items()]
        for chunk in _chunks(items, PARAMS_PER_BATCH):
            self.client.log_batch(run_id, tags=chunk)

    def _log_params(self, run_id: str, params: list[tuple[str, str]]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params]
        for chunk in _chunks(items, PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=chunk)

    def _high_water(self, run) -> dict[str, int]:
        """Highest logged step per metric key of `run` (MLflow's latest metric is the one at the highest step)."""
        objs = getattr(run.data, "_metric_objs", None)
        if objs is not None:
            return {m.key: int(m.step) for m in objs}
        out = {}
        for key in run.data.metrics:
            history = self.client.get_metric_history(run.info.run_id, key)
            if history:
                out[key] = max(int(m.step) for m in history)
        return out

    # ------------------------------------------------------------------ metrics and artifacts
    def log_metrics(self, run_id: str, metrics: dict, step: int) -> int:
        """Every numeric metric of a report at `step`, plus `train_loss_steps` as `train_loss_step` per step.

        One `log_batch` request (more only past MLflow's 1,000-metric limit). Points at a step that this
        run already holds for that key (a resumed trial re-reporting) are skipped. Returns how many
        points were logged.
        """
        from mlflow.entities import Metric

        if run_id not in self._logged_max:
            self._logged_max[run_id] = self._high_water(self.client.get_run(run_id))
        done = self._logged_max[run_id]
        ts, step = _now_ms(), int(step)
        points: list[Metric] = []
        for name, value in (metrics or {}).items():
            if name in _NOT_METRICS or not is_number(value):
                continue
            key = _key(name)
            if step > done.get(key, -1):
                points.append(Metric(key, float(value), ts, step))
        step_losses = {}
        for item in (metrics or {}).get("train_loss_steps") or ():
            try:
                s, loss = int(item[0]), float(item[1])
            except (TypeError, ValueError, IndexError):
                continue
            if s > done.get(STEP_LOSS_KEY, -1):
                step_losses[s] = loss  # one point per step (the last given)
        points.extend(Metric(STEP_LOSS_KEY, loss, ts, s) for s, loss in sorted(step_losses.items()))
        for chunk in _chunks(points, METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=chunk)
        for m in points:
            if m.step > done.get(m.key, -1):
                done[m.key] = m.step
        return len(points)

    def log_artifact_json(self, run_id: str, name: str, obj: Any) -> None:
        """`obj` as a JSON artifact of the run (e.g. the trial's final checkpoint summary)."""
        if not name.endswith(".json"):
            name += ".json"
        self.client.log_text(run_id, json.dumps(obj, indent=2, sort_keys=True, default=_json_default), name)

    def log_report(self, run_id: str, folder: str, metrics: dict[str, float], note: str) -> None:
        """A report's files as artifacts under `report/`, its headline numbers as metrics and its verdict
        as the run's description. Each new report logs its metrics one step after the last, so the
        run keeps the history of re-made reports instead of silently dropping the update."""
        from mlflow.entities import Metric

        run = self.client.get_run(run_id)
        history = self._high_water(run)
        step = max(history.values(), default=-1) + 1
        ts = _now_ms()
        points = [Metric(_key(k), float(v), ts, step) for k, v in metrics.items() if is_number(v)
                  and math.isfinite(float(v))]
        for chunk in _chunks(points, METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=chunk)
        self.client.log_artifacts(run_id, folder, artifact_path="report")
        self.client.set_tag(run_id, "mlflow.note.content", _truncate(note, 5000))

    # ------------------------------------------------------------------ endings
    def finish_trial(self, run_id: str, status: str) -> None:
        """End a trial run: completed -> FINISHED, diverged -> FAILED, stopped -> KILLED, error -> FAILED.

        The mcscale status is kept in the `status` tag. Calling it again with the same status changes nothing.
        """
        mlflow_status, tag = _map_status(status)
        run = self.client.get_run(run_id)
        if run.data.tags.get(STATUS_TAG) != tag:
            self._log_tags(run_id, {STATUS_TAG: tag})
        if run.info.status != mlflow_status or run.info.end_time is None:
            self.client.set_terminated(run_id, status=mlflow_status)

    def finish_phase(self, phase: str, status: str = "FINISHED") -> None:
        """End the parent run of `phase` (no-op when the phase has no run)."""
        status = status.upper() if status.upper() in _TERMINAL else _map_status(status)[0]
        run_id = self._phase_runs.get(phase)
        run = self.client.get_run(run_id) if run_id else self._find_phase(phase)
        if run is None:
            return
        if run.info.status != status or run.info.end_time is None:
            self.client.set_terminated(run.info.run_id, status=status)

    # ------------------------------------------------------------------ reading back
    def runs(self):
        """All runs of the study's experiment as a DataFrame: run_id, run_name, status, parent_run_id,
        start_time, end_time, then `tags.*`, `params.*` and `metrics.*` columns (latest values)."""
        import pandas as pd

        rows = []
        for run in self._search(""):
            info, data = run.info, run.data
            row = {"run_id": info.run_id, "run_name": info.run_name, "status": info.status,
                   "parent_run_id": data.tags.get(PARENT_TAG), "experiment_id": info.experiment_id,
                   "start_time": pd.to_datetime(info.start_time, unit="ms", utc=True) if info.start_time else pd.NaT,
                   "end_time": pd.to_datetime(info.end_time, unit="ms", utc=True) if info.end_time else pd.NaT}
            row.update({f"tags.{k}": v for k, v in data.tags.items()})
            row.update({f"params.{k}": v for k, v in data.params.items()})
            row.update({f"metrics.{k}": v for k, v in data.metrics.items()})
            rows.append(row)
        base = ["run_id", "run_name", "status", "parent_run_id", "experiment_id", "start_time", "end_time"]
        frame = pd.DataFrame(rows, columns=None if rows else base)
        if rows:
            rest = sorted(c for c in frame.columns if c not in base)
            frame = frame[base + rest]
        return frame


def run_name(trial_id: str, tags: dict[str, str] | None, config: dict | None = None) -> str:
    """A short name a person reads in the MLflow run list: ``series@size`` (``swla+grm@C64@1M``), with
    the seed when it is not 0 and, for a tune trial, its learning rate. The trial id stays a tag."""
    tags = tags or {}
    series, size = tags.get("series"), tags.get("size_label")
    if not series or not size:
        return trial_id
    name = f"{series}@{size}"
    if tags.get("seed") not in (None, "", "0"):
        name += f" s{tags['seed']}"
    if tags.get("phase") == "tune" and is_number((config or {}).get("lr")):
        name = f"tune {name} lr={float(config['lr']):.2g}"  # type: ignore[index]
    return name


def _map_status(status: str) -> tuple[str, str]:
    key = str(status).lower()
    if key not in STATUS_MAP:
        raise ValueError(f"unknown trial status {status!r}; expected one of completed, diverged, stopped, error")
    return STATUS_MAP[key]


def _json_default(value: Any) -> Any:
    if is_number(value):
        f = float(value)
        return int(value) if f.is_integer() and not isinstance(value, float) else f
    try:
        import numpy as np

        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(value)


__all__ = ["StudyTracker", "default_tracking_uri", "flatten_params", "probe_tracking", "redact_uri", "STATUS_MAP"]
