"""MLflow tracking against a real `mlflow server` process started by the test session, and SQLite."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from scaling.errors import UserInputError
from scaling.study.tracking import MAX_PARAM_VALUE, StudyTracker, default_tracking_uri, flatten_params

from tests.conftest import free_port

CONFIG = {"model": {"d_model": 64, "n_layers": 2, "mixer": "swla", "memory": "matrix", "caching": "grm",
                    "segment_len": 64, "extra": {"deep": [1, 2, 3]}},
          "lr": 0.003, "seed": 0, "needle_lengths": [128, 256], "checkpoint_dir": None,
          "notes": "x" * 7000}
TAGS = {"architecture": "swla+grm", "mixer": "swla", "memory": "matrix", "strategy": "grm", "segment_len": "64",
        "n_segments": "4", "size_label": "1M", "params_nonembed": "123456", "seed": "0", "phase": "ladder",
        "series": "swla+grm@C64", "config_hash": "0123456789abcdef"}


def study_name() -> str:
    return f"study-{uuid.uuid4().hex[:8]}"


class CountingClient:
    """Wraps the tracker's real MlflowClient and counts log_batch requests (everything still goes through)."""

    def __init__(self, client):
        self._client, self.batches = client, []

    def log_batch(self, run_id, metrics=(), params=(), tags=(), **kw):
        self.batches.append((len(metrics), len(params), len(tags)))
        return self._client.log_batch(run_id, metrics=metrics, params=params, tags=tags, **kw)

    def __getattr__(self, name):
        return getattr(self._client, name)


def children(tracker: StudyTracker, trial_id: str):
    df = tracker.runs()
    return df[df.get("tags.trial_id") == trial_id] if "tags.trial_id" in df else df.iloc[0:0]


def test_flatten_params():
    flat = flatten_params(CONFIG)
    assert flat["model.d_model"] == "64" and flat["model.extra.deep"] == "[1, 2, 3]"
    assert flat["needle_lengths"] == "[128, 256]" and flat["checkpoint_dir"] == "None"
    assert len(flat["notes"]) == MAX_PARAM_VALUE and flat["notes"].endswith("[truncated]")
    assert flatten_params({"a b:c?": 1}) == {"a b_c_": "1"}


def test_experiment_and_phase_parent_reused_across_drivers(mlflow_server):
    name = study_name()
    first = StudyTracker(mlflow_server.uri, name)
    tune, ladder = first.phase_run("tune"), first.phase_run("ladder")
    assert tune != ladder and first.phase_run("tune") == tune
    first.finish_phase("tune")

    second = StudyTracker(mlflow_server.uri, name)  # a restarted driver
    assert second.experiment_id == first.experiment_id
    assert second.phase_run("tune") == tune and second.phase_run("ladder") == ladder
    client = MlflowClient(mlflow_server.uri)
    assert client.get_experiment_by_name(name).experiment_id == first.experiment_id
    assert client.get_run(tune).info.status == "RUNNING"  # reopened on resume
    second.finish_phase("tune")
    second.finish_phase("ladder", "FAILED")
    runs = second.runs()
    assert len(runs) == 2
    assert set(runs["status"]) == {"FINISHED", "FAILED"}
    assert StudyTracker(mlflow_server.uri, study_name()).experiment_id != first.experiment_id


