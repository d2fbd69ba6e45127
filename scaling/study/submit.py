"""Submit a study to a Ray cluster through the Ray Jobs API, and follow it.

`mcscale submit SPEC --address http://HEAD:8265` validates the spec here (a bad spec fails
before anything reaches the cluster), uploads the project as the job's `working_dir` and starts
``python -m scaling run SPEC --address auto`` as the job's driver on the head node. Ray puts the
unpacked working dir first on `PYTHONPATH` of the driver and of every worker, so the cluster runs
exactly the code you submitted, whether or not mcscale is installed on its nodes (its
dependencies - torch, ray, mlflow, ... - must be).

What travels and what does not:

* Code: the project folder (the checkout holding `scaling/`) minus `.git`, virtualenvs, caches,
  run outputs and checkpoints (`DEFAULT_EXCLUDES`; Ray also honours `.gitignore` and
  `.rayignore`). A `--working-dir` without `scaling/` in it gets the local `scaling` (and
  `kernels`) packages added as `py_modules`.
* The spec: when it lies inside the working dir, the entrypoint names it by its relative path;
  otherwise its text travels in the job's environment and a small job-side runner
  (`python -m scaling.study.submit`) writes it to a temporary file and runs it.
* Results: the spec's `storage:` is resolved *on the cluster*. A relative path would land in the
  job's unpacked working dir under Ray's session folder, which Ray deletes and which changes with
  every code change (so the study could not be resumed); an absolute path lies on the head
  node's disk. Clusters should use ``storage: s3://bucket/prefix``; `submit` warns otherwise.
* Authentication: the client follows Ray's own settings (`RAY_AUTH_MODE`, `RAY_AUTH_TOKEN`,
  `RAY_AUTH_TOKEN_PATH`, `~/.ray/auth_token`); set them as on the cluster. The job inherits the
  cluster's settings; no token is copied into the job (job environments are visible in the
  dashboard).
* Credentials (AWS keys, database or tracking-server passwords) never travel with the job: not in
  the spec (it refuses URIs with a password), not in the entrypoint, not in ``--env`` (refused:
  a job's runtime env is readable through the Jobs API and Ray's logs). Each cluster node has them
  in its own environment (or an instance role, or the KubeRay Secret), where pyarrow, boto3 and
  MLflow resolve them.

Every fault in what the user gave (spec, address, job id, token) is a `UserInputError`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import os
import secrets
import shlex
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional
from urllib.parse import urlsplit

from scaling.errors import UserInputError
from scaling.redact import is_secret_env, redact_uri

if TYPE_CHECKING:  # the spec module imports torch (seconds); status and logs do not need it
    from scaling.spec import StudySpec

ADDRESS_ENV_VARS = ("MCSCALE_RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
"""Where the CLI looks for the cluster address when --address is not given (first set wins)."""

DEFAULT_EXCLUDES = [
    ".git", ".venv", "venv", "__pycache__", "*.pyc", ".pytest_cache", ".hypothesis", ".ruff_cache",
    ".mypy_cache", "*.egg-info", "build", "dist", "mcscale-runs", "mlruns", "*.pt", "*.pth", "*.ckpt",
    "*.safetensors",
]
"""Never uploaded with the working dir: VCS data, environments, caches, run outputs, checkpoints."""

TERMINAL_STATUSES = ("SUCCEEDED", "FAILED", "STOPPED")
ACTIVE_STATUSES = ("PENDING", "RUNNING")
CONNECT_TIMEOUT_S = 10.0
SPEC_ENV = "MCSCALE_SUBMIT_SPEC_B64"  # spec text (base64) for specs outside the working dir
SPEC_NAME_ENV = "MCSCALE_SUBMIT_SPEC_NAME"
MAX_INLINE_SPEC_BYTES = 64 * 1024  # a single environment string is limited to 128 KiB on Linux
META_STUDY, META_STORAGE, META_SPEC = "mcscale_study", "mcscale_storage", "mcscale_spec"

ADDRESS_FIX = ("pass the Ray dashboard address of a running cluster, e.g. --address http://HEAD:8265 (the Jobs "
               "API is served by the dashboard: start the head with `ray start --head --dashboard-host=0.0.0.0`; "
               "the GCS port 6379 is not it), or set $MCSCALE_RAY_ADDRESS")
AUTH_FIX = ("set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH, or "
            "~/.ray/auth_token) where you run mcscale; `ray get-auth-token` on the head node prints it. For a "
            "cluster started without authentication set RAY_AUTH_MODE=disabled")

Warn = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


# ----------------------------------------------------------------------------- address and client
def resolve_address(address: Optional[str]) -> str:
    """The explicit address, else $MCSCALE_RAY_ADDRESS, $RAY_API_SERVER_ADDRESS, $RAY_ADDRESS."""
    if address and address.strip():
        return address.strip()
    for name in ADDRESS_ENV_VARS:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    raise UserInputError("--address", "no Ray cluster address given", ADDRESS_FIX)


def normalize_address(address: str) -> str:
    """`HOST:PORT` means the dashboard over HTTP; http(s)://, ray:// and `auto` pass unchanged."""
    address = address.strip().rstrip("/")
    if not address:
        raise UserInputError("--address", "the address is empty", ADDRESS_FIX)
    if address == "auto" or "://" in address:
        return address
    return f"http://{address}"


