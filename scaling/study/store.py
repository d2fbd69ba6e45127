"""Study results as a Parquet dataset under `<storage>/<study>/`, on local disk or S3 (through `pyarrow.fs`).

Layout of one study::

    <storage>/<study>/
        trials/<trial_id>.parquet   one row per trial (its config and final metrics), overwritten on re-write
        curves/<trial_id>.parquet   the trial's eval curves in long format (trial_id, step, tokens, flops,
                                    metric, value), overwritten whole on each write
        study.json, tuned.json, spec.yaml, ...   study state files (`write_json` / `write_text`)

One file per trial makes every write idempotent: a resumed or re-run trial overwrites its own file and
never appends a duplicate row. Every trial file carries the same standard columns (NaN / null where a
value is missing) plus one `needle_acc_<L>` column per needle length of the study's config and the
evaluation's diagnostics (`val_loss_pos<i>` per position bucket, `online_gate_*` for gated Memory
Caching models; see `scaling.train.evaluate`), so the folders read as one table with plain
`pandas.read_parquet("<root>/trials")` or `pyarrow.dataset`. The diagnostic columns differ between
architectures (a Transformer has no gates), and those plain readers take their columns from the first
file: `read_trials` (or a dataset opened with `pyarrow.unify_schemas` of the files' schemas) gives them
all, NaN where a trial lacks one.
Local writes go through a hidden temp file and an atomic rename (readers skip names starting with "."
or "_", as pyarrow.dataset does); S3 puts are atomic by themselves.

A file that cannot be parsed raises `UserInputError` naming it; reading never deletes or changes files.
"""

from __future__ import annotations

import errno
import io
import json
import math
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from scaling.errors import UserInputError
from scaling.study.storage_fs import Storage, resolve_storage

TRIALS_DIR, CURVES_DIR = "trials", "curves"
STUDY_MARKERS = ("study.json", TRIALS_DIR, CURVES_DIR)

# Column name -> Arrow type name, in order. Integer columns are nullable in Parquet (pandas reads a
# column holding a null as float64 with NaN).
TRIAL_COLUMNS: dict[str, str] = {
    "trial_id": "string", "study": "string", "phase": "string",
    "arch": "string", "series": "string", "mixer": "string", "memory": "string", "strategy": "string",
    "segment_len": "string", "n_segments": "int64", "size_label": "string", "seed": "int64",
    "config_hash": "string", "params_nonembed": "int64", "params_total": "int64",
    "lr": "float64", "warmup_fraction": "float64", "weight_decay": "float64",
    "status": "string",
    "step": "int64", "total_steps": "int64", "tokens": "int64", "flops": "float64", "flops_per_token": "float64",
    "train_seconds": "float64", "wall_seconds": "float64", "tokens_per_second": "float64",
    "flops_per_second": "float64", "mfu": "float64", "device_memory_peak_bytes": "float64",
    "checkpoint_seconds": "float64", "workers": "int64", "device": "string", "precision": "string",
    "train_loss": "float64", "val_loss": "float64", "val_bpb": "float64", "mqar_acc": "float64",
    "diverged_step": "float64",
    "learned": "int64",  # 1/0 for a completed trial: beat the uniform predictor (scaling.train.learned); null before
    "config_json": "string", "recorded_at": "string",
}
CURVE_COLUMNS: dict[str, str] = {"trial_id": "string", "step": "int64", "tokens": "int64", "flops": "float64",
                                 "metric": "string", "value": "float64"}
NEEDLE_PREFIX = "needle_acc_"
#: The evaluation's diagnostics whose number varies per trial (scaling.train.evaluate): the loss per
#: position bucket and the online gate mass per gated layer and/or segment. Final values are trial
#: columns, every eval's values curve rows, like any other metric.
DIAGNOSTIC_METRIC = re.compile(r"^(?:val_loss_pos\d+|online_gate_(?:l\d+(?:_seg\d+)?|seg\d+))$")

