"""`mcscale submit / status / logs / stop` against a real Ray cluster started here with `ray start`.

The cluster is a head node started the way users start one (`ray start --head --block` with the
dashboard, which serves the Jobs API), with token authentication on: RAY_AUTH_MODE=token and a
random RAY_AUTH_TOKEN in the environment of the cluster and of every `mcscale` call. Every port
is a free one, so it runs beside other Ray instances on the machine. Teardown SIGTERMs the
blocking `ray start` (which stops every process it started) and then ends, by PID, any survivor
that carries this cluster's token or temp dir - never `ray stop`, which would end every Ray
process of the user on the machine.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from scaling.errors import UserInputError
from scaling.study.submit import (DEFAULT_EXCLUDES, SPEC_ENV, job_logs, job_status, list_jobs, prepare_submission,
                                  stop_job)
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CLUSTER_READY_TIMEOUT_S = 150.0
JOB_TIMEOUT_S = 240.0
ADDRESS_VARS = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MCSCALE_RAY_ADDRESS")


def _mcscale_cmd() -> list[str]:
    script = BIN / "mcscale"
    return [str(script)] if script.exists() else [sys.executable, "-m", "scaling"]


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ADDRESS_VARS and not k.startswith("RAY_AUTH")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # `python` on the cluster = this venv's python
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(*args: str, env: dict[str, str], cwd: Path | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*_mcscale_cmd(), *args], env=env, cwd=cwd or REPO, capture_output=True, text=True,
                          timeout=timeout)


def assert_user_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def write_spec(folder: Path, name: str, storage: str, extra: str = "", sizes: str = "20K, 40K") -> Path:
    """Tiny transformer trials (by default two: 20K and 40K parameters, 10K tokens each)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(f"""\
name: {name}
data:
  corpus: {{source: builtin, max_bytes: 1000000}}
  seq_len: 128
  evals: {{every_steps: 10, val_windows: 2}}
architectures:
  - name: transformer
ladder: {{sizes: [{sizes}], head_dim: 16}}
budget: {{tokens: 10K}}
optimizer: {{batch_tokens: 1024}}
resources: {{cpus_per_trial: 1}}
concurrency: 2
storage: {storage}
{extra}""")
    return path


# ============================================================================ the cluster
@dataclass
class RayCluster:
    address: str  # http://127.0.0.1:DASHBOARD_PORT
    token: str
    env: dict[str, str]  # the environment every client call uses (token auth on)
    temp_dir: Path
    log_path: Path
    process: subprocess.Popen

    def jobs(self) -> list[dict]:
        """The cluster's jobs, straight from the Jobs REST API (not through the code under test)."""
        request = urllib.request.Request(f"{self.address}/api/jobs/",
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            return json.loads(resp.read())

    def job(self, job_id: str) -> dict:
        request = urllib.request.Request(f"{self.address}/api/jobs/{job_id}",
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            return json.loads(resp.read())

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def _free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _our_processes(token: str, temp_dir: Path, pgid: int) -> list:
    """Processes of this cluster: its process group, or carrying its token or its temp dir."""
    import psutil

    mine = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == os.getpid():
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if os.getpgid(proc.pid) == pgid:
                mine.append(proc)
                continue
            if str(temp_dir) in " ".join(proc.info["cmdline"] or []):
                mine.append(proc)
                continue
            if proc.environ().get("RAY_AUTH_TOKEN") == token:
                mine.append(proc)
        except (psutil.Error, OSError):
            continue
    return mine


_STOPPED: set[int] = set()  # `ray start` processes already stopped (atexit must not sweep twice)


def _alive(proc) -> bool:  # noqa: ANN001
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _stop_cluster(process: subprocess.Popen, token: str, temp_dir: Path) -> list[int]:
    """SIGTERM the blocking `ray start` (it stops what it started), then SIGKILL survivors by PID."""
    import psutil

    if process.pid in _STOPPED:
        return []
    pgid = process.pid  # started with start_new_session=True: its own group
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    survivors = _our_processes(token, temp_dir, pgid)
    deadline = time.monotonic() + 10
    while survivors and time.monotonic() < deadline:  # give stragglers a moment to exit on their own
        time.sleep(0.5)
        survivors = [p for p in survivors if _alive(p)]
    killed = []
    for proc in survivors:
        try:
            proc.kill()
            killed.append(proc.pid)
        except psutil.Error:
            pass
    _STOPPED.add(process.pid)
    shutil.rmtree(temp_dir, ignore_errors=True)
    temp_dir.parent.joinpath(f"{temp_dir.name}.log").unlink(missing_ok=True)
    return killed


def _launch(token: str) -> RayCluster:
    # short path: Ray puts Unix sockets under it (limit ~107 characters)
    temp_dir = Path(tempfile.mkdtemp(prefix="mcs-ray-", dir="/tmp"))
    env = _base_env()
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    (gcs, dashboard, client, agent_http, agent_grpc, runtime_env_agent, metrics, node_manager,
     object_manager) = _free_ports(9)
    log_path = temp_dir.parent / f"{temp_dir.name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dashboard}", "--include-dashboard=true", "--num-cpus=2",
             "--object-store-memory=200000000", "--disable-usage-stats", f"--temp-dir={temp_dir}",
             f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent_http}",
             f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={runtime_env_agent}",
             f"--metrics-export-port={metrics}", f"--node-manager-port={node_manager}",
             f"--object-manager-port={object_manager}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=temp_dir,
            start_new_session=True)
    atexit.register(_stop_cluster, process, token, temp_dir)
    return RayCluster(f"http://127.0.0.1:{dashboard}", token, env, temp_dir, log_path, process)