def _check_reachable(address: str) -> None:
    """Fail in seconds with a clear message when nothing listens at the address (requests would
    otherwise wait for the operating system's TCP timeout on a black-holed host)."""
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https", "ray"):
        return
    try:
        host = parts.hostname
        port = parts.port or {"http": 80, "https": 443, "ray": 10001}[parts.scheme]
    except ValueError as exc:  # e.g. a port that is not a number
        raise UserInputError("--address", f"{address!r} is not a valid address ({exc})", ADDRESS_FIX) from None
    if not host:
        raise UserInputError("--address", f"{address!r} names no host", ADDRESS_FIX)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise UserInputError("--address", f"cannot reach a Ray cluster at {address} ({reason})", ADDRESS_FIX) from None


@contextlib.contextmanager
def _quiet_ray_logs() -> Iterator[None]:
    """Ray's client logs every packaging step at INFO/WARNING; mcscale prints its own summary."""
    import ray.dashboard.modules.job.sdk  # noqa: F401  (create the loggers before quieting them)

    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name == "ray" or name.startswith("ray.")]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in saved:
            lg.setLevel(level)


@contextlib.contextmanager
def _translate_errors(address: str, job_id: Optional[str] = None) -> Iterator[None]:
    """Turn the Ray client's exceptions about the address, the token or the job into UserInputError."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except UserInputError:
        raise
    except AuthenticationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "authentication failed"
        field_name = "RAY_AUTH_TOKEN" if "403" in first or "failed" in first.lower() else "RAY_AUTH_MODE"
        raise UserInputError(field_name, f"the cluster at {address} refused the request ({first})", AUTH_FIX) from None
    except (ConnectionError, requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise UserInputError("--address", f"no Ray Jobs API answers at {address} ({_first_line(exc)})",
                             ADDRESS_FIX) from None
    except RuntimeError as exc:
        text = str(exc)
        if job_id is not None and ("404" in text or "does not exist" in text):
            raise UserInputError("JOB_ID", f"no job {job_id!r} on the cluster at {address}",
                                 "list the cluster's jobs with `mcscale status --address ...`") from None
        if "Version check returned 404" in text or "Jobs API is not supported" in text:
            raise UserInputError("--address", f"{address} does not serve the Ray Jobs API", ADDRESS_FIX) from None
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


@contextlib.contextmanager
def _address_env_cleared() -> Iterator[None]:
    """Ray's client lets $RAY_ADDRESS / $RAY_API_SERVER_ADDRESS override an explicit address;
    mcscale's explicit --address wins (the variables only supply the default)."""
    saved = {name: os.environ.pop(name) for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS") if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def connect(address: Optional[str]):
    """A `JobSubmissionClient` for the cluster, or a UserInputError naming --address or the token."""
    resolved = normalize_address(resolve_address(address))
    _check_reachable(resolved)
    from ray.job_submission import JobSubmissionClient

    with _quiet_ray_logs(), _translate_errors(resolved), _address_env_cleared():
        try:
            return JobSubmissionClient(resolved)
        except ValueError as exc:  # e.g. `auto` with no local cluster, an unknown scheme
            raise UserInputError("--address", f"{resolved!r} is not a usable cluster address ({_first_line(exc)})",
                                 ADDRESS_FIX) from None


def _address_of(client: Any) -> str:
    return getattr(client, "_address", "the cluster")


# ----------------------------------------------------------------------------- what is submitted
@dataclass
class Submission:
    """Everything `submit_study` sends, computed locally without touching the cluster."""

    spec: StudySpec
    spec_path: Path
    working_dir: Path
    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str]
    submission_id: str
    notes: list[str] = field(default_factory=list)


