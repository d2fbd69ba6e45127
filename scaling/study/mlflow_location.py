"""Where a study's MLflow data lives: decided once, when the study is created, and kept in study.json.

Why: the MLflow view of a study must not depend on the folder a command happens to run in. Before
this, a study on ``s3://`` kept its SQLite store in ``./mcscale-runs/<name>/mlflow.db`` of the
current directory (a report made from another folder started a second store) and a server without
an artifact root put artifacts in ``./mlruns``. Now:

* **Tracking URI**, chosen at creation: the spec's ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``,
  else a SQLite file: ``<storage>/<name>/mlflow.db`` beside local results, or, for results on S3,
  ``<mcscale home>/mlflow/<name>-<hash of the study's storage URI>/mlflow.db`` (one per study; the
  home is ``$MCSCALE_HOME``, else ``$XDG_DATA_HOME/mcscale``, else ``~/.local/share/mcscale``).
* **Artifacts** of every new experiment go where the study's storage is:
  ``<storage>/<name>/mlflow-artifacts`` (a local folder or the same S3 prefix), whatever the backend.
* Both are written to ``study.json`` under ``"mlflow"`` (the URI redacted: a password is never
  stored) and every later command (`resume`, `report`, `ui`) reads them from there. A recorded URI
  whose password was redacted takes the password from ``$MLFLOW_TRACKING_URI`` (or the spec) of the
  process that runs, when that URI redacts to the recorded one.

The real URI stays in this process only: `remember` keeps it under its redacted form so objects
that Ray pickles (the driver's Tune callback) carry the redacted URI and find the real one here.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaling.errors import UserInputError
from scaling.redact import MASK, redact_uri

STATE_KEY = "mlflow"  # study.json: {"tracking_uri": <redacted>, "artifact_location": ...}
ARTIFACTS_FOLDER = "mlflow-artifacts"
_REAL_URIS: dict[str, str] = {}  # redacted URI -> real URI, for this process only


def mcscale_home() -> Path:
    """mcscale's per-user data folder (for things that must be local but belong to no local study folder)."""
    configured = os.environ.get("MCSCALE_HOME", "").strip()
    if configured:
        return Path(configured).expanduser().resolve()
    xdg = os.environ.get("XDG_DATA_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return (base / "mcscale").resolve()


def default_store_folder(study_root: str, name: str) -> Path:
    """The folder of a study's default SQLite store: the study folder itself when it is local, else
    a per-user folder keyed by the study's storage URI (two buckets' studies of one name stay apart)."""
    if "://" not in study_root:
        return Path(study_root)
    digest = hashlib.sha256(study_root.encode()).hexdigest()[:12]
    return mcscale_home() / "mlflow" / f"{name}-{digest}"


def artifact_location(study_root: str) -> str:
    """`<study>/mlflow-artifacts` as MLflow wants it: a file:// URI locally, s3://... on S3."""
    if "://" in study_root:
        return f"{study_root.rstrip('/')}/{ARTIFACTS_FOLDER}"
    return (Path(study_root) / ARTIFACTS_FOLDER).resolve().as_uri()


def remember(uri: str) -> str:
    """Keep the real `uri` in this process under its redacted form; returns the redacted form."""
    shown = redact_uri(uri) or uri
    _REAL_URIS[shown] = uri
    return shown


def real_uri(uri: str) -> str:
    """The real URI of a redacted one this process was given (the URI itself when it has no secret)."""
    return _REAL_URIS.get(uri, uri)


@dataclass(frozen=True)
class TrackingLocation:
    """A study's MLflow location. `uri` is the real URI: never print or store it, use `shown`."""

    uri: str
    artifact_location: str
    recorded: bool  # whether study.json already held it

    @property
    def shown(self) -> str:
        return redact_uri(self.uri) or self.uri

    def as_state(self) -> dict[str, str]:
        return {"tracking_uri": self.shown, "artifact_location": self.artifact_location}


def _with_password(recorded: str, candidates: list[str | None]) -> str:
    """The recorded URI; when its password was redacted, the candidate that redacts to it."""
    if MASK not in recorded:
        return recorded
    for candidate in candidates:
        if candidate and redact_uri(candidate) == recorded:
            return candidate
    raise UserInputError("MLFLOW_TRACKING_URI", f"the study records its MLflow runs at {recorded}, whose password "
                         "is not stored with the study",
                         "set $MLFLOW_TRACKING_URI to that URI with its password where you run mcscale "
                         "(it is read from the environment and never written down)")


def _legacy_default(study_root: str, name: str) -> str | None:
    """A store made before locations were recorded: for S3 studies, ./mcscale-runs/<name>/mlflow.db of
    the current folder (where older versions put it), when that file exists."""
    if "://" not in study_root:
        return None
    db = Path("./mcscale-runs").resolve() / name / "mlflow.db"
    return f"sqlite:///{db}" if db.is_file() else None


def resolve_location(study_root: str, name: str, state: dict[str, Any] | None, spec_uri: str | None = None,
                     explicit: str | None = None) -> TrackingLocation:
    """The study's MLflow location: `explicit` (a command's --tracking-uri) wins for that command; else
    the one recorded in study.json (`state`); else the one a new study gets (see the module docstring)."""
    from scaling.study.tracking import default_tracking_uri

    env_uri = os.environ.get("MLFLOW_TRACKING_URI") or None
    recorded = (state or {}).get(STATE_KEY) or {}
    artifacts = recorded.get("artifact_location") or artifact_location(study_root)
    if explicit:
        uri, was_recorded = explicit, bool(recorded)
    elif recorded.get("tracking_uri"):
        uri, was_recorded = _with_password(str(recorded["tracking_uri"]), [spec_uri, env_uri]), True
    else:
        uri = (spec_uri or env_uri or _legacy_default(study_root, name)
               or default_tracking_uri(str(default_store_folder(study_root, name))))
        was_recorded = False
    remember(uri)
    return TrackingLocation(uri, artifacts, was_recorded)


def existing_location(study_root: str, name: str, state: dict[str, Any] | None) -> TrackingLocation | None:
    """The study's MLflow location if it has one already (recorded, or an older study's SQLite file
    beside local results or in ./mcscale-runs/<name>/); None otherwise. Creates nothing."""
    recorded = (state or {}).get(STATE_KEY) or {}
    if recorded.get("tracking_uri"):
        uri = _with_password(str(recorded["tracking_uri"]), [os.environ.get("MLFLOW_TRACKING_URI")])
        location = TrackingLocation(uri, recorded.get("artifact_location") or artifact_location(study_root), True)
    else:
        legacy = _legacy_default(study_root, name)
        if legacy is None and "://" not in study_root and (Path(study_root) / "mlflow.db").is_file():
            legacy = f"sqlite:///{Path(study_root) / 'mlflow.db'}"
        if legacy is None:
            return None
        location = TrackingLocation(legacy, artifact_location(study_root), False)
    remember(location.uri)
    return location


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///...` URI (None for other URIs and in-memory databases)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):]
    return Path(path) if path and path != ":memory:" else None


def artifact_env(study_root: str, s3_endpoint: str | None) -> dict[str, str]:
    """Environment MLflow's S3 artifact client needs for a study on an S3-compatible endpoint
    (boto3 takes the endpoint from $MLFLOW_S3_ENDPOINT_URL); empty for AWS itself and local storage."""
    if "://" in study_root and s3_endpoint:
        return {"MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
    return {}


__all__ = ["TrackingLocation", "resolve_location", "remember", "real_uri", "mcscale_home", "artifact_location",
           "default_store_folder", "artifact_env", "existing_location", "sqlite_file", "STATE_KEY"]
