"""MLflow is a property of the study: where its store is does not depend on the current folder, and
the MLflow UI and the terminal table show a study as a person browses it.

Real MLflow (SQLite) for the experiment and run checks; the table is rendered by rich at 120 columns.
"""

from __future__ import annotations

import io
import os

import pandas as pd
import pytest
from rich.console import Console

from scaling.errors import UserInputError
from scaling.study.mlflow_location import artifact_location, resolve_location


def test_a_study_on_s3_keeps_its_default_store_per_user_not_in_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MCSCALE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(here)
    new = resolve_location("s3://bucket/prefix/study", "study", None)
    assert new.uri.startswith(f"sqlite:///{tmp_path / 'home' / 'mlflow' / 'study-'}") and not new.recorded
    assert new.artifact_location == "s3://bucket/prefix/study/mlflow-artifacts"
    assert list(here.iterdir()) == []  # nothing in the current folder
    other_bucket = resolve_location("s3://other/prefix/study", "study", None)
    assert other_bucket.uri != new.uri  # two studies of one name in two buckets keep two stores

    state = {"mlflow": new.as_state()}  # what study.json records
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")  # the recorded location wins
    again = resolve_location("s3://bucket/prefix/study", "study", state)
    assert (again.uri, again.artifact_location, again.recorded) == (new.uri, new.artifact_location, True)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    local = resolve_location(str(tmp_path / "runs" / "s"), "s", None)
    assert local.uri == f"sqlite:///{tmp_path / 'runs' / 's' / 'mlflow.db'}"
    assert local.artifact_location == artifact_location(str(tmp_path / "runs" / "s"))
    assert local.artifact_location.startswith("file://") and local.artifact_location.endswith("/s/mlflow-artifacts")


def test_a_recorded_uri_without_its_password_takes_it_from_the_environment(monkeypatch):
    state = {"mlflow": {"tracking_uri": "http://mc:***@mlflow:5000", "artifact_location": "s3://b/s/mlflow-artifacts"}}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mc:s3cret-pw@mlflow:5000")
    location = resolve_location("s3://b/s", "s", state)
    assert location.uri == "http://mc:s3cret-pw@mlflow:5000" and location.shown == "http://mc:***@mlflow:5000"
    assert location.as_state()["tracking_uri"] == "http://mc:***@mlflow:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mc:s3cret-pw@another:5000")
    with pytest.raises(UserInputError) as err:
        resolve_location("s3://b/s", "s", state)
    assert err.value.field == "MLFLOW_TRACKING_URI" and "s3cret" not in str(err.value)


def test_the_experiment_is_a_model_training_one_and_runs_are_named_by_series_and_size(tmp_path):
    from mlflow.tracking import MlflowClient

    from scaling.study.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, StudyTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("older")  # made before mcscale tagged the kind
    for name in ("fresh", "older"):
        tracker = StudyTracker(uri, name, artifact_location=(tmp_path / name).as_uri())
        assert tracker.client.get_experiment(tracker.experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    tags = {"series": "swla+grm@C64", "size_label": "1M", "seed": "0", "phase": "ladder"}
    ladder = tracker.trial_run("ladder-swla_grm-c64-1m-s0", "ladder", tags, {"lr": 1e-3})
    seeded = tracker.trial_run("ladder-swla_grm-c64-1m-s1", "ladder", dict(tags, seed="1"), {"lr": 1e-3})
    tuned = tracker.trial_run("tune-swla_grm-c64-1m-s0-abc", "tune", dict(tags, phase="tune"), {"lr": 3.2e-3})
    names = [tracker.client.get_run(r).info.run_name for r in (ladder, seeded, tuned)]
    assert names == ["swla+grm@C64@1M", "swla+grm@C64@1M s1", "tune swla+grm@C64@1M lr=0.0032"]
    assert tracker.client.get_run(seeded).data.tags["trial_id"] == "ladder-swla_grm-c64-1m-s1"


def test_the_trial_table_fits_120_columns_with_a_series_column_and_sizes_in_order():
    from scaling.cli.study import _trial_table

    rows = []
    for series in ("titans+ssc@Clog", "swla+grm@C64", "transformer"):
        for size, params in (("13M", 1.3e7), ("200K", 2.1e5), ("1.3B", 1.3e9), ("1M", 1.02e6)):
            rows.append({"trial_id": f"ladder-{series}-{size}-s0", "phase": "ladder", "series": series,
                         "arch": series.split("@")[0], "size_label": size, "seed": 0, "status": "completed",
                         "params_nonembed": params, "step": 12345, "tokens": params * 20, "val_loss": 3.14159,
                         "val_bpb": 1.2345, "mqar_acc": 0.875, "wall_seconds": 12345.6})
    out = io.StringIO()
    console = Console(file=out, width=120, color_system=None)
    console.print(_trial_table(pd.DataFrame(rows), "study big"))
    text = out.getvalue()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 120 and "…" not in text
    assert "series" in lines[2] and "titans+ssc@Clog" in text
    body = [line for line in lines if "titans+ssc@Clog" in line]
    assert [line.split("│")[2].strip() for line in body] == ["200K", "1M", "13M", "1.3B"]  # by value, not text
    assert "seed" not in text  # one seed: no seed column
    assert os.linesep.join(lines).count("swla+grm@C64") == 4
