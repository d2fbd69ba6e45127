"""The Parquet result store on a local folder and on a real S3-compatible server (moto) on loopback."""

from __future__ import annotations

import hashlib
import json
import math
import os

import pandas as pd
import pyarrow.dataset as ds
import pytest

from scaling.errors import UserInputError
from scaling.study.store import (CURVE_COLUMNS, TRIAL_COLUMNS, ResultStore, curve_rows, list_studies,
                                 trial_row)

TAGS = {"architecture": "swla+grm", "mixer": "swla", "memory": "matrix", "strategy": "grm", "segment_len": "64",
        "n_segments": "4", "size_label": "1M", "params_nonembed": "123456", "seed": "0", "phase": "ladder",
        "series": "swla+grm@C64", "config_hash": "0123456789abcdef"}
CONFIG = {"model": {"d_model": 64, "n_layers": 2, "mixer": "swla", "memory": "matrix", "caching": "grm"},
          "lr": 0.003, "warmup_fraction": 0.05, "weight_decay": 0.1, "seed": 0, "needle_lengths": [128, 256],
          "corpus": {"source": "builtin", "max_bytes": None}}


def metrics(step: int = 100, val_loss: float = 2.3, status: str = "completed", **extra) -> dict:
    out = {"step": step, "tokens": step * 1024, "flops": step * 1024 * 1.2e7, "train_seconds": 3.1,
           "wall_seconds": 3.5, "tokens_per_second": 33000.0, "flops_per_second": 3.9e11, "status": status,
           "train_loss": 2.1, "val_loss": val_loss, "val_bpb": 3.3, "mqar_acc": 0.2, "needle_acc_128": 0.5,
           "needle_acc_256": 0.0, "lr": 0.001, "params_nonembed": 123456, "params_total": 130000,
           "total_steps": 200, "flops_per_token": 1.2e7,
           "train_loss_steps": [[step - 2, 2.2], [step - 1, 2.19], [step, 2.1]]}
    out.update(extra)
    return out


def row(trial_id: str = "ladder-swla_grm-c64-1m-s0", **kw) -> dict:
    return trial_row(trial_id, "ladder", TAGS, metrics(**kw), CONFIG)


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# ============================================================================ row builders
def test_trial_row_types_and_schema():
    r = row()
    assert list(r)[:len(TRIAL_COLUMNS)] == list(TRIAL_COLUMNS)
    assert "train_loss_steps" not in r
    assert r["arch"] == "swla+grm" and r["series"] == "swla+grm@C64" and r["segment_len"] == "64"
    assert r["params_nonembed"] == 123456 and r["n_segments"] == 4 and r["seed"] == 0
    assert isinstance(r["params_nonembed"], int) and isinstance(r["seed"], int)
    assert r["status"] == "completed" and r["step"] == 100 and r["val_loss"] == 2.3
    assert r["lr"] == 0.003  # the configured peak learning rate, not the schedule's last value
    assert r["needle_acc_128"] == 0.5 and r["needle_acc_256"] == 0.0
    assert math.isnan(r["diverged_step"])
    assert json.loads(r["config_json"]) == CONFIG

    diverged = trial_row("t-div", "ladder", TAGS, {"step": 17, "status": "diverged", "diverged_step": 17,
                                                   "train_loss": float("nan")}, CONFIG)
    assert diverged.keys() == r.keys()  # same columns: needles come from the config, NaN where missing
    assert diverged["diverged_step"] == 17 and math.isnan(diverged["needle_acc_256"])
    assert math.isnan(diverged["val_loss"]) and diverged["tokens"] is None


