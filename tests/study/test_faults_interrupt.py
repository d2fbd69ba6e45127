"""SIGTERM and SIGINT to a running study, each followed by `mcscale resume`: a clean stop every time.

One study, three driver processes: `run` is stopped by SIGTERM once a trial finished and another is
training, the first `resume` by SIGINT once it recorded something new, the second `resume` finishes.
After each stop: exit 143 / 130, study.json `interrupted`, no trial run left RUNNING or SCHEDULED,
the phase run KILLED, no report (the first `run` would have made one). At the end: exactly the
counts of an uninterrupted run.
"""

from __future__ import annotations

import time
from pathlib import Path

from scaling.study.store import ResultStore
from scaling.study.tracking import StudyTracker
from tests.study.faults_support import Driver, count, fault_spec, uninterrupted, wait_until, write_spec


def _mtimes(folder: Path) -> list[float]:
    return [p.stat().st_mtime for p in (folder / "trials").glob("*.parquet")]


def _check_stopped(driver: Driver, rc: int, signal_name: str, store: ResultStore, db: Path, name: str) -> None:
    assert driver.wait() == rc, driver.tail()
    assert f"interrupted by {signal_name}" in driver.stderr and "Traceback" not in driver.stderr, driver.tail()
    state = store.read_json("study.json")
    assert state["status"] == "interrupted" and state["interrupted_by"] == signal_name, state
    assert store.read_text("report/report.json") is None and "Verdict" not in driver.stdout
    assert set(store.read_trials()["status"]) <= {"completed", "interrupted"}
    runs = StudyTracker(f"sqlite:///{db}", name).runs()
    trial_runs = runs[runs["tags.mcscale.role"] == "trial"]
    assert not set(trial_runs["status"]) & {"RUNNING", "SCHEDULED"}, trial_runs[["run_name", "status"]]
    assert set(trial_runs["status"]) <= {"FINISHED", "KILLED"}
    ladder = runs[(runs["tags.mcscale.role"] == "phase") & (runs["tags.phase"] == "ladder")]
    assert list(ladder["status"]) == ["KILLED"]


def test_sigterm_then_sigint_then_resume_gives_the_counts_of_an_uninterrupted_run(tmp_path):
    storage = tmp_path / "runs"
    spec = fault_spec("fault-signal", str(storage))
    path = write_spec(tmp_path, spec)
    store = ResultStore(str(storage), spec["name"])
    folder, db = storage / spec["name"], storage / spec["name"] / "mlflow.db"

    first = Driver(tmp_path, "run", str(path))
    wait_until(lambda: {"completed", "running"} <= set(store.read_trials()["status"]),
               "one trial finished and another training", first, poll_s=0.2)
    first.process.send_signal(15)
    _check_stopped(first, 143, "SIGTERM", store, db, spec["name"])
    done_after_first = int((store.read_trials()["status"] == "completed").sum())

    resumed_at = time.time()
    second = Driver(tmp_path, "resume", spec["name"], "--storage", str(storage))
    wait_until(lambda: max(_mtimes(folder)) > resumed_at and "running" in set(store.read_trials()["status"]),
               "the resumed study recording progress", second, poll_s=0.2)
    second.process.send_signal(2)
    _check_stopped(second, 130, "SIGINT", store, db, spec["name"])
    assert int((store.read_trials()["status"] == "completed").sum()) >= done_after_first

    last = Driver(tmp_path, "resume", spec["name"], "--storage", str(storage), "--no-report")  # the fit: elsewhere
    assert last.wait() == 0, last.tail()
    assert store.read_json("study.json")["status"] == "ladder-complete"
    counts = count(spec, store, StudyTracker(f"sqlite:///{db}", spec["name"]))
    print(f"after SIGTERM + SIGINT + resume: {counts.as_line()}")
    assert counts == uninterrupted(spec)
    trials = store.read_trials()
    assert (trials["step"] == 40).all() and "interrupted by" not in last.stderr
