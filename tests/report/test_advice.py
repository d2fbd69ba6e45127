"""Next-run advice (`scaling.fit.advise`, the report's "Which run next", `mcscale advise`) on a
synthetic study written through the real result store."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from scaling.cli.app import app
from scaling.report.analysis import ReportOptions, build_report
from scaling.report.document import build_document
from scaling.report.inputs import load_study
from scaling.report.render import to_markdown
from scaling.study.store import ResultStore
from tests.report.studies import write_study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    storage = tmp_path_factory.mktemp("advice")
    # 3M: the differences there are results (at 70B every series sits on the shared floor: withheld)
    write_study(storage, "adv", fit={"law": "power", "x": "compute", "bootstrap": 30, "target_sizes": ["3M", "70B"]})
    return storage


def test_advice_ranks_candidates_by_shrinkage_per_device_hour(study):
    results = load_study(ResultStore(str(study), "adv"))
    report = build_report(results, ReportOptions.from_settings(results.fit_settings))
    advice = report.settings["advice"]
    assert advice["baseline"] == report.baseline and advice["series"] in report.series
    candidates = advice["candidates"]
    per_hour = [c["shrinkage_per_device_hour"] for c in candidates]
    assert per_hour == sorted(per_hour, reverse=True)
    actions = {c["action"] for c in candidates}
    assert {"next rung up (2x the largest size, the study's token rule)", "another seed at the largest size"} <= actions
    for c in candidates:
        assert c["device_hours"] > 0 and 0.0 <= c["shrinkage"] < 1.0
        assert math.isclose(c["device_hours"], c["flops"] / advice["device_flops_per_second"] / 3600, rel_tol=1e-9)
    rung = [c for c in candidates if c["action"].startswith("next rung")]
    seed = [c for c in candidates if c["action"].startswith("another seed")]
    # moving the data's edge towards the target buys more than a repeat at the same size
    assert all(r["shrinkage"] > s["shrinkage"] for r, s in zip(sorted(rung, key=lambda c: c["series"]),
                                                                sorted(seed, key=lambda c: c["series"])))
    segment = [c for c in candidates if "segment length" in c["action"]]
    assert all(c["shrinkage"] == 0.0 and "does not narrow" in c["note"] for c in segment)
    assert "Which run next" in to_markdown(build_document(report))


def test_mcscale_advise_prints_the_ranking_and_rejects_bad_input(study, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")  # the table fits the width the user has
    runner = CliRunner()
    res = runner.invoke(app, ["advise", "adv", "--storage", str(study), "--bootstrap", "20", "--device-tflops", "100"])
    assert res.exit_code == 0, res.output
    assert "next runs for" in res.output and "device-" in res.output and "next rung" in res.output
    assert max(len(line) for line in res.output.splitlines()) <= 120
    bad = runner.invoke(app, ["advise", "adv", "--storage", str(study), "--device-tflops", "0"])
    assert bad.exit_code == 2 and "--device-tflops" in bad.output and "Traceback" not in bad.output


def test_a_cpu_study_is_priced_in_cpu_core_hours_at_its_own_measured_throughput(tmp_path):
    from scaling.report.document import advice_table

    rates = {}

    def measured(planned):  # noqa: ANN001, ANN202 - each trial's recorded throughput on the CPU
        rates[planned.trial_id] = 1e9 * (1 + len(rates) % 3)
        return {"flops_per_second": rates[planned.trial_id], "device": "cpu"}

    write_study(tmp_path, "cpu", extra_metrics=measured, resources={"cpus_per_trial": 2},
                fit={"law": "power", "x": "compute", "bootstrap": 20, "target_sizes": ["3M", "70B"]})
    results = load_study(ResultStore(str(tmp_path), "cpu"))
    advice = build_report(results, ReportOptions.from_settings(results.fit_settings)).settings["advice"]
    assert advice["candidates"] and advice["device_unit"] == "CPU core-hours"
    median = sorted(rates.values())[len(rates) // 2]
    assert math.isclose(advice["device_flops_per_second"], median / 2, rel_tol=1e-9)  # per core, 2 cores a trial
    assert "measured" in advice["device_source"] and "cpu" in advice["device_source"]
    table = advice_table(advice)
    assert "CPU core-hours" in table.headers and "device-hours" not in table.headers