def test_curve_rows_long_format_and_dedup():
    history = [metrics(step=50, val_loss=2.9), metrics(step=100, val_loss=2.5), metrics(step=100, val_loss=2.4)]
    rows = curve_rows("t1", history)
    keys = [(r["step"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert all(set(r) == set(CURVE_COLUMNS) for r in rows)
    val = {r["step"]: r["value"] for r in rows if r["metric"] == "val_loss"}
    assert val == {50: 2.9, 100: 2.4}  # a re-reported step keeps the later value
    metrics_seen = {r["metric"] for r in rows}
    assert {"val_loss", "train_loss", "mqar_acc", "needle_acc_256", "lr", "tokens_per_second"} <= metrics_seen
    assert not metrics_seen & {"step", "tokens", "flops", "status", "train_loss_steps", "params_nonembed"}
    r50 = next(r for r in rows if r["step"] == 50)
    assert r50["tokens"] == 50 * 1024 and r50["flops"] == pytest.approx(50 * 1024 * 1.2e7)


# ============================================================================ local folder
def test_write_trial_is_idempotent_and_plain_readers_agree(tmp_path):
    store = ResultStore(str(tmp_path / "runs"), "study-a")
    assert not store.exists()
    assert store.read_trials().empty and list(store.read_trials().columns)[:len(TRIAL_COLUMNS)] == list(TRIAL_COLUMNS)
    assert store.read_curves().empty and list(store.read_curves().columns) == list(CURVE_COLUMNS)

    store.write_trial("ladder-swla_grm-c64-1m-s0", row(step=50, val_loss=2.9, status="running"))
    store.write_trial("ladder-swla_grm-c64-1m-s0", row(step=100, val_loss=2.3))
    store.write_trial("ladder-swla_grm-c64-2m-s0", row("ladder-swla_grm-c64-2m-s0", step=17, status="diverged",
                                                      diverged_step=17, val_loss=float("nan")))
    assert store.exists()
    assert store.root == str(tmp_path / "runs" / "study-a")

    df = store.read_trials()
    assert len(df) == 2 and df["trial_id"].is_unique
    first = df.set_index("trial_id").loc["ladder-swla_grm-c64-1m-s0"]
    assert first["val_loss"] == 2.3 and first["step"] == 100 and first["status"] == "completed"
    assert first["study"] == "study-a"
    # no temp files left behind; one file per trial
    assert sorted(os.listdir(tmp_path / "runs" / "study-a" / "trials")) == [
        "ladder-swla_grm-c64-1m-s0.parquet", "ladder-swla_grm-c64-2m-s0.parquet"]

    plain = pd.read_parquet(os.path.join(store.root, "trials"))
    assert len(plain) == 2 and set(plain.columns) == set(df.columns)
    table = ds.dataset(os.path.join(store.root, "trials"), format="parquet").to_table()
    assert table.num_rows == 2 and "needle_acc_256" in table.column_names
    fragments = ds.dataset(os.path.join(store.root, "trials"), format="parquet").get_fragments()
    schemas = {f.physical_schema for f in fragments}
    assert len(schemas) == 1  # the same column schema in every file


def test_curves_overwrite_whole(tmp_path):
    store = ResultStore(str(tmp_path), "study-c")
    store.write_curves("t1", curve_rows("t1", [metrics(step=50), metrics(step=100)]))
    store.write_curves("t2", curve_rows("t2", [metrics(step=50)]))
    n_before = len(store.read_curves())
    store.write_curves("t1", curve_rows("t1", [metrics(step=50), metrics(step=100), metrics(step=150)]))
    df = store.read_curves()
    per_metric = len({r["metric"] for r in curve_rows("t1", [metrics()])})
    assert len(df) == n_before + per_metric
    assert not df.duplicated(["trial_id", "step", "metric"]).any()
    assert sorted(df[df.trial_id == "t1"]["step"].unique()) == [50, 100, 150]
    plain = pd.read_parquet(os.path.join(store.root, "curves"))
    assert len(plain) == len(df) and list(plain.columns) == list(CURVE_COLUMNS)


def test_json_text_and_relative_storage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = ResultStore("rel-runs", "study-j")
    assert store.root == str(tmp_path / "rel-runs" / "study-j")
    assert store.read_json("study.json") is None and store.read_text("spec.yaml") is None
    store.write_json("study.json", {"phase": "ladder", "done": ["a", "b"], "n": 3})
    store.write_json("study.json", {"phase": "fit"})
    store.write_text("spec.yaml", "name: study-j\n")
    assert store.read_json("study.json") == {"phase": "fit"}
    assert store.read_text("spec.yaml") == "name: study-j\n"
    assert store.exists()
    with pytest.raises(UserInputError):
        store.write_json("../escape.json", {})
    with pytest.raises(UserInputError):
        store.write_trial("../x", row())


def test_corrupt_file_is_a_clear_error_and_nothing_else_changes(tmp_path):
    store = ResultStore(str(tmp_path), "study-x")
    store.write_trial("good", row("good"))
    store.write_trial("bad", row("bad"))
    store.write_curves("good", curve_rows("good", [metrics()]))
    store.write_json("study.json", {"ok": True})
    bad = tmp_path / "study-x" / "trials" / "bad.parquet"
    bad.write_bytes(b"this is not parquet at all")
    before = {p: sha(p) for p in (tmp_path / "study-x").rglob("*") if p.is_file()}

    with pytest.raises(UserInputError) as err:
        store.read_trials()
    assert str(bad) in str(err.value) and "bad.parquet" in err.value.field
    assert store.read_curves()["trial_id"].unique().tolist() == ["good"]  # other folders still read
    after = {p: sha(p) for p in (tmp_path / "study-x").rglob("*") if p.is_file()}
    assert after == before  # nothing deleted or changed, the corrupt file included

    (tmp_path / "study-x" / "tuned.json").write_text("{not json")
    with pytest.raises(UserInputError) as err:
        store.read_json("tuned.json")
    assert "tuned.json" in str(err.value)

    store.write_trial("bad", row("bad"))  # re-running the trial rewrites its row
    assert sorted(store.read_trials()["trial_id"]) == ["bad", "good"]


def test_list_studies(tmp_path):
    assert list_studies(str(tmp_path / "nowhere")) == []
    ResultStore(str(tmp_path), "beta").write_trial("t", row("t"))
    ResultStore(str(tmp_path), "alpha").write_json("study.json", {})
    ResultStore(str(tmp_path), "gamma").write_curves("t", [])
    (tmp_path / "not-a-study").mkdir()
    (tmp_path / "mlflow.db").write_bytes(b"")
    assert list_studies(str(tmp_path)) == ["alpha", "beta", "gamma"]


def test_bad_storage_and_names(tmp_path):
    with pytest.raises(UserInputError):
        ResultStore("gs://bucket/x", "s")
    with pytest.raises(UserInputError):
        ResultStore(str(tmp_path), "../up")
    with pytest.raises(UserInputError):
        ResultStore("s3:///nobucket", "s")


# ============================================================================ S3 (moto on loopback)
def test_s3_round_trip(s3_server, s3_bucket):
    storage = f"s3://{s3_bucket}/prefix"
    store = ResultStore(storage, "study-s3", s3_endpoint=s3_server.endpoint)
    assert store.root == f"s3://{s3_bucket}/prefix/study-s3"
    assert not store.exists() and store.read_trials().empty

    store.write_trial("t1", row("t1", step=50, val_loss=2.9, status="running"))
    store.write_trial("t1", row("t1", step=100, val_loss=2.3))
    store.write_trial("t2", row("t2", step=100, val_loss=2.0))
    store.write_curves("t1", curve_rows("t1", [metrics(step=50), metrics(step=100)]))
    store.write_json("study.json", {"phase": "ladder"})
    store.write_text("spec.yaml", "name: study-s3\n")

    assert store.exists()
    df = store.read_trials()
    assert sorted(df["trial_id"]) == ["t1", "t2"]
    assert df.set_index("trial_id").loc["t1", "val_loss"] == 2.3
    assert len(store.read_curves()) == len(curve_rows("t1", [metrics(step=50), metrics(step=100)]))
    assert store.read_json("study.json") == {"phase": "ladder"}
    assert store.read_text("spec.yaml") == "name: study-s3\n"
    assert list_studies(storage, s3_endpoint=s3_server.endpoint) == ["study-s3"]

    # plain readers through a pyarrow S3 filesystem
    fs = s3_server.filesystem()
    plain = pd.read_parquet(f"{s3_bucket}/prefix/study-s3/trials", filesystem=fs)
    assert len(plain) == 2
    assert ds.dataset(f"{s3_bucket}/prefix/study-s3/trials", filesystem=fs, format="parquet").count_rows() == 2
    keys = sorted(o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert keys == [f"prefix/study-s3/{k}" for k in
                    ("curves/t1.parquet", "spec.yaml", "study.json", "trials/t1.parquet", "trials/t2.parquet")]


def test_s3_endpoint_from_env_and_corrupt_object(s3_server, s3_bucket, monkeypatch):
    monkeypatch.setenv("MCSCALE_S3_ENDPOINT", s3_server.endpoint)
    store = ResultStore(f"s3://{s3_bucket}", "study-env")
    store.write_trial("good", row("good"))
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="study-env/trials/bad.parquet", Body=b"garbage")
    good_before = client.get_object(Bucket=s3_bucket, Key="study-env/trials/good.parquet")["Body"].read()
    with pytest.raises(UserInputError) as err:
        store.read_trials()
    assert f"s3://{s3_bucket}/study-env/trials/bad.parquet" in str(err.value)
    assert client.get_object(Bucket=s3_bucket, Key="study-env/trials/good.parquet")["Body"].read() == good_before
    assert client.get_object(Bucket=s3_bucket, Key="study-env/trials/bad.parquet")["Body"].read() == b"garbage"


def test_s3_missing_bucket_is_a_clear_error(s3_server):
    store = ResultStore("s3://no-such-bucket-mcscale/x", "study", s3_endpoint=s3_server.endpoint)
    with pytest.raises(UserInputError) as err:
        store.write_trial("t", row("t"))
    assert err.value.field == "storage"