def project_root() -> Optional[Path]:
    """The source checkout this mcscale runs from (the folder holding `scaling/` and pyproject.toml)."""
    import scaling

    root = Path(scaling.__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "scaling" / "__init__.py").is_file():
        return root
    return None


def _package_dirs() -> list[str]:
    """Local folders of the `scaling` and `kernels` packages (for py_modules)."""
    import importlib.util

    dirs = []
    for name in ("scaling", "kernels"):
        found = importlib.util.find_spec(name)
        if found is not None and found.submodule_search_locations:
            dirs.append(str(Path(list(found.submodule_search_locations)[0]).resolve()))
    return dirs


def _is_local_path(value: str) -> bool:
    return "://" not in value and value not in ("builtin", "bytes")


def _loopback(url: Optional[str]) -> bool:
    if not url or "://" not in url:
        return False
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def storage_notes(spec: StudySpec, working_dir: Path) -> list[str]:
    """What about the spec will behave differently on a cluster than on this machine."""
    notes = []
    storage = spec.storage
    if storage.startswith("s3://"):
        if _loopback(spec.s3_endpoint):
            notes.append(f"warning: s3_endpoint {spec.s3_endpoint} is a loopback address: on the cluster it means "
                         "each node itself. Use an endpoint the cluster nodes can reach.")
    elif not (storage.startswith("/") or storage.startswith("~")):
        notes.append(f"warning: storage {storage!r} is a relative path. On the cluster it resolves inside the job's "
                     "unpacked working dir under Ray's session folder on the head node, which Ray deletes and which "
                     "changes with every code change (the study could not be resumed). Use storage: "
                     "s3://bucket/prefix (recommended for clusters) or an absolute path on the head node.")
    else:
        notes.append(f"note: storage {storage!r} is a path on the cluster's head node (not on this machine). On a "
                     "multi-node cluster use storage: s3://bucket/prefix so every node can write trial checkpoints.")
    if spec.tracking_uri is not None and _loopback(spec.tracking_uri):
        notes.append(f"warning: tracking_uri {redact_uri(spec.tracking_uri)} is a loopback address: on the cluster it means "
                     "the head node itself.")
    source = spec.data.corpus.source
    if _is_local_path(source):
        path = Path(source).expanduser()
        if path.is_absolute():
            notes.append(f"note: data.corpus.source {source} must exist at that path on the cluster nodes.")
        elif not (working_dir / path).exists():
            notes.append(f"warning: data.corpus.source {source!r} is relative but not inside the working dir "
                         f"{working_dir}, so it is not uploaded: the job resolves it inside the uploaded folder.")
    return notes


def _parse_env(env: Optional[dict[str, str] | list[str]]) -> dict[str, str]:
    if env is None:
        return {}
    if isinstance(env, dict):
        items = list(env.items())
    else:
        items = []
        for entry in env:
            name, sep, value = entry.partition("=")
            if not sep or not name:
                raise UserInputError("--env", f"{entry!r} is not NAME=VALUE", "write it as --env NAME=VALUE")
            items.append((name, value))
    out = {}
    for name, value in items:
        if not name.replace("_", "a").isalnum() or name[0].isdigit():
            raise UserInputError("--env", f"{name!r} is not a valid environment variable name",
                                 "use letters, digits and underscores, not starting with a digit")
        if name.startswith("RAY_AUTH"):
            raise UserInputError("--env", f"{name} is set on the cluster, not per job (job environments are "
                                 "visible in the dashboard)", f"remove --env {name}=...")
        if is_secret_env(name, str(value)):  # the job's runtime env is readable through the Jobs API and logs
            raise UserInputError("--env", f"{name} holds a credential, and a job's environment is readable "
                                 "through the Ray Jobs API and Ray's logs",
                                 f"remove --env {name}=...; set it on the cluster's nodes instead (their "
                                 "environment, an instance role, or the KubeRay Secret cluster/kuberay/secret.yaml)")
        out[name] = str(value)
    return out