def test_one_run_per_trial_and_params(mlflow_server):
    name = study_name()
    tracker = StudyTracker(mlflow_server.uri, name)
    run_id = tracker.trial_run("ladder-a-s0", "ladder", TAGS, CONFIG)
    assert tracker.trial_run("ladder-a-s0", "ladder", TAGS, CONFIG) == run_id
    restarted = StudyTracker(mlflow_server.uri, name)
    assert restarted.trial_run("ladder-a-s0", "ladder", TAGS, CONFIG) == run_id  # found by tag
    assert restarted.trial_run("ladder-a-s0", "ladder", TAGS, CONFIG, existing_run_id=run_id) == run_id
    assert restarted.trial_run("ladder-a-s0", "ladder", TAGS, CONFIG, existing_run_id="0" * 32) == run_id
    other = restarted.trial_run("ladder-b-s0", "ladder", TAGS, CONFIG)
    assert other != run_id

    runs = restarted.runs()
    trials = runs[runs["tags.mcscale.role"] == "trial"]
    assert sorted(trials["tags.trial_id"]) == ["ladder-a-s0", "ladder-b-s0"]
    parent = restarted.phase_run("ladder")
    assert set(trials["parent_run_id"]) == {parent}
    assert (runs["tags.mcscale.role"] == "phase").sum() == 1

    run = MlflowClient(mlflow_server.uri).get_run(run_id)
    assert run.data.params["model.d_model"] == "64" and run.data.params["lr"] == "0.003"
    assert run.data.params["needle_lengths"] == "[128, 256]"
    assert len(run.data.params["notes"]) == MAX_PARAM_VALUE
    assert run.data.params == flatten_params(CONFIG)
    assert {k: run.data.tags[k] for k in TAGS} == TAGS
    assert run.data.tags["trial_id"] == "ladder-a-s0" and run.data.tags["mlflow.parentRunId"] == parent
    assert run.info.run_name == "swla+grm@C64@1M"  # series@size; the trial id is the tag above


def test_many_params_batched(mlflow_server):
    tracker = StudyTracker(mlflow_server.uri, study_name())
    tracker.client = counting = CountingClient(tracker.client)
    config = {f"group{i // 50}": {f"p{i}": i for i in range(i, i + 50)} for i in range(0, 250, 50)}
    run_id = tracker.trial_run("t", "tune", {}, config)
    param_batches = [b for b in counting.batches if b[1]]
    assert [b[1] for b in param_batches] == [100, 100, 50]
    assert len(MlflowClient(mlflow_server.uri).get_run(run_id).data.params) == 250


def test_metrics_batched_and_not_duplicated_on_resume(mlflow_server):
    name = study_name()
    tracker = StudyTracker(mlflow_server.uri, name)
    run_id = tracker.trial_run("t1", "ladder", TAGS, CONFIG)
    tracker.client = counting = CountingClient(tracker.client)
    report = {"step": 300, "tokens": 307200, "flops": 3.7e12, "status": "running", "val_loss": 2.3,
              "val_bpb": 3.3, "mqar_acc": 0.25, "needle_acc_256": 0.0, "lr": 0.001, "train_loss": 2.1,
              "train_loss_steps": [[s, 5.0 - s / 100] for s in range(1, 301)]}
    started = time.perf_counter()
    tracker.log_metrics(run_id, report, step=300)
    elapsed = time.perf_counter() - started
    assert counting.batches == [(300 + 8, 0, 0)]  # one request: 300 step losses + 8 report metrics
    client = MlflowClient(mlflow_server.uri)
    losses = client.get_metric_history(run_id, "train_loss_step")
    assert sorted(m.step for m in losses) == list(range(1, 301))
    assert {m.step: m.value for m in losses}[150] == pytest.approx(3.5)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_loss")] == [(300, 2.3)]
    assert client.get_metric_history(run_id, "tokens")[0].value == 307200
    assert "status" not in client.get_run(run_id).data.metrics
    print(f"log_batch of 309 metrics through the server: {elapsed:.3f} s")

    # past MLflow's 1,000-metric limit the report is split into the fewest requests
    counting.batches.clear()
    tracker.log_metrics(run_id, {"step": 2600, "train_loss_steps": [[s, 1.0] for s in range(301, 2601)]}, step=2600)
    assert [b[0] for b in counting.batches] == [1000, 1000, 300]

    # a restarted driver resumes the trial from a checkpoint at step 200 and re-reports 201..2700
    restarted = StudyTracker(mlflow_server.uri, name)
    assert restarted.trial_run("t1", "ladder", TAGS, CONFIG, existing_run_id=run_id) == run_id
    restarted.log_metrics(run_id, {"step": 2700, "val_loss": 2.0,
                                   "train_loss_steps": [[s, 0.5] for s in range(201, 2701)]}, step=2700)
    losses = client.get_metric_history(run_id, "train_loss_step")
    steps = [m.step for m in losses]
    assert len(steps) == len(set(steps)) == 2700
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_loss")] == [(300, 2.3), (2700, 2.0)]