# tag name -> row column (tags carry everything as strings)
_TAG_COLUMNS = {"architecture": "arch", "series": "series", "mixer": "mixer", "memory": "memory",
                "strategy": "strategy", "segment_len": "segment_len", "n_segments": "n_segments",
                "size_label": "size_label", "seed": "seed", "config_hash": "config_hash",
                "params_nonembed": "params_nonembed"}
# metrics copied into the row (final values)
_METRIC_COLUMNS = ("status", "step", "total_steps", "tokens", "flops", "flops_per_token", "train_seconds",
                   "wall_seconds", "tokens_per_second", "flops_per_second", "train_loss", "val_loss", "val_bpb",
                   "mqar_acc", "diverged_step", "params_nonembed", "params_total", "mfu",
                   "device_memory_peak_bytes", "checkpoint_seconds", "workers", "device", "precision", "learned")
# report keys that are axes, static descriptors or not curves at all
_NOT_CURVES = {"step", "tokens", "flops", "status", "train_loss_steps", "params_nonembed", "params_total",
               "total_steps", "flops_per_token", "diverged_step", "workers", "device", "precision",
               "compiled", "compile_failed", "learned"}

# What a transient storage error looks like: the AWS SDK's retryable error names and curl's
# connection failures (S3), and the errno values a flaky local or network disk gives. Anything else
# (access denied, no such bucket, a full disk, a path that is a file) fails at once.
_TRANSIENT_S3 = ("NETWORK_CONNECTION", "curlCode", "SLOW_DOWN", "SERVICE_UNAVAILABLE", "INTERNAL_FAILURE",
                 "REQUEST_TIMEOUT", "THROTTLING", "Couldn't connect", "Timeout", "timed out", "Connection reset",
                 "Recv failure", "Send failure", "HTTP response code: 5")
_TRANSIENT_ERRNO = {errno.EAGAIN, errno.EBUSY, errno.EIO, errno.ETIMEDOUT, errno.ESTALE, errno.ECONNREFUSED,
                    errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH}
RETRY_FIRST_WAIT_S, RETRY_LONGEST_WAIT_S = 0.5, 15.0


def is_transient(exc: OSError) -> bool:
    """Whether a storage error is worth retrying (the service or the network, not the request)."""
    if exc.errno in _TRANSIENT_ERRNO:
        return True
    text = str(exc)
    return any(marker in text for marker in _TRANSIENT_S3)


def with_retries(action, what: str, retry_seconds: float):  # noqa: ANN001, ANN201 - any callable
    """`action()`, retried with exponential backoff (0.5 s doubling to 15 s) on transient errors for up
    to `retry_seconds` in all; a waiting retry is said once on stderr. Other errors raise at once."""
    deadline = time.monotonic() + retry_seconds
    wait, said = RETRY_FIRST_WAIT_S, False
    while True:
        try:
            result = action()
        except OSError as exc:
            left = deadline - time.monotonic()
            if not is_transient(exc) or left <= 0:
                raise
            if not said:
                print(f"mcscale: storage error on {what} ({str(exc)[:200]}); retrying for up to "
                      f"{retry_seconds:.0f} s", file=sys.stderr, flush=True)
                said = True
            time.sleep(min(wait, left))
            wait = min(RETRY_LONGEST_WAIT_S, wait * 2)
            continue
        if said:
            print(f"mcscale: storage answers again ({what})", file=sys.stderr, flush=True)
        return result


_TRIAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+=-]{0,199}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


# ============================================================================ row builders
def is_number(value: Any) -> bool:
    """A real number (int, float or numpy scalar), not a bool or None."""
    if isinstance(value, bool) or value is None:
        return False
    try:
        import numpy as np

        if isinstance(value, np.bool_):
            return False
        if isinstance(value, (np.integer, np.floating)):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(value, (int, float))


def _as_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
        return int(value)
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(f):
        return None
    return int(value) if isinstance(value, int) else int(round(f))


