"""Shared fixtures: real servers on loopback (S3, MLflow), started and stopped by the tests that use them.

- `free_port()`: a TCP port nobody listens on right now (also as the `unused_port` fixture).
- `s3_server` (session): a moto S3-compatible server in a thread on 127.0.0.1, with dummy AWS
  credentials in the environment for the session; `s3_server.make_bucket()` creates a fresh bucket,
  `s3_bucket` gives each test its own.
- `mlflow_server` (session): a real `mlflow server` process (SQLite backend, local artifact root,
  one worker, job execution off) on 127.0.0.1; ended with its whole process group at teardown.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DUMMY_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
             "AWS_REGION": "us-east-1"}
MLFLOW_READY_TIMEOUT_S = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def unused_port() -> int:
    return free_port()


# ============================================================================ S3 (moto)
@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    host: str
    port: int
    buckets: list[str] = field(default_factory=list)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=DUMMY_AWS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=DUMMY_AWS["AWS_SECRET_ACCESS_KEY"])

    def make_bucket(self, name: str | None = None) -> str:
        name = name or f"mcscale-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def filesystem(self):
        """A pyarrow S3FileSystem for this server."""
        from pyarrow import fs as pafs

        return pafs.S3FileSystem(endpoint_override=f"{self.host}:{self.port}", scheme="http", region="us-east-1",
                                 access_key=DUMMY_AWS["AWS_ACCESS_KEY_ID"],
                                 secret_key=DUMMY_AWS["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto) on loopback for the whole session."""
    from moto.server import ThreadedMotoServer

    patch = pytest.MonkeyPatch()
    for name, value in DUMMY_AWS.items():
        patch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_SECURITY_TOKEN"):
        patch.delenv(name, raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server(endpoint=f"http://{host}:{port}", host=host, port=port)
    finally:
        server.stop()
        patch.undo()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh, empty bucket on the session's S3 server."""
    return s3_server.make_bucket()


# ============================================================================ MLflow tracking server
@dataclass
class MlflowServer:
    uri: str  # http://127.0.0.1:PORT
    port: int
    backend_store_uri: str
    artifact_root: Path
    log_path: Path
    process: subprocess.Popen

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def _end_process_group(process: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM the server's own process group (it was started as a new session), then SIGKILL if needed."""
    if process.poll() is not None:
        return
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:
        return
    if pgid != process.pid:  # not its own group: only ever signal the process we started
        process.terminate()
    else:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            return
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    # the group may still hold a worker even when the leader exited
    if pgid == process.pid:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    elif process.poll() is None:
        process.kill()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _wait_healthy(url: str, process: subprocess.Popen, timeout_s: float) -> bool:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.25)
    return False


def start_mlflow_server(folder: Path, timeout_s: float = MLFLOW_READY_TIMEOUT_S, port: int | None = None) -> MlflowServer:
    """Start `mlflow server` (SQLite backend, local artifact root, 1 worker) on a free loopback port
    (or on `port`: a server that comes back where clients expect it)."""
    folder.mkdir(parents=True, exist_ok=True)
    artifacts = folder / "artifacts"
    artifacts.mkdir(exist_ok=True)
    backend = f"sqlite:///{folder / 'mlflow.db'}"
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true",
               DO_NOT_TRACK="true", PYTHONUNBUFFERED="1")
    last_log = ""
    wanted = port
    for _attempt in range(2):  # a second try only if another process grabbed the port meanwhile
        port = wanted or free_port()
        log_path = folder / f"server-{port}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
                 "--default-artifact-root", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
                 "--workers", "1"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=folder,
                start_new_session=True)
        atexit.register(_end_process_group, process, 5.0)
        url = f"http://127.0.0.1:{port}"
        if _wait_healthy(url, process, timeout_s):
            return MlflowServer(url, port, backend, artifacts, log_path, process)
        _end_process_group(process)
        last_log = log_path.read_text(errors="replace")[-4000:]
        if "address already in use" not in last_log.lower():
            break
    raise RuntimeError(f"mlflow server did not become healthy within {timeout_s:.0f} s; its log:\n{last_log}")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server process for the whole session."""
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        _end_process_group(server.process)