def prepare_submission(spec_path: str | Path, working_dir: Optional[str | Path] = None,
                       extra_pip: Optional[list[str]] = None, env: Optional[dict[str, str] | list[str]] = None,
                       submission_id: Optional[str] = None, extend: bool = False) -> Submission:
    """Validate the spec and build the job (entrypoint, runtime_env, metadata); touches no cluster."""
    from scaling.spec import load_spec

    spec = load_spec(spec_path)
    path = Path(spec_path).expanduser().resolve()
    _check_plan(spec)
    notes: list[str] = []

    if working_dir is None:
        root = project_root()
        if root is None:
            root = Path.cwd().resolve()
            notes.append(f"note: mcscale is installed as a package, not run from a source checkout: uploading the "
                         f"current folder {root} with the installed mcscale packages (pass --working-dir to choose).")
        wdir = root
    else:
        wdir = Path(working_dir).expanduser().resolve()
        if not wdir.is_dir():
            raise UserInputError("--working-dir", f"{wdir} is not a folder",
                                 "pass the project folder to upload (by default, the mcscale checkout)")

    runtime_env: dict[str, Any] = {"working_dir": str(wdir), "excludes": list(DEFAULT_EXCLUDES)}
    if not (wdir / "scaling" / "__init__.py").is_file():
        runtime_env["py_modules"] = _package_dirs()
    job_env = {"PYTHONUNBUFFERED": "1"}
    job_env.update(_parse_env(env))

    quote = shlex.quote
    if path.is_relative_to(wdir) and _uploaded(path, wdir, runtime_env["excludes"]):
        relative = path.relative_to(wdir).as_posix()
        entrypoint = f"python -m scaling run {quote(relative)} --address auto" + (" --extend" if extend else "")
    else:
        text = path.read_bytes()
        if len(text) > MAX_INLINE_SPEC_BYTES:
            raise UserInputError("SPEC", f"{path} lies outside the working dir {wdir} and is too large "
                                 f"({len(text)} bytes) to travel with the job",
                                 "move the spec inside the working dir, or pass --working-dir with a folder "
                                 "that contains it")
        job_env[SPEC_ENV] = base64.b64encode(text).decode()
        job_env[SPEC_NAME_ENV] = path.name
        entrypoint = "python -m scaling.study.submit --address auto" + (" --extend" if extend else "")
        where = "is not uploaded with" if path.is_relative_to(wdir) else "lies outside"
        notes.append(f"note: {path} {where} the working dir {wdir}: its text travels with the job.")
    runtime_env["env_vars"] = job_env
    if extra_pip:
        runtime_env["pip"] = {"packages": list(extra_pip), "pip_check": False}

    notes.extend(storage_notes(spec, wdir))
    sid = submission_id or f"mcscale-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    metadata = {META_STUDY: spec.name, META_STORAGE: spec.storage, META_SPEC: path.name}
    return Submission(spec, path, wdir, entrypoint, runtime_env, metadata, sid, notes)


def _uploaded(path: Path, working_dir: Path, excludes: list[str]) -> bool:
    """Whether Ray's packaging of `working_dir` will include `path`: not matched by the excludes
    (relative to the working dir) nor by a .gitignore / .rayignore in the folders above it."""
    try:  # the matcher Ray's own packaging uses, so both agree on what is left out
        from ray._private.thirdparty.pathspec import PathSpec
    except ImportError:
        try:
            from pathspec import PathSpec
        except ImportError:  # cannot tell: let the spec travel with the job instead
            return False
    relative = path.relative_to(working_dir)
    prefixes = [Path(*relative.parts[: i + 1]).as_posix() for i in range(len(relative.parts))]
    if any(PathSpec.from_lines("gitwildmatch", excludes).match_file(p) for p in prefixes):
        return False
    ignore_files = [".rayignore"]
    if os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1":
        ignore_files.append(".gitignore")
    folder = working_dir
    for depth in range(len(relative.parts)):
        for name in ignore_files:
            ignore = folder / name
            if ignore.is_file():
                rules = PathSpec.from_lines("gitwildmatch", ignore.read_text(errors="replace").splitlines())
                below = relative.parts[depth:]
                if any(rules.match_file(Path(*below[: i + 1]).as_posix()) for i in range(len(below))):
                    return False
        folder = folder / relative.parts[depth]
    return True


def _check_plan(spec: StudySpec) -> None:
    """Plan the ladder here too when it needs nothing from the cluster (catches duplicate trials)."""
    tokenizer = spec.data.corpus.tokenizer
    if tokenizer == "bytes" or (_is_local_path(tokenizer) and Path(tokenizer).expanduser().is_file()):
        from scaling.study.plan import plan_ladder

        plan_ladder(spec)


