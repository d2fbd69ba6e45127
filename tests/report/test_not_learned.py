"""Runs that learned nothing never become fit points, and a report whose baseline has no usable runs
says so instead of quietly comparing against another series.

The results tables are written through the study's own `trial_row` / `write_trial` path
(tests/report/studies.py) with chosen validation losses: the point here is the report's logic,
so nothing trains. (tests/train/test_not_learned_trial.py shows a real trial marking itself.)
"""

from __future__ import annotations

import math

from scaling.report.analysis import ReportOptions, build_report
from scaling.report.inputs import load_study, select_points
from scaling.report.publish import render_files
from tests.report.studies import power_loss, write_study

UNIFORM = math.log(256)  # 5.55 nats: the uniform predictor over byte ids


def _options(results):
    return ReportOptions.from_settings(results.fit_settings, bootstrap=0)


def test_runs_that_learned_nothing_are_left_out_with_the_reason(tmp_path):
    def loss(series, flops, tokens, params):  # SSC "completed" at lr 30-like losses; one GRM run ended at NaN
        if series == "swla+ssc@C32":
            return 91.0 + params / 1e4
        return power_loss(series, flops, tokens, params)

    nan_trial = "ladder-swla_grm-c64-32k-s0"
    store = write_study(tmp_path, "lr30", loss=lambda s, f, t, p: loss(s, f, t, p), noise=0.0)
    row = store.read_trials().set_index("trial_id").loc[nan_trial].to_dict()
    row.update(val_loss=float("nan"), trial_id=nan_trial)
    store.write_trial(nan_trial, row)

    results = load_study(store)
    points, dropped = select_points(results)
    reasons = {d.trial_id: d.reason for d in dropped}
    ssc = [d for d in dropped if d.series == "swla+ssc@C32"]
    assert len(ssc) == 5 and not [p for p in points if p.series == "swla+ssc@C32"]
    assert all("learned nothing" in d.reason and "ln 256 = 5.55" in d.reason for d in ssc)
    assert "not finite" in reasons[nan_trial]
    assert all(p.val_loss < UNIFORM for p in points)

    report = build_report(results, _options(results))
    assert "swla+ssc@C32" not in report.series and report.baseline == "transformer"
    caveat = next(c for c in report.caveats if c.startswith("Dropped points"))
    assert "6 trial(s)" in caveat and "learned nothing" in caveat and nan_trial in caveat
    assert report.settings["baseline_missing"] is None


def test_a_baseline_without_usable_runs_is_said_plainly_not_replaced(tmp_path):
    def loss(series, flops, tokens, params):  # every Transformer run diverged into nonsense
        return 120.0 if series == "transformer" else power_loss(series, flops, tokens, params)

    store = write_study(tmp_path, "nobase", loss=loss)
    results = load_study(store)
    report = build_report(results, _options(results))
    assert report.baseline == "transformer" and "transformer" not in report.series
    assert report.versus == [] and report.crossovers == []
    assert report.verdict.startswith("No comparison with transformer is possible")
    assert "5 of its runs were left out (learned nothing)" in report.verdict
    assert any(c.startswith("Baseline missing: the study's baseline, transformer, has no usable runs")
               for c in report.caveats)
    for series in report.series:  # each series' own prediction is still given
        assert series in report.verdict
    files = render_files(report)  # and the pages render without a baseline to shade
    assert "No comparison with transformer" in files["report.md"].decode()


def test_a_real_trial_at_an_absurd_lr_marks_itself_as_not_learned(tmp_path):
    """lr 30 on SWLA (the issue's study): the trial trains its whole budget, its loss stays finite
    (~290 nats here) but far above ln 256, and it records learned = 0 in its result row."""
    from scaling.data.corpus import CorpusSpec
    from scaling.models import ModelConfig
    from scaling.study.store import ResultStore, trial_row
    from scaling.train import TrialConfig, run_trial

    model = ModelConfig(vocab_size=256, d_model=32, n_heads=1, n_layers=2, mixer="swla", seq_len=32, chunk_len=16)
    config = TrialConfig(model=model, corpus=CorpusSpec(max_bytes=200_000), tokens=20 * 256, batch_tokens=256,
                         lr=30.0, warmup_fraction=0.0, eval_every_steps=20, eval_windows=2, threads=1)
    result = run_trial(config)
    assert result.status == "completed" and result.metrics["learned"] == 0, result.metrics
    assert result.metrics["val_loss"] > UNIFORM
    store = ResultStore(str(tmp_path), "one")
    store.write_trial("t", trial_row("t", "ladder", {}, result.metrics, config.to_dict()))
    assert store.read_trials().loc[0, "learned"] == 0
