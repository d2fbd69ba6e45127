"""`mcscale ls / show / ui / resume` against real stores (Parquet on disk, MLflow SQLite)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

from scaling.study.store import ResultStore, trial_row
from scaling.study.tracking import StudyTracker, default_tracking_uri

from tests.conftest import free_port


def _mcscale(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scaling", *args], capture_output=True, text=True, timeout=timeout)


def _seed_store(storage: str, study: str) -> None:
    store = ResultStore(storage, study)
    store.write_json("study.json", {"name": study, "status": "ladder-complete"})
    for i, status in enumerate(["completed", "completed", "diverged"]):
        tags = {"architecture": "swla+grm", "size_label": f"{i + 1}0K", "n_segments": "4", "phase": "ladder"}
        store.write_trial(f"ladder-t{i}", trial_row(f"ladder-t{i}", "ladder", tags,
                                                      {"status": status, "step": 10, "val_loss": 3.0 + i}, {}))


def test_ls_and_show_list_studies_and_trials(tmp_path):
    storage = str(tmp_path / "runs")
    _seed_store(storage, "alpha")
    listed = _mcscale("ls", "--storage", storage)
    assert listed.returncode == 0 and "alpha" in listed.stdout and "ladder-complete" in listed.stdout
    shown = _mcscale("show", "alpha", "--storage", storage)
    assert shown.returncode == 0
    for cell in ("swla+grm", "10K", "20K", "30K", "diverged"):  # one row per trial, by series and size
        assert cell in shown.stdout


def test_show_and_resume_of_an_unknown_study_exit_2(tmp_path):
    for command in ("show", "resume"):
        result = _mcscale(command, "nope", "--storage", str(tmp_path))
        assert result.returncode == 2 and "nope" in result.stderr and "Traceback" not in result.stderr


def test_corrupt_results_file_is_a_clear_error_and_is_left_alone(tmp_path):
    storage = str(tmp_path / "runs")
    _seed_store(storage, "beta")
    bad = tmp_path / "runs" / "beta" / "trials" / "ladder-t1.parquet"
    bad.write_bytes(b"not parquet at all")
    result = _mcscale("show", "beta", "--storage", storage)
    assert result.returncode == 2 and "ladder-t1.parquet" in result.stderr and "Traceback" not in result.stderr
    assert bad.read_bytes() == b"not parquet at all"


def test_ui_serves_the_study_store_on_loopback(tmp_path):
    storage = tmp_path / "runs"
    tracker = StudyTracker(default_tracking_uri(str(storage / "gamma")), "gamma")
    tracker.phase_run("ladder")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "scaling", "ui", "gamma", "--storage", str(storage),
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline, body = time.monotonic() + 90, ""
        while time.monotonic() < deadline and not body:
            assert process.poll() is None, process.stdout.read().decode()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search"
                                            "?max_results=10", timeout=2) as response:
                    body = response.read().decode()
            except OSError:
                time.sleep(1)
        assert '"gamma"' in body
        import psutil  # the store URI travels in the environment, not on any command line (`ps` shows those)

        for child in psutil.Process(process.pid).children(recursive=True):
            assert "mlflow.db" not in " ".join(child.cmdline())
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