def test_statuses_and_idempotent_finish(mlflow_server):
    tracker = StudyTracker(mlflow_server.uri, study_name())
    expected = {"completed": ("FINISHED", "completed"), "diverged": ("FAILED", "diverged"),
                "stopped": ("KILLED", "stopped"), "error": ("FAILED", "error")}
    client = MlflowClient(mlflow_server.uri)
    for status, (mlflow_status, tag) in expected.items():
        run_id = tracker.trial_run(f"t-{status}", "tune", TAGS, CONFIG)
        tracker.finish_trial(run_id, status)
        first = client.get_run(run_id)
        assert first.info.status == mlflow_status and first.data.tags["status"] == tag
        time.sleep(0.01)
        tracker.finish_trial(run_id, status)  # idempotent: nothing changes
        again = client.get_run(run_id)
        assert again.info.status == mlflow_status and again.info.end_time == first.info.end_time
    with pytest.raises(ValueError):
        tracker.finish_trial(run_id, "bogus")
    tracker.finish_phase("tune")
    runs = tracker.runs()
    assert runs.loc[runs["tags.mcscale.role"] == "phase", "status"].tolist() == ["FINISHED"]
    assert len(runs) == 5


def test_artifact_json(mlflow_server):
    tracker = StudyTracker(mlflow_server.uri, study_name())
    run_id = tracker.trial_run("t", "ladder", TAGS, CONFIG)
    tracker.log_artifact_json(run_id, "final_summary", {"status": "completed", "step": 200, "val_loss": 2.1})
    client = MlflowClient(mlflow_server.uri)
    assert [a.path for a in client.list_artifacts(run_id)] == ["final_summary.json"]
    dst = mlflow_server.artifact_root.parent / f"download-{run_id}"
    local = client.download_artifacts(run_id, "final_summary.json", dst_path=str(dst))
    assert json.loads(Path(local).read_text())["val_loss"] == 2.1


def test_unreachable_server_is_a_clear_error():
    with pytest.raises(UserInputError) as err:
        StudyTracker(f"http://127.0.0.1:{free_port()}", "nobody-home")
    assert err.value.field == "tracking_uri"


def test_default_sqlite_tracking(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in the current folder
    uri = default_tracking_uri(str(tmp_path / "runs"))
    assert uri == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    tracker = StudyTracker(uri, "local-study")
    run_id = tracker.trial_run("t1", "ladder", TAGS, CONFIG)
    tracker.log_metrics(run_id, {"step": 10, "val_loss": 2.5, "train_loss_steps": [[s, 3.0] for s in range(1, 11)]},
                        step=10)
    tracker.log_artifact_json(run_id, "summary.json", {"ok": True})
    tracker.finish_trial(run_id, "completed")
    tracker.finish_phase("ladder")

    again = StudyTracker(uri, "local-study")
    assert again.trial_run("t1", "ladder", TAGS, CONFIG) == run_id
    assert again.phase_run("ladder") == tracker.phase_run("ladder")
    runs = again.runs()
    assert len(runs) == 2
    assert len(again.client.get_metric_history(run_id, "train_loss_step")) == 10
    assert (tmp_path / "runs" / "mlflow.db").is_file()
    assert list((tmp_path / "runs" / "mlartifacts").rglob("summary.json"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