def start_cluster() -> RayCluster:
    """A head node with token authentication; waits until its Jobs API answers."""
    token = secrets.token_hex(32)
    problem = ""
    for _attempt in range(2):  # a second try only if another process took one of the ports meanwhile
        cluster = _launch(token)
        deadline = time.monotonic() + CLUSTER_READY_TIMEOUT_S
        while time.monotonic() < deadline and cluster.process.poll() is None:
            try:
                cluster.jobs()
                return cluster
            except (OSError, urllib.error.URLError, ValueError):
                time.sleep(1.0)
        problem = (f"`ray start` exited with {cluster.process.returncode}" if cluster.process.poll() is not None
                   else f"the Ray dashboard did not answer within {CLUSTER_READY_TIMEOUT_S:.0f} s")
        problem += f"; its log:\n{cluster.log_tail()}"
        _stop_cluster(cluster.process, token, cluster.temp_dir)
        if "already in use" not in problem.lower() and "address in use" not in problem.lower():
            break
    raise RuntimeError(problem)


@pytest.fixture(scope="module")
def ray_cluster():
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        killed = _stop_cluster(cluster.process, cluster.token, cluster.temp_dir)
        assert not _our_processes(cluster.token, cluster.temp_dir, cluster.process.pid), "Ray processes leaked"
        if killed:
            print(f"ended {len(killed)} Ray process(es) that outlived `ray start`: {killed}")


def wait_for_status(cluster: RayCluster, job_id: str, timeout_s: float = JOB_TIMEOUT_S) -> str:
    """Poll `mcscale status JOB` until the job ends; returns its final status."""
    deadline = time.monotonic() + timeout_s
    status = "?"
    while time.monotonic() < deadline:
        result = run_cli("status", job_id, "--address", cluster.address, env=cluster.env)
        assert result.returncode == 0, result.stderr
        first = result.stdout.strip().splitlines()[0].split()
        assert first[0] == job_id, result.stdout
        status = first[1]
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status
        time.sleep(2)
    return status


def parquet_count(storage: Path, study: str) -> int:
    return len(list((storage / study / "trials").glob("*.parquet")))


