"""The evaluation's diagnostics (loss per position bucket, online gate mass) reach the result store and
MLflow as every eval metric does: a trial column with the final value, a curve row and an MLflow point
per eval step. Real trials, the real store on disk, the driver's outbox and MLflow on SQLite."""

from __future__ import annotations

import math

import pytest

from scaling.data.corpus import CorpusSpec
from scaling.models import ModelConfig
from scaling.study.outbox import MlflowOutbox
from scaling.study.store import DIAGNOSTIC_METRIC, TRIAL_COLUMNS, ResultStore, curve_rows, is_extra_metric, trial_row
from scaling.study.sync import sync_study
from scaling.study.tracking import StudyTracker, default_tracking_uri
from scaling.study.tune import recorded_metrics, tune_result
from scaling.train import TrialConfig, run_trial

TAGS = {"architecture": "swla+grm", "series": "swla+grm@C16", "strategy": "grm", "segment_len": "16",
        "n_segments": "4", "size_label": "tiny", "params_nonembed": "1000", "seed": "0", "phase": "ladder"}
GATE_KEYS = {"online_gate_l0", "online_gate_l1", "online_gate_seg0", "online_gate_seg3", "online_gate_l1_seg2"}


def test_diagnostic_names_are_recognised_and_nothing_else():
    for name in ("val_loss_pos0", "val_loss_pos12", "online_gate_l0", "online_gate_l3_seg10", "online_gate_seg7"):
        assert DIAGNOSTIC_METRIC.match(name) and is_extra_metric(name), name
    assert is_extra_metric("needle_acc_256")
    for name in ("val_loss", "val_loss_pos", "online_gate_", "online_gate_seg", "online_gate_lx", "val_loss_pos1a",
                 "online_gate_seg1_l0", "training_iteration", "needle_acc_x", 3):
        assert not is_extra_metric(name), name


def test_trial_rows_carry_the_diagnostics_they_have_and_read_as_one_table(tmp_path):
    store = ResultStore(str(tmp_path), "diag")
    gated = {"status": "completed", "step": 10, "val_loss": 2.0, **{f"val_loss_pos{i}": 2.0 + i for i in range(12)},
             **{f"online_gate_seg{s}": 1.0 - 0.01 * s for s in range(11)}, "online_gate_l0": 0.9}
    row = trial_row("ladder-swla_grm-a", "ladder", TAGS, gated, {})
    assert list(row)[:len(TRIAL_COLUMNS)] == list(TRIAL_COLUMNS)
    extras = list(row)[len(TRIAL_COLUMNS):]
    assert extras == ([f"val_loss_pos{i}" for i in range(12)] + ["online_gate_l0"]
                      + [f"online_gate_seg{s}" for s in range(11)])  # natural order: pos2 before pos10
    store.write_trial("ladder-swla_grm-a", row)
    # the base memory sorts first and has no gates: its file lacks those columns
    store.write_trial("ladder-swla-a", trial_row("ladder-swla-a", "ladder", {}, {"val_loss_pos0": 2.5}, {}))
    table = store.read_trials().set_index("trial_id")
    assert table.loc["ladder-swla_grm-a", "online_gate_seg10"] == pytest.approx(0.9)
    assert table.loc["ladder-swla_grm-a", "val_loss_pos11"] == 13.0
    assert math.isnan(table.loc["ladder-swla-a", "online_gate_seg10"])
    assert table.loc["ladder-swla-a", "val_loss_pos0"] == 2.5
    columns = list(table.columns)
    assert columns.index("val_loss_pos9") < columns.index("val_loss_pos10") < columns.index("online_gate_l0")


@pytest.fixture(scope="module")
def trial():
    """A tiny swla+grm trial evaluated at steps 3 and 6: (its config, its result)."""
    model = ModelConfig(vocab_size=256, d_model=64, n_heads=2, n_layers=2, mixer="swla", caching="grm",
                        segment_len=16, seq_len=64, chunk_len=16)
    config = TrialConfig(model=model, corpus=CorpusSpec(max_bytes=400_000), tokens=6 * 256, batch_tokens=256,
                         eval_every_steps=3, eval_windows=2, threads=1)
    return config, run_trial(config)


def _diagnostics(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(k, str) and DIAGNOSTIC_METRIC.match(k)}


def test_final_values_are_trial_columns_and_every_eval_is_a_curve_point(trial, tmp_path):
    config, result = trial
    final = _diagnostics(result.metrics)
    assert {f"val_loss_pos{i}" for i in range(8)} | GATE_KEYS <= set(final)
    # what the trainable hands Tune, and what the driver's bookkeeping keeps of it
    kept = recorded_metrics(tune_result(result.metrics, "t-diag", ""))
    assert _diagnostics(kept) == final
    store = ResultStore(str(tmp_path), "chain")
    store.write_trial("t-diag", trial_row("t-diag", "ladder", TAGS, kept, config.to_dict()))
    store.write_curves("t-diag", curve_rows("t-diag", [recorded_metrics(tune_result(h, "t-diag", ""))
                                                       for h in result.history]))
    row = store.read_trials().iloc[0]
    for key, value in final.items():
        assert row[key] == pytest.approx(value), key
    curves = store.read_curves()
    for key in final:
        points = curves[curves["metric"] == key]
        assert sorted(points["step"]) == [3, 6], key
        assert dict(zip(points["step"], points["value"])) == pytest.approx(
            {h["step"]: h[key] for h in result.history}), key