# ----------------------------------------------------------------------------- the public calls
def submit_study(spec_path: str | Path, address: Optional[str], working_dir: Optional[str | Path] = None,
                 extra_pip: Optional[list[str]] = None, env: Optional[dict[str, str] | list[str]] = None,
                 warn: Optional[Warn] = _stderr, extend: bool = False) -> str:
    """Submit the study in `spec_path` as a Ray job; returns the job's submission id.

    The spec is validated first: a bad spec raises UserInputError and nothing is submitted. A
    study that already runs on the cluster (same name and storage, job PENDING or RUNNING) is
    refused rather than started twice against the same storage.
    """
    submission = prepare_submission(spec_path, working_dir, extra_pip, env, extend=extend)
    client = connect(address)
    where = _address_of(client)
    with _translate_errors(where):
        for job in client.list_jobs():
            meta = job.metadata or {}
            if (meta.get(META_STUDY) == submission.spec.name and meta.get(META_STORAGE) == submission.spec.storage
                    and str(_status(job)) in ACTIVE_STATUSES):
                raise UserInputError("SPEC", f"study {submission.spec.name!r} is already {_status(job)} on {where} "
                                     f"as job {job.submission_id}",
                                     f"follow it with `mcscale logs {job.submission_id} --follow`, or stop it with "
                                     f"`mcscale stop {job.submission_id}` before submitting again")
    if warn is not None:
        for note in submission.notes:
            warn(note)
    with _quiet_ray_logs(), _translate_errors(where):
        try:
            return client.submit_job(entrypoint=submission.entrypoint, runtime_env=submission.runtime_env,
                                     metadata=submission.metadata, submission_id=submission.submission_id)
        except UserInputError:
            raise
        except ValueError as exc:  # Ray refuses the package (too large, unreadable files, ...)
            raise UserInputError("--working-dir", f"Ray refused to package {submission.working_dir}: "
                                 f"{_first_line(exc)}", "exclude large files with a .rayignore file, or pass "
                                 "--working-dir with a smaller folder") from None


def _status(job: Any) -> str:
    status = job.status
    return getattr(status, "value", str(status))


def job_status(address: Optional[str], job_id: str):
    """The job's `JobDetails` (status, message, times, metadata, entrypoint)."""
    client = connect(address)
    with _translate_errors(_address_of(client), job_id):
        return client.get_job_info(job_id)


def list_jobs(address: Optional[str]) -> list:
    """All jobs the cluster knows, newest first."""
    client = connect(address)
    with _translate_errors(_address_of(client)):
        jobs = client.list_jobs()
    return sorted(jobs, key=lambda j: j.start_time or 0, reverse=True)


def stop_job(address: Optional[str], job_id: str) -> bool:
    """Ask the cluster to stop the job; False when it had already finished."""
    client = connect(address)
    with _translate_errors(_address_of(client), job_id):
        client.get_job_info(job_id)  # a clear error for an unknown id
        return bool(client.stop_job(job_id))


def job_logs(address: Optional[str], job_id: str, follow: bool = False,
             write: Optional[Callable[[str], Any]] = None) -> Optional[str]:
    """The job's driver log. Without `follow`, returns it; with `follow`, writes chunks as the job
    produces them (through `write`, default stdout) until the job ends, and returns None."""
    client = connect(address)
    where = _address_of(client)
    with _translate_errors(where, job_id):
        client.get_job_info(job_id)  # unknown id -> UserInputError, before opening a stream
        if not follow:
            return client.get_job_logs(job_id)

    def _stdout(chunk: str) -> None:
        sys.stdout.write(chunk)
        sys.stdout.flush()

    emit = write or _stdout

    async def _tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            emit(chunk)

    import aiohttp

    with _quiet_ray_logs(), _translate_errors(where, job_id):
        try:
            asyncio.run(_tail())
        except (aiohttp.ClientError, RuntimeError) as exc:
            raise UserInputError("--address", f"lost the log stream from {where} ({_first_line(exc)})",
                                 f"check the cluster, then run `mcscale logs {job_id} --follow` again (the job "
                                 "itself goes on)") from None
    return None


