"""`cluster/mlflow/serve-local`: the MLflow stack (PostgreSQL, an S3 server, `mlflow server`) on one machine.

Started the way a user starts it (the script, as a process), on free loopback ports, in a state
folder every user can traverse (PostgreSQL runs unprivileged). A real study then records to it
with nothing but the `env` file the script writes: the trial runs land in PostgreSQL through the
server, their artifacts in the S3 server's bucket, the results table in S3 storage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
import yaml

from tests.conftest import free_port
from tests.study.test_study_e2e import tiny_spec

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "cluster" / "mlflow" / "serve-local"
STUDY = "serve-local-probe"


def serve_local(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


@pytest.fixture(scope="module")
def stack():
    folder = Path(tempfile.mkdtemp(prefix="mcscale-serve-local-", dir="/tmp"))
    folder.chmod(0o755)  # PostgreSQL's unprivileged user must reach its data folder
    ports = {"--mlflow-port": free_port(), "--s3-port": free_port(), "--pg-port": free_port()}
    started = serve_local("start", "--dir", str(folder), *[str(x) for kv in ports.items() for x in kv])
    try:
        assert started.returncode == 0, started.stderr
        yield folder, ports, started.stdout
    finally:
        serve_local("stop", "--dir", str(folder))


@pytest.mark.slow
def test_start_brings_up_postgres_unprivileged_s3_and_mlflow(stack):
    folder, ports, stdout = stack
    env = read_env(folder / "env")
    assert env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{ports['--mlflow-port']}"
    assert env["MCSCALE_S3_ENDPOINT"] == f"http://127.0.0.1:{ports['--s3-port']}"
    password = (folder / "pg-password").read_text()
    assert password not in stdout and oct((folder / "pg-password").stat().st_mode)[-3:] == "600"
    postmaster = int((folder / "postgres" / "postmaster.pid").read_text().split()[0])
    assert psutil.Process(postmaster).username() != "root"
    status = serve_local("status", "--dir", str(folder))
    assert status.returncode == 0 and env["MLFLOW_TRACKING_URI"] in status.stdout
    again = serve_local("start", "--dir", str(folder))
    assert again.returncode == 2 and "already running" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.slow
def test_a_study_records_to_the_stack_through_its_env_file(stack, tmp_path):
    import boto3
    import psycopg2
    from mlflow import MlflowClient

    folder, ports, _ = stack
    env = read_env(folder / "env")
    spec = tiny_spec(STUDY, "s3://mcscale-studies", architectures=[{"name": "transformer"}],
                     ladder={"sizes": ["20K"], "head_dim": 16})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert "tracking_uri" not in spec and "s3_endpoint" not in spec  # both come from the env file
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_", "MCSCALE_S3"))}
    run_env.update(env, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "scaling", "run", str(path), "--no-report"], env=run_env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(STUDY)
    runs = client.search_runs([experiment.experiment_id])
    trials = [r for r in runs if r.data.tags.get("mcscale.role") == "trial"]
    assert len(trials) == 1 and trials[0].info.status == "FINISHED"
    assert trials[0].data.metrics["val_loss"] > 0

    database = psycopg2.connect(host="127.0.0.1", port=ports["--pg-port"], user="mlflow", dbname="mlflow",
                                password=(folder / "pg-password").read_text())
    with database, database.cursor() as cursor:
        cursor.execute("SELECT run_uuid FROM runs WHERE experiment_id = %s", (int(experiment.experiment_id),))
        assert {row[0] for row in cursor.fetchall()} == {r.info.run_id for r in runs}
    database.close()

    s3 = boto3.client("s3", endpoint_url=env["MCSCALE_S3_ENDPOINT"], region_name="us-east-1",
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    # artifacts live with the study's results (scaling.study.mlflow_location), not in the server's own bucket
    assert experiment.artifact_location == f"s3://mcscale-studies/{STUDY}/mlflow-artifacts"
    artifacts = [o["Key"] for o in s3.list_objects_v2(Bucket="mcscale-studies", Prefix=f"{STUDY}/mlflow-artifacts/")
                 .get("Contents", [])]
    assert any(trials[0].info.run_id in key for key in artifacts), artifacts
    results = [o["Key"] for o in s3.list_objects_v2(Bucket="mcscale-studies", Prefix=f"{STUDY}/trials/")
               .get("Contents", [])]
    assert any(key.endswith(".parquet") for key in results), results


def test_bad_input_exits_2_without_a_traceback(tmp_path):
    busy = free_port()
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", busy))
        listener.listen()
        result = serve_local("start", "--dir", str(tmp_path / "x"), "--mlflow-port", str(busy))
    assert result.returncode == 2 and "--mlflow-port" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x" / "state.json").exists()
    stopped = serve_local("stop", "--dir", str(tmp_path / "never"))
    assert stopped.returncode == 2 and "no stack" in stopped.stderr


@pytest.mark.slow
def test_stop_ends_every_process(tmp_path):
    folder = Path(tempfile.mkdtemp(prefix="mcscale-serve-local-", dir="/tmp"))
    folder.chmod(0o755)
    ports = [str(free_port()) for _ in range(3)]
    started = serve_local("start", "--dir", str(folder), "--mlflow-port", ports[0], "--s3-port", ports[1],
                          "--pg-port", ports[2])
    assert started.returncode == 0, started.stderr
    state = json.loads((folder / "state.json").read_text())
    postmaster = int((folder / "postgres" / "postmaster.pid").read_text().split()[0])
    stopped = serve_local("stop", "--dir", str(folder))
    assert stopped.returncode == 0, stopped.stderr
    for pid in (state["mlflow_pid"], state["s3_pid"], postmaster):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert serve_local("status", "--dir", str(folder)).returncode == 1
