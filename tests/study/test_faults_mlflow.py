"""MLflow going away never stops or slows a study, and MLflow is made complete afterwards.

The tracking server is the one-machine service stack (`cluster/mlflow/serve-local`: MLflow on
PostgreSQL, artifacts on an S3 server), started as a user starts it. Mid-study the MLflow server is
killed; the study goes on, the store gets every result, the driver keeps MLflow's records in its
outbox and says so. In CI the outage lasts until after the study ends (the mechanism is the same
as a longer outage: the records wait on disk); the server is then restarted on the same database
and `mcscale sync` replays the outbox and backfills from the store: the counts of an
uninterrupted run, and a second `sync` adds nothing.

The real 10-minute outage runs outside CI with
`MCSCALE_FAULT_MLFLOW_OUTAGE_S=600 MCSCALE_FAULT_TOKENS=1500K pytest tests/study/test_faults_mlflow.py -s`:
the server comes back after that many seconds, while the study still runs, and the driver's
background replay catches up by itself.

A second, Ray-free test drives the outbox directly against a server that comes back.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from scaling.study.outbox import MlflowOutbox
from scaling.study.store import ResultStore
from scaling.study.tracking import StudyTracker
from tests.conftest import free_port, start_mlflow_server
from tests.study.faults_support import Driver, count, fault_spec, uninterrupted, wait_until, write_spec

REPO = Path(__file__).resolve().parents[2]
SERVE_LOCAL = REPO / "cluster" / "mlflow" / "serve-local"
OUTAGE_S = float(os.environ.get("MCSCALE_FAULT_MLFLOW_OUTAGE_S", "0"))  # 0: until after the study ends
TOKENS = os.environ.get("MCSCALE_FAULT_TOKENS", "40K")


def _serve_local_module():
    loader = importlib.machinery.SourceFileLoader("serve_local", str(SERVE_LOCAL))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("serve_local", loader))
    loader.exec_module(module)
    return module


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def stack():
    """PostgreSQL + S3 + `mlflow server` through serve-local, in a folder PostgreSQL's user can reach."""
    folder = Path(tempfile.mkdtemp(prefix="mcs-fault-mlflow-", dir="/tmp"))
    folder.chmod(0o755)
    ports = {"mlflow": free_port(), "s3": free_port(), "pg": free_port()}
    started = subprocess.run([sys.executable, str(SERVE_LOCAL), "start", "--dir", str(folder),
                              "--mlflow-port", str(ports["mlflow"]), "--s3-port", str(ports["s3"]),
                              "--pg-port", str(ports["pg"])], capture_output=True, text=True, timeout=240)
    extra_pids: list[int] = []
    try:
        assert started.returncode == 0, started.stderr
        yield folder, ports, extra_pids
    finally:
        for pid in extra_pids:
            _kill_group(pid)
        subprocess.run([sys.executable, str(SERVE_LOCAL), "stop", "--dir", str(folder)], capture_output=True,
                       timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def _restart_mlflow(folder: Path, ports: dict[str, int]) -> int:
    """The stack's MLflow server again, on the same port and PostgreSQL database (serve-local's own code)."""
    module = _serve_local_module()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(module.S3_KEYS, PYTHONUNBUFFERED="1")
    return module.start_mlflow(folder, ports["mlflow"], ports["pg"], ports["s3"], env).pid


def _mcscale(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scaling", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


def test_mlflow_outage_mid_study_then_replay_and_sync_make_mlflow_complete(tmp_path, stack):
    import json

    folder, ports, extra_pids = stack
    uri = f"http://127.0.0.1:{ports['mlflow']}"
    storage = tmp_path / "runs"
    spec = fault_spec("fault-mlflow", str(storage), tracking_uri=uri, budget={"tokens": TOKENS})
    store = ResultStore(str(storage), spec["name"])

    driver = Driver(tmp_path, "run", str(write_spec(tmp_path, spec)), "--no-report")  # the fit is not the point
    wait_until(lambda: "completed" in set(store.read_trials()["status"]), "a finished trial", driver)
    mlflow_pid = json.loads((folder / "state.json").read_text())["mlflow_pid"]
    _kill_group(mlflow_pid)
    stopped_at = time.monotonic()
    restarted: list[float] = []
    if OUTAGE_S:  # outside CI: the server comes back after OUTAGE_S, whether or not the study still runs
        def back() -> None:
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped_at)))
            extra_pids.append(_restart_mlflow(folder, ports))
            restarted.append(time.monotonic())
        threading.Thread(target=back, daemon=True).start()

    assert driver.wait(timeout_s=7200) == 0, driver.tail()
    ended_at = time.monotonic()
    trials = store.read_trials()
    assert len(trials) == 3 and set(trials["status"]) == {"completed"}  # the store never waited on MLflow
    print(f"MLflow down {ended_at - stopped_at:.0f} s before the study ended; study {ended_at - driver.started:.0f} s")
    if not restarted:  # still down at the end: the driver said so, and kept what MLflow lacks
        match = re.search(r"(\d+) records wait in (\S+)", driver.stderr)
        assert match and int(match.group(1)) > 0, driver.tail()
        assert store.read_json("study.json")["status"] == "ladder-complete"
        while OUTAGE_S and not restarted:
            time.sleep(1)
        if not OUTAGE_S:
            extra_pids.append(_restart_mlflow(folder, ports))
    else:
        print(f"MLflow came back {ended_at - restarted[0]:.0f} s before the study ended")
        assert "records wait in" not in driver.stderr, driver.tail()

    synced = _mcscale("sync", spec["name"], "--storage", str(storage), cwd=tmp_path)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    print(synced.stdout.strip())
    tracker = StudyTracker(uri, spec["name"])
    counts = count(spec, store, tracker)
    print(f"after the MLflow outage: {counts.as_line()}")
    assert counts == uninterrupted(spec)
    runs = tracker.runs()
    ladder = runs[(runs["tags.mcscale.role"] == "phase") & (runs["tags.phase"] == "ladder")]
    assert list(ladder["status"]) == ["FINISHED"]
    for run_id in runs[runs["tags.mcscale.role"] == "trial"]["run_id"]:
        assert [a.path for a in tracker.client.list_artifacts(run_id)] == ["summary.json"]

    again = _mcscale("sync", spec["name"], "--storage", str(storage), cwd=tmp_path)
    assert again.returncode == 0 and ("0 outbox records replayed, 0 runs created, 0 metric points added, "
                                      "0 runs closed") in again.stdout, again.stdout + again.stderr