def wait_for_job(address: Optional[str], job_id: str, timeout_s: Optional[float] = None,
                 poll_s: float = 2.0) -> str:
    """Poll until the job reaches a terminal status; returns it (or the last status on timeout)."""
    client = connect(address)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with _translate_errors(_address_of(client), job_id):
        while True:
            raw = client.get_job_status(job_id)
            status = str(getattr(raw, "value", raw))
            if status in TERMINAL_STATUSES or (deadline is not None and time.monotonic() > deadline):
                return status
            time.sleep(poll_s)


# ----------------------------------------------------------------------------- KubeRay RayJob manifests
KUBERAY_SCHEMAS_ENV = "MCSCALE_KUBERAY_SCHEMAS"
CLUSTER_TEMPLATE = Path("cluster") / "kuberay" / "raycluster.yaml"
STUDY_ENV_SECRET = "mcscale-study-env"  # what the template's pods load with envFrom (cluster/kuberay/secret.yaml)
SCHEMAS_FIX = ("point it at a folder holding raycluster_v1_strict.json and rayjob_v1_strict.json "
               "(cluster/kuberay/schemas in the mcscale repository)")
RAYJOB_TTL_SECONDS = 3600  # a finished job's cluster is deleted; its pods' logs stay this long
RAYJOB_BACKOFF_LIMIT = 2  # a failed job is retried: the study resumes from its storage, nothing is rerun
TEMPLATE_FIX = "pass --cluster-template with a RayCluster manifest (ray.io/v1), e.g. cluster/kuberay/raycluster.yaml"


