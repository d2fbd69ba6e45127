"""`mcscale report` as users run it: on local results with the study's SQLite MLflow store, on S3
with an MLflow server, again after a change, and with bad input (exit 2, nothing written)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from scaling.report.schema import Report
from scaling.study.store import ResultStore
from scaling.study.tracking import StudyTracker
from tests.report.studies import file_bytes, write_study

FILES = ["report.html", "report.md", "report.json"]


def mcscale(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scaling", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)


def report_runs(tracker: StudyTracker) -> pd.DataFrame:
    runs = tracker.runs()
    return runs[(runs["tags.mcscale.role"] == "phase") & (runs["tags.phase"] == "report")]


def test_report_on_local_results_writes_the_files_and_logs_them_to_mlflow(tmp_path):
    storage = tmp_path / "runs"
    write_study(storage, "local")
    before = file_bytes(storage / "local")
    result = mcscale("report", "local", "--storage", str(storage), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Details" in result.stdout and "Caveats" in result.stdout
    # the headline is the last thing printed before the file locations
    assert "In short" in result.stdout and result.stdout.rindex("In short") > result.stdout.rindex("Caveats")
    assert "bootstrap refits of the fit" in result.stdout

    folder = storage / "local" / "report"
    for name in FILES:
        assert (folder / name).stat().st_size > 1000
    figures = sorted(p.name for p in (folder / "figures").glob("*.png"))
    assert figures == sorted(["loss_vs_compute.png", "loss_vs_params.png", "segment_effect.png", "recall_vs_scale.png",
                              "cost_vs_context.png", "residuals.png"])
    report = Report.from_json((folder / "report.json").read_text())
    assert report.settings["bootstrap"] == 60  # from the spec's fit block
    assert report.verdict in result.stdout.replace("\n", " ") or report.verdict[:80] in result.stdout
    assert file_bytes(storage / "local") == before  # nothing but the report was written

    tracker = StudyTracker(f"sqlite:///{storage / 'local' / 'mlflow.db'}", "local")
    runs = report_runs(tracker)
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FINISHED"
    run_id = runs.iloc[0]["run_id"]
    names = {a.path for a in tracker.client.list_artifacts(run_id, "report")}
    assert {f"report/{n}" for n in FILES} <= names and "report/figures" in names
    run = tracker.client.get_run(run_id)
    assert run.data.tags["mlflow.note.content"] == report.verdict
    assert "predicted_loss.transformer" in run.data.metrics

    # overrides make a separate report in its own folder and MLflow run; the study's report is kept
    study_report = file_bytes(folder)
    again = mcscale("report", "local", "--storage", str(storage), "--bootstrap", "0", "--target-sizes", "1B,10B",
                    cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    variant = folder / "bootstrap-0_targets-1B-10B"
    remade = Report.from_json((variant / "report.json").read_text())
    assert remade.settings["bootstrap"] == 0 and remade.settings["target_sizes"] == [1e9, 1e10]
    assert (variant / "report.html").stat().st_size > 1000 and (variant / "figures").is_dir()
    assert {k: v for k, v in file_bytes(folder).items() if not k.startswith(variant.name)} == study_report
    assert "bootstrap-0_targets-1B-10B/report.html" in again.stdout and "unchanged" in again.stdout
    runs = tracker.runs()
    variant_runs = runs[runs["tags.phase"] == "report/bootstrap-0_targets-1B-10B"]
    assert len(report_runs(tracker)) == 1 and len(variant_runs) == 1  # its own run; the study's run untouched
    assert variant_runs.iloc[0]["run_id"] != run_id
    assert [m.step for m in tracker.client.get_metric_history(run_id, "predicted_loss.transformer")] == [0]

    # without overrides the study's report is kept unless --replace says otherwise
    kept = mcscale("report", "local", "--storage", str(storage), "--no-mlflow", cwd=tmp_path)
    assert kept.returncode == 2 and "--replace" in kept.stderr and "Traceback" not in kept.stderr
    assert {k: v for k, v in file_bytes(folder).items() if not k.startswith(variant.name)} == study_report
    both = mcscale("report", "local", "--storage", str(storage), "--law", "chinchilla", "--replace", cwd=tmp_path)
    assert both.returncode == 2 and "--replace" in both.stderr and "law-chinchilla" in both.stderr
    assert not (folder / "law-chinchilla").exists()

    replaced = mcscale("report", "local", "--storage", str(storage), "--replace", cwd=tmp_path)
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert len(report_runs(tracker)) == 1  # the same parent run, re-used
    history = tracker.client.get_metric_history(run_id, "predicted_loss.transformer")
    assert sorted(m.step for m in history) == [0, 1]  # each remade report keeps its own step


def test_report_on_s3_with_an_mlflow_server(tmp_path, s3_server, mlflow_server, monkeypatch):
    bucket = s3_server.make_bucket()
    storage = f"s3://{bucket}/studies"
    store = write_study(storage, "remote", fit={"bootstrap": 20}, tracking_uri=mlflow_server.uri,
                        s3_endpoint=s3_server.endpoint)
    result = mcscale("report", "remote", "--storage", storage, "--s3-endpoint", s3_server.endpoint, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html = store.read_text("report/report.html")
    assert html and html.startswith("<!DOCTYPE html>") and "data:image/png;base64," in html
    assert json.loads(store.read_text("report/report.json"))["study"] == "remote"
    tracker = StudyTracker(mlflow_server.uri, "remote")
    runs = report_runs(tracker)
    assert len(runs) == 1
    # artifacts live with the study's results (its S3 prefix), which MLflow's S3 client reaches via this endpoint
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_server.endpoint)
    assert {a.path for a in tracker.client.list_artifacts(runs.iloc[0]["run_id"], "report")} >= {"report/report.html"}
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket, Prefix="studies/remote/mlflow-artifacts/")
            .get("Contents", [])]
    assert any(k.endswith("/report/report.html") for k in keys), keys
    assert not (tmp_path / "mcscale-runs").exists()  # a server study keeps no local MLflow store


def test_bad_input_exits_2_and_writes_nothing(tmp_path):
    storage = tmp_path / "runs"
    missing = mcscale("report", "nosuch", "--storage", str(storage))
    assert missing.returncode == 2 and "no study 'nosuch'" in missing.stderr and "Traceback" not in missing.stderr

    write_study(storage, "two", sizes=["8K", "16K"])
    before = file_bytes(storage / "two")
    few = mcscale("report", "two", "--storage", str(storage), "--no-mlflow")
    assert few.returncode == 2 and "ladder.sizes" in few.stderr and "at least 3 sizes" in few.stderr
    assert "Traceback" not in few.stderr
    assert not (storage / "two" / "report").exists() and file_bytes(storage / "two") == before

    write_study(storage, "ok", fit={"bootstrap": 0})
    for args, field in ((["--law", "cubic"], "--law"), (["--x", "tokens"], "--x"), (["--bootstrap", "-1"], "--bootstrap"),
                        (["--target-sizes", "lots"], "--target-sizes")):
        bad = mcscale("report", "ok", "--storage", str(storage), "--no-mlflow", *args)
        assert bad.returncode == 2 and field in bad.stderr and "Traceback" not in bad.stderr, (args, bad.stderr)
    assert not (storage / "ok" / "report").exists()

    corrupt = storage / "ok" / "trials" / "ladder-transformer-cna-8k-s0.parquet"
    corrupt.write_bytes(b"PAR1 not really")
    before = file_bytes(storage / "ok")
    broken = mcscale("report", "ok", "--storage", str(storage), "--no-mlflow")
    assert broken.returncode == 2 and "ladder-transformer-cna-8k-s0.parquet" in broken.stderr
    assert "Traceback" not in broken.stderr and file_bytes(storage / "ok") == before
    assert not (storage / "ok" / "report").exists()


def test_help_explains_the_command():
    result = mcscale("report", "--help")
    assert result.returncode == 0
    for text in ("report.html", "--law", "--bootstrap", "--target-sizes", "--no-mlflow"):
        assert text in result.stdout
