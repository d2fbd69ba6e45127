"""No secret is ever written: a study on S3 with credentials and a password in the tracking URI,
then every file it touched is searched for them, as an attacker with read access would.

The study runs as a user runs it (`mcscale run`, embedded Ray with its own temp dir, Parquet on a
real S3-compatible server, an MLflow server reached through ``http://user:PASSWORD@...``, which the
server ignores). Searched: every object in the bucket (Parquet decoded too, since compression could
hide a string), the MLflow server's folder (database, artifacts, log), the Ray session folder of
the run (runtime_env_agent.log held the AWS keys before), mcscale's home and the captured output.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scaling.errors import UserInputError
from scaling.redact import redact_text, redact_uri, uri_has_secret

KEY_ID = "AKIAMCSCALE7LEAKTEST"
SECRET_KEY = "mcscaleLeakTestSecretKey0123456789abcdefg"
PASSWORD = "mcscale-leak-test-password-5361"
SECRETS = (KEY_ID, SECRET_KEY, PASSWORD)


def _tiny_spec(name: str, storage: str, endpoint: str) -> dict:
    return {"name": name,
            "data": {"corpus": {"source": "builtin", "max_bytes": 200_000}, "seq_len": 64,
                     "evals": {"every_steps": 5, "val_windows": 1}},
            "architectures": [{"name": "transformer"}], "ladder": {"sizes": ["20K"], "head_dim": 16},
            "budget": {"tokens": "5K"}, "optimizer": {"batch_tokens": 512}, "resources": {"cpus_per_trial": 1},
            "concurrency": 1, "storage": storage, "s3_endpoint": endpoint}


def _leaks(name: str, data: bytes) -> list[str]:
    return [f"{name}: {secret[:8]}..." for secret in SECRETS if secret.encode() in data]


def _parquet_text(data: bytes) -> bytes:
    import pyarrow.parquet as pq

    return str(pq.read_table(io.BytesIO(data)).to_pylist()).encode()


def _scan_folder(folder: Path) -> tuple[list[str], int]:
    found, files = [], 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            files += 1
            data = path.read_bytes()
            found += _leaks(str(path), data)
            if path.suffix == ".parquet":
                found += _leaks(f"{path} (decoded)", _parquet_text(data))
    return found, files


@pytest.fixture
def short_tmp():
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="mcs-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_study_on_s3_with_credentials_and_a_tracking_password_writes_neither(tmp_path, short_tmp, s3_server,
                                                                                mlflow_server):
    from scaling.study.tracking import MODEL_TRAINING_KIND, StudyTracker

    bucket = s3_server.make_bucket()
    spec = _tiny_spec("secrets", f"s3://{bucket}/studies", s3_server.endpoint)
    spec_path = tmp_path / "secrets.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    uri = mlflow_server.uri.replace("http://", f"http://mcuser:{PASSWORD}@")
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    for folder in (home, cwd):
        folder.mkdir()
    ray_tmp = short_tmp  # Ray's socket paths must stay under 108 bytes
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET_KEY, MLFLOW_TRACKING_URI=uri,
               RAY_TMPDIR=str(ray_tmp), MCSCALE_HOME=str(home))
    result = subprocess.run([sys.executable, "-m", "scaling", "run", str(spec_path), "--no-report"], env=env,
                            cwd=cwd, capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 trials (1 completed)" in result.stdout and "mcuser:***@" in result.stdout

    leaks = _leaks("stdout", result.stdout.encode()) + _leaks("stderr", result.stderr.encode())
    client = s3_server.client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    for key in keys:
        data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        leaks += _leaks(f"s3://{bucket}/{key}", data)
        if key.endswith(".parquet"):
            leaks += _leaks(f"s3://{bucket}/{key} (decoded)", _parquet_text(data))
    root = "studies/secrets"
    for expected in ("ray/ladder/tuner.pkl", "spec.yaml", "study.json", "trials/"):  # what held or could hold them
        assert any(k.startswith(f"{root}/{expected}") for k in keys), (expected, keys)
    assert any(k.startswith(f"{root}/ray/ladder/basic-variant-state") for k in keys), keys
    sessions = list((ray_tmp / "ray").glob("session_2*"))
    assert sessions and any((s / "logs" / "runtime_env_agent.log").is_file() for s in sessions)
    for folder in (ray_tmp, mlflow_server.artifact_root.parent, home):
        found, _ = _scan_folder(folder)
        leaks += found
    assert leaks == []

    # the URI is recorded, redacted; MLflow's data stays with the study, not in the current folder
    state = yaml.safe_load(client.get_object(Bucket=bucket, Key=f"{root}/study.json")["Body"].read())
    assert state["mlflow"] == {"tracking_uri": redact_uri(uri), "artifact_location": f"s3://{bucket}/{root}/mlflow-artifacts"}
    assert sorted(p.name for p in cwd.iterdir()) == []  # no ./mlruns, no ./mcscale-runs
    assert any(k.startswith(f"{root}/mlflow-artifacts/") and k.endswith("summary.json") for k in keys), keys
    tracker = StudyTracker(mlflow_server.uri, "secrets")
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == MODEL_TRAINING_KIND
    assert experiment.artifact_location == f"s3://{bucket}/{root}/mlflow-artifacts"
    runs = tracker.runs()
    trial = runs[runs["tags.mcscale.role"] == "trial"]
    assert list(trial["run_name"]) == ["transformer@20K"] and list(trial["tags.trial_id"]) == ["ladder-transformer-cna-20k-s0"]


def test_tune_no_longer_copies_credentials_into_trial_runtime_envs():
    from scaling.study.ray_credentials import credentials_propagated, keep_credentials_out_of_ray

    from ray.tune.execution import class_cache

    assert "AWS_SECRET_ACCESS_KEY" in class_cache.ENV_VARS_TO_PROPAGATE or credentials_propagated() == []
    keep_credentials_out_of_ray()
    assert credentials_propagated() == []
    assert "PL_DISABLE_FORK" in class_cache.DEFAULT_ENV_VARS  # only the credentials were taken out


def test_redaction_masks_passwords_and_secret_parameters_only():
    assert redact_uri("postgresql+psycopg2://mlflow:hunter2@db:5432/mlflow") == "postgresql+psycopg2://mlflow:***@db:5432/mlflow"
    assert redact_uri("https://u:p%40ss@mlflow.example/x") == "https://u:***@mlflow.example/x"
    assert redact_uri("s3://b/p?access_key=AK&secret_key=SK&region=r") == "s3://b/p?access_key=***&secret_key=***&region=r"
    for plain in ("http://127.0.0.1:5000", "sqlite:////tmp/a/mlflow.db", "s3://bucket/prefix", None, "./runs"):
        assert redact_uri(plain) == plain and not uri_has_secret(plain)
    assert redact_text("MLflow at postgresql://a:hunter2@h/db refused") == "MLflow at postgresql://a:***@h/db refused"


def test_a_spec_with_a_password_and_a_job_env_with_credentials_are_refused(tmp_path):
    from scaling.study.submit import prepare_submission

    spec = _tiny_spec("pw", str(tmp_path / "runs"), "http://127.0.0.1:1")
    spec["tracking_uri"] = f"postgresql+psycopg2://mlflow:{PASSWORD}@127.0.0.1:1/mlflow"
    path = tmp_path / "pw.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = subprocess.run([sys.executable, "-m", "scaling", "run", str(path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "tracking_uri" in result.stderr and "MLFLOW_TRACKING_URI" in result.stderr
    assert "Traceback" not in result.stderr and PASSWORD not in result.stdout + result.stderr
    assert not (tmp_path / "runs").exists()

    del spec["tracking_uri"], spec["s3_endpoint"]
    path.write_text(yaml.safe_dump(spec))
    for entry in (f"AWS_SECRET_ACCESS_KEY={SECRET_KEY}", f"AWS_ACCESS_KEY_ID={KEY_ID}", f"PGPASSWORD={PASSWORD}",
                  f"MLFLOW_TRACKING_URI=http://u:{PASSWORD}@mlflow:5000"):
        with pytest.raises(UserInputError) as err:
            prepare_submission(path, working_dir=tmp_path, env=[entry])
        assert err.value.field == "--env" and PASSWORD not in str(err.value) and SECRET_KEY not in str(err.value)
    ok = prepare_submission(path, working_dir=tmp_path, env=["MLFLOW_TRACKING_URI=http://mlflow:5000"])
    assert ok.runtime_env["env_vars"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