def kuberay_schema_dir() -> Optional[Path]:
    """Where the KubeRay CRD JSON schemas are: $MCSCALE_KUBERAY_SCHEMAS, else the checkout's copy."""
    configured = os.environ.get(KUBERAY_SCHEMAS_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    root = project_root()
    return root / "cluster" / "kuberay" / "schemas" if root is not None else None


def kuberay_errors(manifest: dict[str, Any], strict: bool = True, schema_dir: Optional[Path] = None) -> list[str]:
    """Every way `manifest` (a RayCluster or RayJob) breaks KubeRay's CRD schema, as `path: message`
    lines (empty when valid). The strict schemas reject unknown, e.g. misspelt, fields."""
    import json

    from jsonschema import Draft7Validator

    kind = str(manifest.get("kind", "")).lower()
    if kind not in ("raycluster", "rayjob") or manifest.get("apiVersion") != "ray.io/v1":
        return [f"apiVersion/kind: expected ray.io/v1 RayCluster or RayJob, got {manifest.get('apiVersion')!r} "
                f"{manifest.get('kind')!r}"]
    folder = schema_dir or kuberay_schema_dir()
    if folder is None:
        raise UserInputError(f"${KUBERAY_SCHEMAS_ENV}", "cannot find the KubeRay CRD schemas", SCHEMAS_FIX)
    schema_file = folder / f"{kind}_v1{'_strict' if strict else ''}.json"
    if not schema_file.is_file():
        raise UserInputError(f"${KUBERAY_SCHEMAS_ENV}", f"{schema_file} does not exist", SCHEMAS_FIX + ", or unset it")
    schema = json.loads(schema_file.read_text())
    errors = sorted(Draft7Validator(schema).iter_errors(manifest), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}" for e in errors]


def _dns_name(text: str) -> str:
    """A Kubernetes object name (RFC 1123 label, <= 63 characters) made from `text`."""
    import re

    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return (name[:63].rstrip("-")) or "mcscale"


def _load_cluster_template(template: Optional[str | Path]) -> tuple[Path, dict[str, Any]]:
    import yaml

    if template is None:
        root = project_root()
        if root is None or not (root / CLUSTER_TEMPLATE).is_file():
            raise UserInputError("--cluster-template", "no RayCluster template given and mcscale does not run from "
                                 "a checkout holding cluster/kuberay/raycluster.yaml", TEMPLATE_FIX)
        path = root / CLUSTER_TEMPLATE
    else:
        path = Path(template).expanduser()
    try:
        manifest = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserInputError("--cluster-template", f"cannot read {path}: {_first_line(exc)}", TEMPLATE_FIX) from None
    if not isinstance(manifest, dict) or manifest.get("kind") != "RayCluster":
        raise UserInputError("--cluster-template", f"{path} is not a RayCluster manifest", TEMPLATE_FIX)
    errors = kuberay_errors(manifest)
    if errors:
        raise UserInputError("--cluster-template", f"{path} is not a valid RayCluster: {errors[0]}"
                             + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
                             "fix the field named (KubeRay's strict CRD schema), or start from "
                             "cluster/kuberay/raycluster.yaml")
    return path, manifest


def _quantity(value: Any) -> float:
    """A Kubernetes CPU / GPU quantity ("8", "500m", 8) as a number."""
    text = str(value).strip()
    try:
        return float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise UserInputError("--cluster-template", f"{text!r} is not a CPU or GPU count mcscale can read",
                             "write worker limits as plain numbers or millicores, e.g. cpu: \"72\" or 500m") from None


def _trial_shapes(spec: StudySpec) -> list[tuple[str, float, float]]:
    """(where, GPUs, CPUs) one trial needs: the spec's `resources`, then each `resources.by_size` override
    (CPUs are per worker, so a multi-worker trial needs cpus_per_trial x its workers)."""
    res = spec.resources
    shapes = [("resources", res)] + [(f"resources.by_size[{i}]", res.merged(o)) for i, o in enumerate(res.by_size)]
    return [(where, float(shape.gpus_per_trial), float(shape.cpus_per_trial) * shape.workers) for where, shape in shapes]


def _size_gpu_groups(spec: StudySpec, cluster: dict[str, Any]) -> list[str]:
    """Check one trial fits a GPU worker pod and let the GPU groups scale to the spec's concurrency."""
    notes = []
    groups = cluster["spec"].get("workerGroupSpecs") or []
    pods = []
    for group in groups:
        for container in group["template"]["spec"]["containers"][:1]:
            limits = (container.get("resources") or {}).get("limits") or {}
            pods.append((group, _quantity(limits.get("nvidia.com/gpu", 0)), _quantity(limits.get("cpu", 0))))
    for where, gpus, cpus in _trial_shapes(spec):
        fits = [p for p in pods if p[1] >= gpus and (p[2] == 0 or p[2] >= cpus)]
        if not fits:
            biggest = max(pods, key=lambda p: p[1], default=(None, 0.0, 0.0))
            raise UserInputError(f"{where}.gpus_per_trial", f"a trial needs {gpus:g} GPUs and {cpus:g} CPUs, but the "
                                 f"largest worker pod of the cluster template has {biggest[1]:g} GPUs and "
                                 f"{biggest[2]:g} CPUs", "lower the trial's resources, or give the template a "
                                 "worker group with larger pods")
        group, pod_gpus, _ = fits[0]
        if gpus > 0 and pod_gpus > 0:
            trials_per_pod = max(1, int(pod_gpus // gpus))
            wanted = math.ceil(spec.concurrency / trials_per_pod)
            if int(group.get("maxReplicas", 0)) < wanted:
                group["maxReplicas"] = wanted
                notes.append(f"note: worker group {group['groupName']} may grow to {wanted} pods "
                             f"({spec.concurrency} concurrent trials, {trials_per_pod} per pod).")
    return notes


def kuberay_rayjob(spec_path: str | Path, cluster_template: Optional[str | Path] = None,
                   image: Optional[str] = None, namespace: Optional[str] = None,
                   spec_in_image: Optional[str] = None) -> tuple[dict[str, Any], list[str]]:
    """A ready KubeRay `RayJob` (ray.io/v1) that runs the study in `spec_path`, and notes for the user.

    The spec is validated here first. The cluster shape is the RayCluster template's (by default the
    checkout's cluster/kuberay/raycluster.yaml: CPU head, 8-GPU workers), with the GPU groups allowed
    to grow to the spec's concurrency. The spec's text travels in the job's runtime environment and
    the job-side runner writes and runs it, so what was validated here is what runs; with
    `spec_in_image` the job runs that path of the image instead. Settings that are secrets (the
    MLflow URI, S3 credentials) come from the STUDY_ENV_SECRET Secret the template's pods load.
    The manifest is checked against KubeRay's strict CRD schema before it is returned.
    """
    import copy

    import yaml

    from scaling.spec import load_spec

    spec = load_spec(spec_path)
    _check_plan(spec)
    template_path, template = _load_cluster_template(cluster_template)
    cluster = copy.deepcopy(template)
    notes = [n for n in storage_notes(spec, project_root() or Path.cwd())
             if "working dir" not in n and " storage " not in n]  # the Jobs route's notes about uploads
    if not spec.storage.startswith("s3://"):
        notes.append(f"warning: storage {spec.storage!r} is a path on the head pod, whose disk KubeRay deletes with "
                     "the cluster when the job ends (results and checkpoints would be lost). Use storage: "
                     "s3://bucket/prefix.")
    if spec.tracking_uri:
        notes.append(f"note: the spec sets tracking_uri {redact_uri(spec.tracking_uri)}; it wins over the Secret's "
                     "MLFLOW_TRACKING_URI (leave tracking_uri empty to take the cluster's).")
    notes.extend(_size_gpu_groups(spec, cluster))
    pod_specs = [cluster["spec"]["headGroupSpec"]["template"]["spec"]]
    pod_specs += [g["template"]["spec"] for g in cluster["spec"].get("workerGroupSpecs") or []]
    if image:
        for pod in pod_specs:
            for container in pod["containers"]:
                container["image"] = image
    env_vars = {"PYTHONUNBUFFERED": "1"}
    if spec_in_image:
        entrypoint = f"mcscale run {shlex.quote(spec_in_image)} --address auto"
    else:
        path = Path(spec_path).expanduser()
        text = path.read_bytes()
        if len(text) > MAX_INLINE_SPEC_BYTES:
            raise UserInputError("SPEC", f"{path} is too large ({len(text)} bytes) to travel in the RayJob",
                                 "bake it into the image and pass --spec-in-image PATH")
        env_vars.update({SPEC_ENV: base64.b64encode(text).decode(), SPEC_NAME_ENV: path.name})
        entrypoint = "python -m scaling.study.submit --address auto"
    labels = {"app.kubernetes.io/name": "mcscale", "mcscale/study": _dns_name(spec.name)}
    metadata = {"name": _dns_name(f"mcscale-{spec.name}"), "labels": labels}
    ns = namespace or template.get("metadata", {}).get("namespace")
    if ns:
        metadata["namespace"] = ns
    job = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": metadata,
           "spec": {"entrypoint": entrypoint,
                    "runtimeEnvYAML": yaml.safe_dump({"env_vars": env_vars}, sort_keys=True),
                    "shutdownAfterJobFinishes": True, "ttlSecondsAfterFinished": RAYJOB_TTL_SECONDS,
                    "backoffLimit": RAYJOB_BACKOFF_LIMIT, "rayClusterSpec": cluster["spec"]}}
    errors = kuberay_errors(job)
    if errors:  # the template passed on its own, so this is a field mcscale wrote
        raise RuntimeError(f"mcscale built an invalid RayJob from {template_path}: {errors[:3]}")
    return job, notes


def rayjob_yaml(job: dict[str, Any]) -> str:
    """The manifest as YAML for `kubectl apply -f -`, with a header saying where it came from."""
    import yaml

    class Dumper(yaml.SafeDumper):  # multi-line strings (runtimeEnvYAML) as readable `|` blocks
        pass

    Dumper.add_representer(str, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v,
                                                                style="|" if "\n" in v else None))
    study = job["metadata"]["labels"].get("mcscale/study", "")
    return (f"# RayJob for the mcscale study {study!r}, generated by `mcscale submit --kuberay`.\n"
            f"# Apply with `kubectl apply -f FILE` after the Secret {STUDY_ENV_SECRET} (cluster/kuberay/secret.yaml).\n"
            + yaml.dump(job, Dumper=Dumper, sort_keys=False, width=120))


# ----------------------------------------------------------------------------- job-side runner
def _job_main(argv: list[str]) -> None:
    """On the cluster: write the spec carried in the job's environment to a file and run it."""
    encoded = os.environ.get(SPEC_ENV)
    if not encoded:
        raise SystemExit(f"mcscale: ${SPEC_ENV} is not set; this runner is started by `mcscale submit`")
    name = os.path.basename(os.environ.get(SPEC_NAME_ENV) or "spec.yaml")
    folder = Path(tempfile.mkdtemp(prefix="mcscale-spec-"))
    spec_file = folder / name
    spec_file.write_bytes(base64.b64decode(encoded))
    # Become `mcscale run` (same pid, so the Jobs API's stop signal reaches the study driver) rather
    # than import the command line: the CLI imports this module, and this one stays below it.
    os.execv(sys.executable, [sys.executable, "-m", "scaling", "run", str(spec_file), *argv])


if __name__ == "__main__":
    _job_main(sys.argv[1:])
