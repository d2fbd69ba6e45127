"""Multi-worker trials in a real study: `mcscale run` with `resources.workers_per_trial: 2` (gloo on CPU).

A rung that asks for two workers runs as a Ray Train TorchTrainer launched from its Tune trial;
the study's bookkeeping sees it as one trial (one Parquet row, one MLflow run). When the driver
is SIGKILLed mid-trial, `mcscale resume` restores the trial from its Train checkpoint and ends
with exactly the losses of an uninterrupted run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scaling.spec import parse_spec
from scaling.study.plan import plan_ladder
from scaling.study.store import ResultStore
from scaling.study.tracking import StudyTracker
from tests.study.test_study_e2e import kill_study_when, mcscale, trial_runs, write_spec

EXACT_TOLERANCE = 1e-5  # a restart from a checkpoint recomputes the same steps in the same order


def two_worker_spec(name: str, storage: str) -> dict:
    return {
        "name": name,
        "data": {"corpus": {"source": "builtin", "max_bytes": 400_000}, "seq_len": 64,
                 "evals": {"every_steps": 25, "val_windows": 2}},
        "architectures": [{"name": "swla+grm", "segment_lens": [16]}],
        "ladder": {"sizes": ["60K"], "head_dim": 16},
        "budget": {"tokens": 150 * 1024},  # 150 steps of 1,024 tokens
        "optimizer": {"batch_tokens": 1024},
        "resources": {"cpus_per_trial": 1, "workers_per_trial": 2},
        "concurrency": 1,
        "storage": storage,
    }


def _final(storage: Path, name: str):
    trials = ResultStore(str(storage), name).read_trials()
    assert len(trials) == 1
    return trials.iloc[0]


@pytest.mark.slow
def test_a_two_worker_trial_runs_as_one_trial_and_resumes_after_the_driver_dies(tmp_path):
    straight_storage, killed_storage = tmp_path / "straight", tmp_path / "killed"
    spec = two_worker_spec("mw-straight", str(straight_storage))
    planned = plan_ladder(parse_spec(spec))
    assert [p.config.workers for p in planned] == [2]
    result = mcscale("run", str(write_spec(tmp_path, spec)), "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "plan: 1 trials" in result.stdout
    straight = _final(straight_storage, spec["name"])
    assert straight["status"] == "completed" and straight["workers"] == 2 and straight["step"] == 150
    tracker = StudyTracker(f"sqlite:///{straight_storage / spec['name'] / 'mlflow.db'}", spec["name"])
    runs = trial_runs(tracker)
    assert len(runs) == 1 and set(runs["status"]) == {"FINISHED"}
    steps = [m.step for m in tracker.client.get_metric_history(runs.iloc[0]["run_id"], "val_loss")]
    assert steps == [25, 50, 75, 100, 125, 150]

    spec = two_worker_spec("mw-killed", str(killed_storage))
    path = write_spec(tmp_path, spec)
    driver = subprocess.Popen([sys.executable, "-m", "scaling", "run", str(path), "--no-report"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    store = ResultStore(str(killed_storage), spec["name"])
    def checkpointed(trials) -> bool:  # noqa: ANN001 - the trial has reported (and committed) a checkpoint
        return len(trials) > 0 and (trials["status"] == "running").any() and trials["step"].max() >= 50

    kill_study_when(driver, store, killed_storage / spec["name"], checkpointed, "the trial reported nothing in time",
                    poll_s=0.2)
    assert _final(killed_storage, spec["name"])["status"] == "running"

    resumed = mcscale("resume", spec["name"], "--storage", str(killed_storage), "--no-report", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    final = _final(killed_storage, spec["name"])
    assert final["status"] == "completed" and final["step"] == 150
    assert final["val_loss"] == pytest.approx(straight["val_loss"], abs=EXACT_TOLERANCE)
    assert final["train_loss"] == pytest.approx(straight["train_loss"], abs=EXACT_TOLERANCE)
    curves = store.read_curves()
    resumed_from = curves[curves.metric == "resumed_from_step"]["value"]
    assert resumed_from.max() >= 25  # the restored trial began at its checkpoint, not at step 0
    assert not curves.duplicated(["trial_id", "step", "metric"]).any()