# ============================================================================ no cluster needed
def test_prepare_submission_builds_the_job_without_a_cluster(tmp_path):
    inside = write_spec(tmp_path / "project", "inside", "./mcscale-runs")
    (tmp_path / "project" / "scaling").mkdir()
    (tmp_path / "project" / "scaling" / "__init__.py").write_text("")
    sub = prepare_submission(inside, working_dir=tmp_path / "project", env=["FOO=bar"], extra_pip=["tqdm"])
    assert sub.entrypoint == "python -m scaling run inside.yaml --address auto"
    assert sub.runtime_env["working_dir"] == str((tmp_path / "project").resolve())
    assert "py_modules" not in sub.runtime_env  # the working dir brings its own scaling/
    for pattern in (".git", "mcscale-runs", "*.pt", "__pycache__", ".venv"):
        assert pattern in sub.runtime_env["excludes"] and pattern in DEFAULT_EXCLUDES
    assert sub.runtime_env["env_vars"]["FOO"] == "bar"
    assert not any(k.startswith("RAY_AUTH") for k in sub.runtime_env["env_vars"])  # no token leaves this machine
    assert sub.runtime_env["pip"]["packages"] == ["tqdm"]
    assert sub.metadata == {"mcscale_study": "inside", "mcscale_storage": "./mcscale-runs",
                            "mcscale_spec": "inside.yaml"}
    assert sub.submission_id.startswith("mcscale-inside-")
    assert any("relative path" in n and "s3://" in n for n in sub.notes), sub.notes

    outside = write_spec(tmp_path / "elsewhere", "outside", "s3://bucket/prefix")
    sub = prepare_submission(outside)  # default working dir: this checkout
    assert sub.runtime_env["working_dir"] == str(REPO)
    assert "py_modules" not in sub.runtime_env
    assert sub.entrypoint == "python -m scaling.study.submit --address auto"
    assert SPEC_ENV in sub.runtime_env["env_vars"]
    assert not any("storage" in n for n in sub.notes), sub.notes  # s3 storage needs no warning

    # a spec the upload would leave out (.gitignore'd or excluded) travels inline instead
    (tmp_path / "project" / ".gitignore").write_text("private/\n")
    for folder in ("private", "mcscale-runs/specs"):
        hidden = write_spec(tmp_path / "project" / folder, "hidden", str(tmp_path / "runs"))
        sub = prepare_submission(hidden, working_dir=tmp_path / "project")
        assert sub.entrypoint == "python -m scaling.study.submit --address auto", folder
        assert any("is not uploaded" in n for n in sub.notes), sub.notes

    bare = tmp_path / "bare"  # a working dir without scaling/: the local packages travel as py_modules
    spec_in_bare = write_spec(bare, "bare", str(tmp_path / "runs"))
    sub = prepare_submission(spec_in_bare, working_dir=bare)
    assert sub.entrypoint == "python -m scaling run bare.yaml --address auto"
    assert str(REPO / "scaling") in sub.runtime_env["py_modules"]

    with pytest.raises(UserInputError) as err:
        prepare_submission(spec_in_bare, env=["RAY_AUTH_TOKEN=abc"])
    assert err.value.field == "--env"


def test_no_address_and_unreachable_address_exit_2(tmp_path, monkeypatch):
    spec = write_spec(tmp_path, "unreachable", str(tmp_path / "runs"))
    env = _base_env()
    assert_user_error(run_cli("submit", str(spec), env=env), "--address", "no Ray cluster address")
    dead = f"http://127.0.0.1:{free_port()}"
    assert_user_error(run_cli("submit", str(spec), "--address", dead, env=env), "--address", "cannot reach", dead)
    assert_user_error(run_cli("logs", "raysubmit_x", "--address", dead, env=env), "--address", "cannot reach")
    assert not (tmp_path / "runs").exists()
    # the other calls, in this process (each `mcscale` start-up costs seconds)
    for call in (lambda: list_jobs(dead), lambda: job_status(dead, "x"), lambda: stop_job(dead, "x"),
                 lambda: job_logs(dead, "x", follow=True), lambda: list_jobs(dead.removeprefix("http://"))):
        with pytest.raises(UserInputError) as err:
            call()
        assert err.value.field == "--address" and "cannot reach" in err.value.problem
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MCSCALE_RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MCSCALE_RAY_ADDRESS", dead)  # the address may come from the environment
    with pytest.raises(UserInputError) as err:
        list_jobs(None)
    assert err.value.field == "--address" and dead in err.value.problem


