"""S3 storage refusing connections mid-study, with MLflow's PostgreSQL unreachable from the start.

The study's storage is a real S3 server (moto) reached through a loopback TCP proxy; once a trial
has finished, the proxy is cut (connections refused, open ones reset) for MCSCALE_FAULT_S3_OUTAGE_S
seconds (25 in CI; 60 was run too) while trials still run. The store's writes, Tune's experiment state and the
trials' checkpoint uploads all retry with backoff, so the study completes with every trial once.

Its tracking URI is a `postgresql+psycopg2://` database where nothing listens: the driver decides in
seconds (the warning is on stderr before the first trial finishes), runs the study with the MLflow
outbox, and `mcscale sync` says clearly that the database is down. Then PostgreSQL is started there
(cluster/mlflow/serve-local's own code, unprivileged) and `mcscale sync` makes MLflow complete.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from scaling.study.store import ResultStore
from scaling.study.tracking import StudyTracker
from tests.conftest import free_port
from tests.study.faults_support import (CuttableProxy, Driver, count, fault_spec, uninterrupted, wait_until,
                                        write_spec)

REPO = Path(__file__).resolve().parents[2]
# The full minute (pyarrow's own 3 retries gave up in under 1 s, the store's in under 4 s: a 20 s
# outage killed the study); MCSCALE_FAULT_S3_OUTAGE_S sets another length.
OUTAGE_S = float(os.environ.get("MCSCALE_FAULT_S3_OUTAGE_S", "60"))
PG_PASSWORD = "fault-test-only"


def _serve_local():
    path = REPO / "cluster" / "mlflow" / "serve-local"
    loader = importlib.machinery.SourceFileLoader("serve_local", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("serve_local", loader))
    loader.exec_module(module)
    return module


@pytest.fixture
def pg_state():
    """A folder for a PostgreSQL started later on a port chosen now (nothing listens there yet)."""
    folder = Path(tempfile.mkdtemp(prefix="mcs-fault-pg-", dir="/tmp"))
    folder.chmod(0o755)  # PostgreSQL's unprivileged user must reach its data folder
    (folder / "pg-password").write_text(PG_PASSWORD)
    (folder / "pg-password").chmod(0o600)
    module = _serve_local()
    try:
        yield folder, free_port(), module
    finally:
        if (folder / "postgres" / "postmaster.pid").exists():
            module.stop_postgres(folder, "postgres")
        shutil.rmtree(folder, ignore_errors=True)


def _mcscale(*args: str, cwd: Path, env: dict[str, str]):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "scaling", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=env)


def test_s3_outage_mid_study_and_an_unreachable_postgresql_tracking_store(tmp_path, s3_server, pg_state):
    folder, pg_port, serve_local = pg_state
    bucket = s3_server.make_bucket()
    proxy = CuttableProxy(s3_server.host, s3_server.port)
    uri = f"postgresql+psycopg2://{serve_local.PG_USER}:{PG_PASSWORD}@127.0.0.1:{pg_port}/{serve_local.PG_DB}"
    spec = fault_spec("fault-s3", f"s3://{bucket}/studies", s3_endpoint=proxy.endpoint)
    store = ResultStore(spec["storage"], spec["name"], s3_server.endpoint)  # the test reads past the proxy
    # The password travels by environment, as a spec may not carry one (it is stored with the study).
    env = dict(os.environ, MCSCALE_STATE_DIR=str(tmp_path / "state"), MLFLOW_TRACKING_URI=uri)
    try:
        driver = Driver(tmp_path, "run", str(write_spec(tmp_path, spec)), "--no-report", env=env)
        wait_until(lambda: "completed" in set(store.read_trials()["status"]), "a finished trial", driver)
        warned_s = time.monotonic() - driver.started
        assert "MLflow is not reachable" in driver.stderr, driver.tail()  # decided before the first trial ended
        assert PG_PASSWORD not in driver.stderr
        proxy.cut()
        cut_at = time.monotonic()
        time.sleep(OUTAGE_S)
        assert driver.process.poll() is None, "the study ended during the outage:\n" + driver.tail()
        proxy.restore()
        assert driver.wait() == 0, driver.tail()
        print(f"S3 refused connections for {OUTAGE_S:.0f} s; the study ended {time.monotonic() - cut_at:.0f} s after "
              f"the cut, {time.monotonic() - driver.started:.0f} s after its start; the first trial had finished "
              f"{warned_s:.0f} s after the start, with the MLflow warning already on stderr")
    finally:
        proxy.close()
    assert "records wait in" in driver.stderr, driver.tail()
    trials = store.read_trials()
    assert len(trials) == 3 and set(trials["status"]) == {"completed"}

    down = _mcscale("sync", spec["name"], "--storage", spec["storage"], "--s3-endpoint", s3_server.endpoint,
                    cwd=tmp_path, env=env)
    assert down.returncode == 2 and "tracking_uri" in down.stderr and "Traceback" not in down.stderr, down.stderr
    assert PG_PASSWORD not in down.stderr + down.stdout

    serve_local.start_postgres(folder, pg_port, "postgres")
    synced = _mcscale("sync", spec["name"], "--storage", spec["storage"], "--s3-endpoint", s3_server.endpoint,
                      cwd=tmp_path, env=env)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    print(synced.stdout.strip())
    counts = count(spec, store, StudyTracker(uri, spec["name"]))
    print(f"after the S3 outage: {counts.as_line()}")
    assert counts == uninterrupted(spec)