def _as_float(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _as_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _coerce(column: str, kind: str, value: Any) -> Any:
    if kind == "int64":
        return _as_int(value)
    if kind == "float64":
        return _as_float(value)
    return _as_str(value)


def _natural_key(name: str) -> tuple:
    """val_loss_pos2 before val_loss_pos10, online_gate_l2_seg9 before online_gate_l2_seg10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def is_extra_metric(name: Any) -> bool:
    """A per-trial metric beyond the standard columns: a needle accuracy or an evaluation diagnostic."""
    return isinstance(name, str) and ((name.startswith(NEEDLE_PREFIX) and name[len(NEEDLE_PREFIX):].isdigit())
                                      or DIAGNOSTIC_METRIC.match(name) is not None)


def _diagnostic_columns(names: Any) -> list[str]:
    """The diagnostic metric names among `names`: the position losses, then the gate masses, each in
    natural order."""
    return sorted((n for n in names if isinstance(n, str) and DIAGNOSTIC_METRIC.match(n)),
                  key=lambda n: (not n.startswith("val_loss_pos"), _natural_key(n)))


def _needle_lengths(config: dict, metrics: dict) -> list[int]:
    lengths = set()
    for length in (config or {}).get("needle_lengths") or ():
        if _as_int(length) is not None:
            lengths.add(int(length))
    for key in metrics or {}:
        if isinstance(key, str) and key.startswith(NEEDLE_PREFIX) and key[len(NEEDLE_PREFIX):].isdigit():
            lengths.add(int(key[len(NEEDLE_PREFIX):]))
    return sorted(lengths)


def trial_row(trial_id: str, phase: str, tags: dict[str, str], metrics: dict, config: dict) -> dict:
    """One trial's result row: its descriptors (typed), settings, final metrics and whole config as JSON.

    Every standard column is present (None / NaN where unknown); one `needle_acc_<L>` column per needle
    length of the config (and any needle key the metrics carry), and one per evaluation diagnostic the
    metrics carry (`DIAGNOSTIC_METRIC`). `train_loss_steps` is never stored.
    """
    tags, metrics, config = dict(tags or {}), dict(metrics or {}), dict(config or {})
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    row: dict[str, Any] = {name: None for name in TRIAL_COLUMNS}
    row["trial_id"], row["phase"] = trial_id, phase or tags.get("phase")
    for tag, column in _TAG_COLUMNS.items():
        if tags.get(tag) not in (None, ""):
            row[column] = tags[tag]
    for column in ("mixer", "memory"):  # fall back to the model config when a tag is missing
        if row[column] is None and model.get(column) is not None:
            row[column] = model[column]
    if row["strategy"] is None and model.get("caching") is not None:
        row["strategy"] = model["caching"]
    if row["seed"] is None:
        row["seed"] = config.get("seed")
    for name in ("lr", "warmup_fraction", "weight_decay"):
        row[name] = config.get(name)
    for name in _METRIC_COLUMNS:
        if metrics.get(name) is not None:
            row[name] = metrics[name]
    row["config_json"] = json.dumps(config, sort_keys=True, default=str)
    row["recorded_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out = {name: _coerce(name, kind, row[name]) for name, kind in TRIAL_COLUMNS.items()}
    for length in _needle_lengths(config, metrics):
        out[f"{NEEDLE_PREFIX}{length}"] = _as_float(metrics.get(f"{NEEDLE_PREFIX}{length}"))
    for name in _diagnostic_columns(metrics):
        out[name] = _as_float(metrics[name])
    return out


def curve_rows(trial_id: str, history: list[dict]) -> list[dict]:
    """Long-format curve rows: one per (report step, numeric metric) of `history`.

    The axes (step, tokens, flops), static descriptors (parameter counts, total steps, ...) and
    `train_loss_steps` are not curves. A step reported twice (a resumed trial re-reporting) keeps the
    later value, so rows are unique per (step, metric).
    """
    by_key: dict[tuple[int, str], dict] = {}
    for report in history or []:
        step = _as_int(report.get("step"))
        if step is None:
            continue
        tokens, flops = _as_int(report.get("tokens")), _as_float(report.get("flops"))
        for key, value in report.items():
            if key in _NOT_CURVES or not isinstance(key, str) or not is_number(value):
                continue
            by_key[(step, key)] = {"trial_id": trial_id, "step": step, "tokens": tokens, "flops": flops,
                                   "metric": key, "value": float(value)}
    return [by_key[k] for k in sorted(by_key)]


# ============================================================================ Arrow helpers
def _arrow_type(kind: str):
    import pyarrow as pa

    return {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64()}[kind]


def _trial_schema(extra: list[str] = ()):
    import pyarrow as pa

    fields = [pa.field(n, _arrow_type(k)) for n, k in TRIAL_COLUMNS.items()]
    fields += [pa.field(n, pa.float64()) for n in extra]
    return pa.schema(fields)


def _curve_schema():
    import pyarrow as pa

    return pa.schema([pa.field(n, _arrow_type(k)) for n, k in CURVE_COLUMNS.items()])


def _needle_sort_key(name: str) -> int:
    return int(name[len(NEEDLE_PREFIX):])


def _parquet_bytes(table) -> bytes:
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


# ============================================================================ the store
class ResultStore:
    """One study's results on local disk or S3; see the module docstring for the layout."""

    def __init__(self, storage: str, study: str, s3_endpoint: str | None = None,
                 retry_seconds: float | None = None) -> None:
        """`retry_seconds`: how long transient storage errors are retried (default
        $MCSCALE_STORAGE_RETRY_SECONDS, else 300 s)."""
        from scaling.data.s3_retry import storage_retry_seconds

        self.retry_seconds = storage_retry_seconds() if retry_seconds is None else float(retry_seconds)
        if not isinstance(study, str) or not _NAME.match(study) or "/" in study:
            raise UserInputError("name", f"study name {study!r} cannot be a storage folder",
                                 "use letters, digits, dots and dashes, starting with a letter or digit")
        self.study = study
        self._base = resolve_storage(storage, s3_endpoint)
        self._root: Storage = self._base.join(study)

    # ------------------------------------------------------------------ locations
    @property
    def root(self) -> str:
        """Where the study lives: an absolute local path or s3://bucket/prefix/study."""
        return self._root.uri

    @property
    def storage(self) -> Storage:
        return self._root

    @property
    def base_uri(self) -> str:
        """The storage location holding this study (an absolute folder or s3://bucket/prefix)."""
        return self._base.uri

    def _path(self, *parts: str) -> str:
        return self._root.join(*parts).path

    def _uri(self, *parts: str) -> str:
        return self._root.uri_of(self._path(*parts))

    # ------------------------------------------------------------------ low-level I/O with clear errors
    def _write(self, path: str, data: bytes) -> None:
        try:
            with_retries(lambda: self._root.write_bytes(path, data), f"writing {self._root.uri_of(path)}",
                         self.retry_seconds)
        except OSError as exc:
            raise UserInputError("storage", f"cannot write {self._root.uri_of(path)}: {exc}",
                                 "check that the folder or bucket exists and is writable (for S3: the "
                                 "endpoint and credentials)") from None

    def _read(self, path: str) -> bytes | None:
        try:
            return with_retries(lambda: self._root.read_bytes(path), f"reading {self._root.uri_of(path)}",
                                self.retry_seconds)
        except OSError as exc:
            raise UserInputError("storage", f"cannot read {self._root.uri_of(path)}: {exc}",
                                 "check that the storage is reachable (for S3: the endpoint and credentials)") from None

    def _list(self, path: str) -> list:
        try:
            return with_retries(lambda: self._root.list_dir(path), f"listing {self._root.uri_of(path)}",
                                self.retry_seconds)
        except OSError as exc:
            raise UserInputError("storage", f"cannot list {self._root.uri_of(path)}: {exc}",
                                 "check that the storage is reachable (for S3: the endpoint, the bucket and "
                                 "the credentials)") from None

    @staticmethod
    def _check_trial_id(trial_id: str) -> None:
        if not isinstance(trial_id, str) or not _TRIAL_ID.match(trial_id):
            raise UserInputError("trial_id", f"{trial_id!r} cannot name a result file",
                                 "use letters, digits and . _ - @ + = (at most 200), starting with a letter or digit")

    @staticmethod
    def _check_name(name: str) -> None:
        if not isinstance(name, str) or not _NAME.match(name) or ".." in name.split("/"):
            raise UserInputError("name", f"{name!r} is not a study file name",
                                 "use a relative name such as study.json or reports/summary.md")

    # ------------------------------------------------------------------ trials
    def write_trial(self, trial_id: str, row: dict) -> None:
        """Write (or overwrite) the one row of `trial_id`: trials/<trial_id>.parquet."""
        import pyarrow as pa

        self._check_trial_id(trial_id)
        row = dict(row)
        row["trial_id"] = trial_id
        if row.get("study") is None:
            row["study"] = self.study
        needles = sorted((k for k in row if isinstance(k, str) and k.startswith(NEEDLE_PREFIX)
                          and k[len(NEEDLE_PREFIX):].isdigit()), key=_needle_sort_key)
        extras = needles + _diagnostic_columns(row)
        clean = {name: _coerce(name, kind, row.get(name)) for name, kind in TRIAL_COLUMNS.items()}
        clean.update({name: _as_float(row.get(name)) for name in extras})
        table = pa.Table.from_pylist([clean], schema=_trial_schema(extras))
        self._write(self._path(TRIALS_DIR, f"{trial_id}.parquet"), _parquet_bytes(table))

    def write_curves(self, trial_id: str, rows: list[dict]) -> None:
        """Write (or overwrite) the whole curve table of `trial_id`: curves/<trial_id>.parquet."""
        import pyarrow as pa

        self._check_trial_id(trial_id)
        clean = [{name: (trial_id if name == "trial_id" else _coerce(name, kind, r.get(name)))
                  for name, kind in CURVE_COLUMNS.items()} for r in rows]
        table = pa.Table.from_pylist(clean, schema=_curve_schema())
        self._write(self._path(CURVES_DIR, f"{trial_id}.parquet"), _parquet_bytes(table))

    def _read_folder(self, folder: str, schema, kind: str):
        """All Parquet files of `folder` as one Arrow table; a file that does not parse is a UserInputError."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        from pyarrow import fs as pafs

        entries = [e for e in self._list(self._path(folder)) if e.type == pafs.FileType.File
                   and e.base_name.endswith(".parquet") and not e.base_name.startswith((".", "_"))]
        paths = sorted(e.path for e in entries)

        def load(path: str):
            data = self._read(path)
            if data is None:  # removed between listing and reading
                return None
            try:
                table = pq.read_table(pa.BufferReader(data))
            except Exception as exc:  # pyarrow raises ArrowInvalid / OSError / ... for damaged files
                raise UserInputError(self._root.uri_of(path), f"this {kind} file is not readable Parquet ({exc})",
                                     "move or delete that one file (re-running the study writes it again); "
                                     "no other file was changed") from None
            if "trial_id" not in table.column_names:
                raise UserInputError(self._root.uri_of(path), f"this file has no trial_id column, so it is not an "
                                     f"mcscale {kind} file", f"move it out of {self._root.uri_of(self._path(folder))}")
            return table

        if self._root.is_s3 and len(paths) > 4:
            with ThreadPoolExecutor(max_workers=8) as pool:
                tables = list(pool.map(load, paths))
        else:
            tables = [load(p) for p in paths]
        tables = [t for t in tables if t is not None]
        if not tables:
            return schema.empty_table()
        try:
            return pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise UserInputError(self._root.uri_of(self._path(folder)), f"the {kind} files have clashing column "
                                 f"types ({exc})", "move out files written by another program or version") from None

    def read_trials(self):
        """All trial rows as a pandas DataFrame (standard columns first, then needle columns, then the
        evaluation diagnostics), sorted by trial_id."""
        table = self._read_folder(TRIALS_DIR, _trial_schema(), "trial result")
        frame = table.to_pandas()
        needles = sorted((c for c in frame.columns if c.startswith(NEEDLE_PREFIX)
                          and c[len(NEEDLE_PREFIX):].isdigit()), key=_needle_sort_key)
        diagnostics = _diagnostic_columns(frame.columns)
        standard = list(TRIAL_COLUMNS)
        for name in standard:
            if name not in frame.columns:
                frame[name] = None
        others = [c for c in frame.columns if c not in standard and c not in needles and c not in diagnostics]
        frame = frame[standard + needles + diagnostics + others]
        return frame.sort_values("trial_id", kind="stable").reset_index(drop=True)

    def read_curves(self):
        """All curve rows (trial_id, step, tokens, flops, metric, value), sorted by trial, metric and step."""
        frame = self._read_folder(CURVES_DIR, _curve_schema(), "curve").to_pandas()
        for name in CURVE_COLUMNS:
            if name not in frame.columns:
                frame[name] = None
        frame = frame[list(CURVE_COLUMNS) + [c for c in frame.columns if c not in CURVE_COLUMNS]]
        return frame.sort_values(["trial_id", "metric", "step"], kind="stable").reset_index(drop=True)

    # ------------------------------------------------------------------ study state files
    def write_json(self, name: str, obj: Any) -> None:
        self._check_name(name)
        text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
        self._write(self._path(name), text.encode())

    def read_json(self, name: str) -> Any | None:
        self._check_name(name)
        data = self._read(self._path(name))
        if data is None:
            return None
        try:
            return json.loads(data.decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserInputError(self._uri(name), f"this study file is not valid JSON ({exc})",
                                 "move or delete that file (mcscale writes it again); "
                                 "no other file was changed") from None

    def write_text(self, name: str, text: str) -> None:
        self._check_name(name)
        self._write(self._path(name), text.encode())

    def write_bytes(self, name: str, data: bytes) -> None:
        """A binary study file (a report's figures), written atomically like the others."""
        self._check_name(name)
        self._write(self._path(name), bytes(data))

    def read_text(self, name: str) -> str | None:
        self._check_name(name)
        data = self._read(self._path(name))
        if data is None:
            return None
        try:
            return data.decode()
        except UnicodeDecodeError as exc:
            raise UserInputError(self._uri(name), f"this study file is not UTF-8 text ({exc})",
                                 "move or delete that file") from None

    def exists(self) -> bool:
        """Whether anything of this study has been recorded (study.json, trials/ or curves/)."""
        names = {e.base_name for e in self._list(self._root.path)}
        return any(marker in names for marker in STUDY_MARKERS)

    def __repr__(self) -> str:
        return f"ResultStore({self.root!r})"


def list_studies(storage: str, s3_endpoint: str | None = None) -> list[str]:
    """Names of the studies recorded under `storage` (folders holding study.json, trials/ or curves/)."""
    from pyarrow import fs as pafs

    base = resolve_storage(storage, s3_endpoint)
    try:
        children = [e for e in base.list_dir(base.path) if e.type == pafs.FileType.Directory]
        found = []
        for child in sorted(children, key=lambda e: e.base_name):
            if child.base_name.startswith((".", "_")):
                continue
            names = {e.base_name for e in base.list_dir(child.path)}
            if any(marker in names for marker in STUDY_MARKERS):
                found.append(child.base_name)
    except OSError as exc:
        raise UserInputError("storage", f"cannot list {base.uri}: {exc}",
                             "check that the storage is reachable (for S3: the endpoint, the bucket and the "
                             "credentials)") from None
    return found