def test_the_outbox_keeps_records_while_the_server_is_down_and_replays_them_when_it_answers(tmp_path):
    """No Ray: records put while nothing listens replay by themselves once a server starts there."""
    server_folder = tmp_path / "server"
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    box = MlflowOutbox(tmp_path / "outbox.db", uri, "outbox-study")
    try:
        tags, config = {"config_hash": "abc", "series": "transformer"}, {"lr": 0.01, "model": {"d_model": 32}}
        box.phase_started("ladder")
        box.trial("t1", "ladder", tags, config)
        box.trial_status("t1", "RUNNING")
        for step in (10, 20):
            box.trial_metrics("t1", {"step": step, "val_loss": 3.0 - step / 100,
                                     "train_loss_steps": [[s, 4.0] for s in range(step - 9, step + 1)]}, step)
        box.trial_metrics("t1", {"step": 20, "val_loss": 2.8}, 20)  # a re-report: must not double a point
        box.trial_finished("t1", "completed")
        box.phase_finished("ladder")
        assert not box.drain(3.0) and box.pending() == 7 and not box.online

        server = start_mlflow_server(server_folder, port=port)
        try:
            assert box.drain(90.0), box.stats
            tracker = StudyTracker(uri, "outbox-study")
            runs = tracker.runs()
            trial = runs[runs["tags.mcscale.role"] == "trial"]
            assert len(trial) == 1 and trial.iloc[0]["status"] == "FINISHED"
            run_id = trial.iloc[0]["run_id"]
            assert [m.step for m in tracker.client.get_metric_history(run_id, "val_loss")] == [10, 20]
            assert sorted(m.step for m in tracker.client.get_metric_history(run_id, "train_loss_step")) == \
                list(range(1, 21))
            assert tracker.client.get_run(run_id).data.params["model.d_model"] == "32"
            assert box.failed() == [] and box.stats.replayed == 7
        finally:
            from tests.conftest import _end_process_group

            _end_process_group(server.process)
    finally:
        box.close()
