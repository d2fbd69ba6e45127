"""A whole study through the real stack: `mcscale run` on embedded Ray, MLflow, Parquet on S3 or disk.

Each test starts what it needs (moto S3 server, MLflow server, the study driver as a real process)
and checks what a user would: every planned trial has exactly one row and one MLflow child run,
finished with the right status, also after the driver was killed mid-study and resumed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from scaling.spec import parse_spec
from scaling.study.plan import plan_ladder
from scaling.study.store import ResultStore
from scaling.study.tracking import StudyTracker

STUDY_TIMEOUT_S = 420


def tiny_spec(name: str, storage: str, **extra) -> dict:
    spec = {
        "name": name,
        "data": {"corpus": {"source": "builtin", "max_bytes": 400_000}, "seq_len": 128,
                 "evals": {"every_steps": 10, "val_windows": 2,
                           "mqar": {"n_pairs": 4, "n_queries": 4, "key_vocab": 16, "value_vocab": 16}}},
        "architectures": [{"name": "transformer"}, {"name": "swla+grm", "segment_lens": [32]}],
        "ladder": {"sizes": ["20K", "40K"], "head_dim": 16},
        "budget": {"tokens": "20K"},
        "optimizer": {"batch_tokens": 1024},
        "resources": {"cpus_per_trial": 1},
        "concurrency": 2,
        "storage": storage,
    }
    spec.update(extra)
    return spec


def write_spec(folder: Path, spec: dict) -> Path:
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def mcscale(*args: str, timeout: float = STUDY_TIMEOUT_S, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scaling", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def trial_runs(tracker: StudyTracker):
    runs = tracker.runs()
    return runs[runs["tags.mcscale.role"] == "trial"]


def test_study_end_to_end_on_s3_storage_and_an_mlflow_server(tmp_path, s3_server, mlflow_server):
    bucket = s3_server.make_bucket()
    spec = tiny_spec("e2e-s3", f"s3://{bucket}/studies", s3_endpoint=s3_server.endpoint,
                     tracking_uri=mlflow_server.uri)
    result = mcscale("run", str(write_spec(tmp_path, spec)), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "4 trials (4 completed)" in result.stdout

    planned = plan_ladder(parse_spec(spec))
    store = ResultStore(spec["storage"], spec["name"], s3_server.endpoint)
    trials = store.read_trials()
    assert sorted(trials["trial_id"]) == sorted(p.trial_id for p in planned)
    assert set(trials["status"]) == {"completed"}
    assert (trials["tokens"] == 20 * 1024).all() and (trials["val_loss"] > 0).all()
    curves = store.read_curves()
    assert set(curves["trial_id"]) == set(trials["trial_id"])
    assert not curves.duplicated(["trial_id", "step", "metric"]).any()
    assert set(curves[curves.metric == "val_loss"]["step"]) == {10, 20}

    tracker = StudyTracker(mlflow_server.uri, spec["name"])
    runs = trial_runs(tracker)
    assert sorted(runs["tags.trial_id"]) == sorted(trials["trial_id"])
    assert set(runs["status"]) == {"FINISHED"}
    one = runs.iloc[0]["run_id"]
    assert len(tracker.client.get_metric_history(one, "train_loss_step")) == 20
    assert tracker.client.get_run(one).data.params["model.mixer"] in ("attention", "swla")

    listed = mcscale("ls", "--storage", spec["storage"], "--s3-endpoint", s3_server.endpoint)
    assert listed.returncode == 0 and "e2e-s3" in listed.stdout

    # Two sizes cannot pin a law: the study still ends well, says why there is no report, keeps every result.
    assert "no report yet" in result.stdout and "at least 3 sizes" in result.stdout
    state = store.read_json("study.json")
    assert state["status"] == "ladder-complete" and "ladder.sizes" in state["report_error"]
    assert store.read_text("report/report.html") is None


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _kill_tree(process: subprocess.Popen, known: set[int]) -> None:
    """SIGKILL the driver and every process it started (Ray's GCS, raylet, workers)."""
    victims = {p.pid: p for p in _descendants(process.pid)}
    for pid in known:
        try:
            victims.setdefault(pid, psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    process.kill()
    process.wait(timeout=30)
    for proc in victims.values():
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(victims.values()), timeout=30)


def kill_study_when(driver: subprocess.Popen, store: ResultStore, study_folder: Path, ready, timeout_message: str,
                    poll_s: float = 0.5) -> None:
    """SIGKILL the study driver and everything it started once `ready(trials table)` holds."""
    known: set[int] = set()
    deadline = time.monotonic() + STUDY_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            known.update(p.pid for p in _descendants(driver.pid))
            if (study_folder / "trials").exists() and ready(store.read_trials()):
                break
            assert driver.poll() is None, "the study finished before it could be interrupted"
            time.sleep(poll_s)
        else:
            pytest.fail(timeout_message)
    finally:
        _kill_tree(driver, known)


def test_resume_after_the_driver_is_killed_gives_every_trial_once(tmp_path):
    storage = tmp_path / "runs"
    spec = tiny_spec("e2e-kill", str(storage), budget={"tokens": "40K"},
                     ladder={"sizes": ["20K", "40K", "80K"], "head_dim": 16})
    path = write_spec(tmp_path, spec)
    planned = plan_ladder(parse_spec(spec))
    driver = subprocess.Popen([sys.executable, "-m", "scaling", "run", str(path)], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    store = ResultStore(str(storage), spec["name"])
    def some_finished_others_running(trials) -> bool:  # noqa: ANN001
        return (trials["status"] == "completed").sum() >= 1 and (trials["status"] == "running").any()

    kill_study_when(driver, store, storage / spec["name"], some_finished_others_running, "no trial finished in time")
    before = store.read_trials()
    assert len(before) < len(planned) or (before["status"] != "completed").any()

    resumed = mcscale("resume", spec["name"], "--storage", str(storage), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    trials = store.read_trials()
    assert len(trials) == len(planned) and trials["trial_id"].is_unique
    assert set(trials["status"]) == {"completed"}
    assert (trials["step"] == 40).all()
    curves = store.read_curves()
    assert not curves.duplicated(["trial_id", "step", "metric"]).any()
    tracker = StudyTracker(f"sqlite:///{storage / spec['name'] / 'mlflow.db'}", spec["name"])
    runs = trial_runs(tracker)
    assert len(runs) == len(planned) and runs["tags.trial_id"].is_unique
    assert set(runs["status"]) == {"FINISHED"}
    for run_id in runs["run_id"]:  # no doubled points in a resumed run's curves
        steps = [m.step for m in tracker.client.get_metric_history(run_id, "val_loss")]
        assert steps == sorted(set(steps)) == [10, 20, 30, 40]

    # The resumed study ends with the fit and report over every trial, in storage and in MLflow.
    assert "Details" in resumed.stdout  # the report stage ran and printed its verdict (under "Details")
    assert store.read_json("study.json")["status"] == "complete"
    report = json.loads(store.read_text("report/report.json"))
    assert sorted(p["trial_id"] for p in report["points"]) == sorted(p.trial_id for p in planned)
    assert report["dropped"] == [] and report["verdict"]
    assert (storage / spec["name"] / "report" / "report.html").stat().st_size > 10_000
    phases = tracker.runs()
    report_run = phases[(phases["tags.mcscale.role"] == "phase") & (phases["tags.phase"] == "report")]
    assert len(report_run) == 1 and report_run.iloc[0]["status"] == "FINISHED"


def test_tune_phase_searches_lr_with_optuna_and_asha_then_carries_it_to_the_ladder(tmp_path):
    storage = tmp_path / "runs"
    spec = tiny_spec("e2e-tune", str(storage),
                     architectures=[{"name": "transformer"}],
                     tune={"proxy_size": "20K", "samples": 3, "tokens": "30K", "grace_period_steps": 10,
                           "reduction_factor": 2, "lr": {"low": 1e-3, "high": 3e-2}})
    result = mcscale("run", str(write_spec(tmp_path, spec)), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    store = ResultStore(str(storage), spec["name"])
    tuned = store.read_json("tuned.json")
    assert 1e-3 <= tuned["transformer"]["lr"] <= 3e-2
    trials = store.read_trials()
    tune_rows, ladder_rows = trials[trials.phase == "tune"], trials[trials.phase == "ladder"]
    assert len(tune_rows) == 3 and len(ladder_rows) == 2
    assert set(tune_rows["status"]) <= {"completed", "stopped"}
    best = tune_rows.sort_values("val_loss").iloc[0]
    assert tuned["transformer"]["lr"] == pytest.approx(best["lr"])
    proxy_width = tuned["transformer"]["proxy_width"]
    plan = {p.trial_id: p for p in plan_ladder(parse_spec(spec), tuned)}
    for _, row in ladder_rows.iterrows():
        d = plan[row["trial_id"]].config.model.d_model
        assert row["lr"] == pytest.approx(tuned["transformer"]["lr"] * proxy_width / d)
    tracker = StudyTracker(f"sqlite:///{storage / spec['name'] / 'mlflow.db'}", spec["name"])
    runs = trial_runs(tracker)
    assert len(runs) == 5
    assert set(runs["status"]) <= {"FINISHED", "KILLED"}


def test_bad_spec_exits_2_naming_the_field_and_records_nothing(tmp_path):
    storage = tmp_path / "runs"
    spec = tiny_spec("e2e-bad", str(storage))
    spec["architectures"][1]["segment_lens"] = [48]
    result = mcscale("run", str(write_spec(tmp_path, spec)), timeout=120)
    assert result.returncode == 2
    assert "architectures[1].segment_lens[0]" in result.stderr and "Traceback" not in result.stderr
    assert not storage.exists()
    spec = tiny_spec("e2e-bad", str(storage), architectures=[{"name": "mamba"}])
    result = mcscale("run", str(write_spec(tmp_path, spec)), timeout=120)
    assert result.returncode == 2 and "architectures[0].name" in result.stderr