def test_mlflow_gets_a_point_per_eval_through_the_outbox_and_from_the_store(trial, tmp_path):
    config, result = trial
    storage = tmp_path / "runs"
    uri = default_tracking_uri(str(storage))
    box = MlflowOutbox(tmp_path / "outbox.sqlite", uri, "live", background=False)
    try:
        box.trial("t-live", "ladder", TAGS, config.to_dict())
        for report in result.history:  # as the driver's on_result does, per Tune result
            box.trial_metrics("t-live", recorded_metrics(tune_result(report, "t-live", "")), report["step"])
        assert box.replay_now().pending == 0
    finally:
        box.close()
    tracker = StudyTracker(uri, "live")
    run_id = tracker.find_trial_run("t-live")
    for key in _diagnostics(result.metrics):
        history = tracker.client.get_metric_history(run_id, key)
        assert {m.step: m.value for m in history} == pytest.approx({h["step"]: h[key] for h in result.history}), key

    # `mcscale sync` rebuilds the same view from the store alone (the source of truth)
    store = ResultStore(str(storage), "replayed")
    store.write_trial("t-sync", trial_row("t-sync", "ladder", TAGS, recorded_metrics(result.metrics),
                                          config.to_dict()))
    store.write_curves("t-sync", curve_rows("t-sync", result.history))
    sync_study(store, str(storage), uri)
    replayed = StudyTracker(uri, "replayed")
    run_id = replayed.find_trial_run("t-sync")
    steps = [m.step for m in replayed.client.get_metric_history(run_id, "online_gate_l1_seg2")]
    assert sorted(steps) == [3, 6]
    assert replayed.client.get_run(run_id).data.metrics["val_loss_pos7"] == pytest.approx(
        result.metrics["val_loss_pos7"])


@pytest.mark.slow
def test_a_study_of_mc_and_its_base_records_the_diagnostics_and_reports_where_mc_helps(tmp_path):
    """`mcscale run` end to end: the trials' rows, curves and MLflow runs carry the diagnostics, and the
    report has its section with both figures."""
    import json

    from tests.study.test_study_e2e import mcscale, tiny_spec, trial_runs, write_spec

    storage = tmp_path / "runs"
    spec = tiny_spec("e2e-positions", str(storage), architectures=[{"name": "swla"},
                                                                   {"name": "swla+grm", "segment_lens": [32]}],
                     ladder={"sizes": ["20K", "40K", "80K"], "head_dim": 16},
                     fit={"law": "power", "x": "compute", "bootstrap": 20, "target_sizes": ["1M", "10M"]})
    spec["data"]["evals"].pop("mqar")
    done = mcscale("run", str(write_spec(tmp_path, spec)), cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    store = ResultStore(str(storage), spec["name"])
    trials = store.read_trials()
    assert len(trials) == 6 and set(trials["status"]) == {"completed"}
    buckets = [f"val_loss_pos{i}" for i in range(8)]  # seq_len 128: 8 buckets of 16 tokens
    assert trials[buckets].notna().all().all()
    gated = trials["strategy"] == "grm"
    gates = [f"online_gate_seg{s}" for s in range(4)] + ["online_gate_l0", "online_gate_l1_seg3"]  # 128 / 32
    assert trials.loc[gated, gates].notna().all().all() and trials.loc[~gated, gates].isna().all().all()
    assert ((trials.loc[gated, gates] >= 0) & (trials.loc[gated, gates] <= 1)).all().all()
    curves = store.read_curves()
    for metric in ("val_loss_pos0", "online_gate_seg3"):
        points = curves[curves["metric"] == metric]
        expected = 6 if metric.startswith("val_loss") else 3
        assert points.groupby("trial_id")["step"].apply(sorted).tolist() == [[10, 20]] * expected, metric

    tracker = StudyTracker(f"sqlite:///{storage / spec['name'] / 'mlflow.db'}", spec["name"])
    for _, run in trial_runs(tracker).iterrows():
        steps = [m.step for m in tracker.client.get_metric_history(run["run_id"], "val_loss_pos7")]
        assert sorted(steps) == [10, 20]
        has_gates = bool(tracker.client.get_metric_history(run["run_id"], "online_gate_seg1"))
        assert has_gates == (run["tags.strategy"] == "grm")

    report = json.loads(store.read_text("report/report.json"))
    assert len(report["positions"]) == 6
    assert {"mc_position_gap.png", "online_gate_mass.png"} <= set(report["figures"])
    markdown = store.read_text("report/report.md")
    assert "## Where Memory Caching helps" in markdown and "swla+grm@C32 is " in markdown
    assert (storage / spec["name"] / "report" / "figures" / "online_gate_mass.png").stat().st_size > 10_000