# ============================================================================ against the cluster
@pytest.mark.slow
def test_submit_runs_the_study_on_the_cluster(ray_cluster, tmp_path):
    storage = tmp_path / "runs"
    spec = write_spec(tmp_path / "specs", "tiny-submit", str(storage))
    before = len(ray_cluster.jobs())

    result = run_cli("submit", str(spec), "--address", ray_cluster.address, env=ray_cluster.env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"mcscale-tiny-submit-\d{8}-\d{6}-[0-9a-f]{6}", job_id), result.stdout
    assert "head node" in result.stderr  # the storage note: the path is on the cluster
    assert "Traceback" not in result.stderr

    # the same study cannot be started twice against the same storage
    again = run_cli("submit", str(spec), "--address", ray_cluster.address, env=ray_cluster.env)
    assert_user_error(again, "SPEC", "already", job_id)
    assert len(ray_cluster.jobs()) == before + 1

    status = wait_for_status(ray_cluster, job_id)
    logs = run_cli("logs", job_id, "--address", ray_cluster.address, env=ray_cluster.env)
    assert status == "SUCCEEDED", logs.stdout[-6000:] + logs.stderr
    assert logs.returncode == 0, logs.stderr
    assert "study tiny-submit" in logs.stdout
    assert "2 trials (2 completed)" in logs.stdout
    assert parquet_count(storage, "tiny-submit") == 2
    assert (storage / "tiny-submit" / "spec.yaml").read_text() == spec.read_text()

    info = ray_cluster.job(job_id)
    assert info["entrypoint"] == "python -m scaling.study.submit --address auto"  # the spec lies outside the repo
    assert info["runtime_env"]["working_dir"].startswith("gcs://_ray_pkg_")  # the code was uploaded
    assert info["metadata"]["mcscale_study"] == "tiny-submit"
    assert not any(k.startswith("RAY_AUTH") for k in info["runtime_env"].get("env_vars", {}))

    # the address from $MCSCALE_RAY_ADDRESS, and not overridden by a stale $RAY_ADDRESS (Ray's client would)
    env = dict(ray_cluster.env, MCSCALE_RAY_ADDRESS=ray_cluster.address, RAY_ADDRESS=f"http://127.0.0.1:{free_port()}")
    table = run_cli("status", env=env)
    assert table.returncode == 0, table.stderr
    assert job_id in table.stdout and "tiny-submit" in table.stdout and "SUCCEEDED" in table.stdout


@pytest.mark.slow
def test_submit_wait_follows_a_spec_inside_its_working_dir(ray_cluster, tmp_path):
    """A --working-dir without scaling/: the spec goes by its relative path, mcscale as py_modules."""
    project = tmp_path / "project"
    storage = tmp_path / "runs"
    write_spec(project, "tiny-wait", str(storage), sizes="20K")  # one trial: the two-trial run is tested above
    result = run_cli("submit", "tiny-wait.yaml", "--working-dir", str(project), "--address", ray_cluster.address,
                     "--wait", env=ray_cluster.env, cwd=project, timeout=JOB_TIMEOUT_S + 60)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    job_id = result.stdout.strip().splitlines()[0]
    assert "1 trials (1 completed)" in result.stdout  # the followed log
    assert "SUCCEEDED" in result.stderr and "WebSocket" not in result.stderr
    assert parquet_count(storage, "tiny-wait") == 1
    info = ray_cluster.job(job_id)
    assert info["entrypoint"] == "python -m scaling run tiny-wait.yaml --address auto"
    assert info["runtime_env"]["py_modules"], info["runtime_env"]


@pytest.mark.parametrize("extra, field", [("seeds: [0, 0]", "seeds"), ("bogus_field: 1", "bogus_field")])
@pytest.mark.slow
def test_bad_spec_exits_2_and_submits_nothing(ray_cluster, tmp_path, extra, field):
    spec = write_spec(tmp_path, "bad-spec", str(tmp_path / "runs"), extra=extra)
    before = len(ray_cluster.jobs())
    result = run_cli("submit", str(spec), "--address", ray_cluster.address, env=ray_cluster.env)
    assert_user_error(result, field)
    assert result.stdout.strip() == ""
    assert len(ray_cluster.jobs()) == before
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_unknown_job_and_bad_credentials_exit_2(ray_cluster):
    for args in (["status", "no-such-job"], ["logs", "no-such-job", "--follow"]):
        assert_user_error(run_cli(*args, "--address", ray_cluster.address, env=ray_cluster.env),
                          "JOB_ID", "no-such-job")
    wrong = dict(ray_cluster.env, RAY_AUTH_TOKEN=secrets.token_hex(32))
    assert_user_error(run_cli("status", "--address", ray_cluster.address, env=wrong), "RAY_AUTH_TOKEN")
    no_auth = dict(ray_cluster.env, RAY_AUTH_MODE="disabled")
    assert_user_error(run_cli("status", "--address", ray_cluster.address, env=no_auth), "RAY_AUTH_MODE")
