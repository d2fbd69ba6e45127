"""The report's analysis on synthetic studies with a known law: it recovers the law, ranks the
series the way the law does, backtests, leaves out what cannot be fitted and says so, and uses
exact per-architecture FLOPs."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from scaling.errors import UserInputError
from scaling.fit.compare import six_n
from scaling.fit.noise import SEED_TO_CHECKPOINT_SD_RATIO
from scaling.models.flops import training_flops_per_token
from scaling.report.analysis import ReportOptions, build_report
from scaling.report.compute import CONTEXT_LENGTHS, SeriesFlops
from scaling.report.inputs import load_study
from scaling.report.schema import Report
from scaling.report.verdict import caveats_for
from scaling.spec import parse_spec
from scaling.study.plan import model_at, series_models
from tests.report.studies import A_TRUE, ALPHA_TRUE, E_TRUE, spec_dict, write_study

SERIES = ["transformer", "swla+grm@C32", "swla+grm@C64", "swla+ssc@C32"]
CURVE_NOISE = 0.003


@pytest.fixture(scope="module")
def power_report(tmp_path_factory) -> Report:
    storage = tmp_path_factory.mktemp("runs")
    diverged = "ladder-swla_ssc-c32-128k-s0"
    # evaluations every 5 of 100 steps, each off the smooth curve by 0.3% (log): seed noise from checkpoints
    store = write_study(storage, "synth", status=lambda tid: "diverged" if tid == diverged else "completed",
                        curve_steps=tuple(range(5, 101, 5)), curve_noise=CURVE_NOISE,
                        # 3M: a target near enough that the series still differ (at 1.3B and 70B every
                        # series sits on the shared floor, so those differences are withheld)
                        fit={"law": "power", "x": "compute", "bootstrap": 60, "target_sizes": ["3M", "1.3B", "70B"]})
    results = load_study(store)
    return build_report(results, ReportOptions.from_settings(results.fit_settings))


def test_power_fit_recovers_the_law_it_was_drawn_from(power_report):
    groups = power_report.fit["groups"]
    assert set(groups) == set(SERIES) and power_report.series == SERIES  # spec order
    assert power_report.fit["shared"] == ["E"]
    for series, gf in groups.items():
        assert gf["params"]["E"] == pytest.approx(E_TRUE, rel=0.05)
        assert gf["params"]["alpha"] == pytest.approx(ALPHA_TRUE, rel=0.1)
        lo, hi = gf["ci95"]["alpha"]
        assert lo <= ALPHA_TRUE <= hi
        assert gf["mean_abs_rel_error"] < 0.01


def test_series_are_ranked_as_the_law_ranks_them(power_report):
    assert power_report.baseline == "transformer"
    small_target = next(t.target for t in power_report.targets if t.target.startswith("flops=1.08e15"))
    diffs = {v.series: v for v in power_report.versus if v.target == small_target}
    assert set(power_report.settings["floor_bound_targets"]) == {"flops=2.03e20", "flops=5.88e23"}
    assert set(diffs) == set(SERIES) - {"transformer"}
    for series, v in diffs.items():
        assert v.difference < 0  # every A_TRUE is below the Transformer's
        assert v.p_better is not None and v.p_better > 0.5
    assert diffs["swla+grm@C32"].difference < diffs["swla+ssc@C32"].difference  # lower A, lower loss
    assert "transformer" in power_report.verdict and "swla+grm@C32 (GRM)" in power_report.verdict


def test_seed_noise_is_measured_from_late_checkpoints_and_reported_apart(power_report):
    """One seed per size, but 10 evaluations in each run's second half: their scatter around a smooth
    curve is the seed-noise component, apart from lack of fit and the parameters."""
    s = power_report.settings
    assert s["seed_noise_source"] == "checkpoints"
    # the checkpoint scatter is CURVE_NOISE; the seed noise it stands for is that times the calibrated ratio
    seed = CURVE_NOISE * SEED_TO_CHECKPOINT_SD_RATIO
    assert s["seed_noise_log"] == pytest.approx(seed, rel=0.25)
    assert all(n["variance"] == pytest.approx(CURVE_NOISE ** 2, rel=0.6) for n in s["checkpoint_noise"].values())
    assert all(n["n_runs"] == 5 - (name == "swla+ssc@C32") for name, n in s["checkpoint_noise"].items())
    comps = s["variance_components"]
    assert set(comps) == set(SERIES) and list(comps) == SERIES  # the report's series order
    for c in comps.values():
        assert c["seed noise"] == pytest.approx(seed, rel=0.4)
        assert c["lack of fit"] >= 0 and c["parameters"] > 0
    caveat = next(c for c in power_report.caveats if c.startswith("Variance components"))
    stated = re.search(r"seed noise (\d+\.\d+)%", caveat)
    assert stated and float(stated.group(1)) / 100 == pytest.approx(seed, rel=0.3)
    assert "late evaluations around a smooth curve" in caveat
    assert f"times {SEED_TO_CHECKPOINT_SD_RATIO:g}, a proxy calibrated against repeated seeds" in caveat
    assert "late evaluations around a smooth curve" in power_report.verdict


def test_diverged_trial_is_dropped_named_and_counted(power_report):
    assert [d.trial_id for d in power_report.dropped] == ["ladder-swla_ssc-c32-128k-s0"]
    assert "diverged at step 37" in power_report.dropped[0].reason
    assert any("ladder-swla_ssc-c32-128k-s0 (diverged at step 37)" in c for c in power_report.caveats)
    assert power_report.fit["groups"]["swla+ssc@C32"]["n_points"] == 4


def test_backtest_predicts_each_series_largest_size(power_report):
    bt = power_report.backtest
    assert bt["error"] is None and set(bt["groups"]) == set(SERIES)
    for series, group in bt["groups"].items():
        assert group["n_holdout"] == 1
        assert group["mean_abs_rel_error"] < 0.03  # the law is exact up to 0.3% noise
        point = group["points"][0]
        assert point["low"] <= point["prediction"] <= point["high"]
    assert "Backtest (" in power_report.verdict


def test_caveats_are_computed_from_the_numbers(power_report):
    text = " ".join(power_report.caveats)
    span = re.search(r"span ([0-9.]+) orders of magnitude of compute", text)
    lo, hi = power_report.settings["data_flops_range"]
    assert span and float(span.group(1)) == pytest.approx(math.log10(hi / lo), abs=0.051)
    beyond = re.search(r"largest target lies ([0-9.]+) orders of magnitude beyond", text)
    assert float(beyond.group(1)) == pytest.approx(math.log10(power_report.settings["target_budgets"][-1] / hi), abs=0.051)
    assert "Interval width at" in text and "Shared loss floor" in text


def test_bands_reach_the_largest_target_on_both_axes(power_report):
    for series in SERIES:
        flops = next(b for b in power_report.bands if b.series == series and b.axis == "flops")
        params = next(b for b in power_report.bands if b.series == series and b.axis == "params_nonembed")
        assert flops.x[-1] == pytest.approx(max(power_report.settings["target_budgets"]))
        assert params.x[-1] == pytest.approx(70e9)
        assert all(lo <= v <= hi for lo, v, hi in zip(flops.pred_low, flops.loss, flops.pred_high))
        assert np.all(np.diff(flops.loss) < 0)  # a falling power law


def test_cost_rows_follow_the_flop_model(power_report):
    assert {c.series for c in power_report.costs} == set(SERIES)
    assert sorted({c.seq_len for c in power_report.costs}) == list(CONTEXT_LENGTHS)
    by = {(c.series, c.seq_len): c for c in power_report.costs}
    attn = [by["transformer", L] for L in CONTEXT_LENGTHS]
    assert all(c.cache_bytes == c.transformer_kv_cache_bytes for c in attn)  # a Transformer's cache is its KV cache
    grm = [by["swla+grm@C32", L] for L in CONTEXT_LENGTHS]
    assert all(b.cache_bytes > a.cache_bytes for a, b in zip(grm, grm[1:]))  # more segments, more cached states
    assert grm[0].cached_read_flops_per_token > 0
    ssc, grm_long = by["swla+ssc@C32", 131072], by["swla+grm@C32", 131072]
    assert ssc.cached_read_flops_per_token < grm_long.cached_read_flops_per_token  # top-k reads only


def test_training_curves_come_from_the_store(power_report):
    assert len(power_report.training_curves) == 19  # 20 trials, one diverged
    assert all(len(c.val_loss) == 20 for c in power_report.training_curves)


def test_report_round_trips_through_json(power_report):
    again = Report.from_json(power_report.to_json())
    assert again.verdict == power_report.verdict and again.targets == power_report.targets
    assert again.points == power_report.points


def test_series_flops_are_exact_at_the_table_and_not_six_n(tmp_path):
    spec = parse_spec(spec_dict("flops", str(tmp_path)))
    models = series_models(spec)
    fn = SeriesFlops(spec, models["swla+grm@C32"])
    for size in (1e6, 1e9):
        exact = training_flops_per_token(model_at(spec, size, models["swla+grm@C32"].base))
        assert float(fn(np.array([size]))[0]) == pytest.approx(exact, rel=1e-9)
    ratio = float(fn(np.array([1e5]))[0] / six_n(np.array([1e5]))[0])
    assert ratio > 1.1  # small models pay for the LM head, attention-like reads and gates: not 6N
    values = fn(np.geomspace(1e3, 1e18, 50))
    assert np.all(np.diff(values) > 0) and np.all(np.isfinite(values))


def test_chinchilla_report_uses_exact_flops_and_gives_a_frontier(tmp_path):
    def loss(series: str, flops: float, tokens: float, params: float) -> float:
        # in nats a byte-level model can reach (below ln 256 = 5.55 even at the smallest rung)
        return 1.8 + A_TRUE[series] / 80 * params ** -0.35 + 100 * tokens ** -0.37

    factors = [0.5, 1.0, 2.0]
    store = write_study(tmp_path, "chin", loss=loss, tokens_factor=lambda i: factors[i % 3],
                        fit={"law": "chinchilla", "bootstrap": 30, "target_sizes": ["1.3B", "70B"]})
    results = load_study(store)
    report = build_report(results, ReportOptions.from_settings(results.fit_settings))
    assert report.settings["law"] == "chinchilla"
    assert all("exact training FLOPs/token" in v for v in report.comparison["settings"]["flops_per_token"].values())
    frontier = [f for f in report.comparison["frontier"] if f["group"] == "transformer"]
    n_opt = [f["params_nonembed"]["value"] for f in sorted(frontier, key=lambda f: f["flops"])]
    assert len(n_opt) == 2 and n_opt[1] > n_opt[0]
    # N_opt and D_opt have no calibrated interval, so none is given (and the reason is); the loss has one
    for f in report.comparison["frontier"]:
        assert f["params_nonembed"]["low"] is None and f["tokens"]["low"] is None
        assert "cannot be calibrated" in f["interval_withheld"]
        target = next(t for t in report.targets if t.series == f["group"] and t.flops == f["flops"])
        assert (f["loss"]["low"], f["loss"]["high"]) == (target.low, target.high)
    from scaling.report.document import build_document
    from scaling.report.render import to_markdown
    md = to_markdown(build_document(report))
    assert "N_opt and D_opt: no interval for N_opt or D_opt" in md and "bootstrap interval" not in md.split("Compute-optimal")[1].split("##")[0]
    assert any(t.target.startswith("N=7e10 params, 20 tokens/param") for t in report.targets)
    assert not any(f["refuses"] == "N/D split" for f in report.settings["unidentified"])
    assert not any("not separately identified" in c for c in report.caveats)
    assert all(not t.unidentified and math.isfinite(t.loss) for t in report.targets)


def test_chinchilla_on_one_tokens_per_param_is_refused_not_tabulated(tmp_path):
    """A ladder at one tokens/param cannot separate N from D: every chinchilla number (targets,
    crossovers, allocations) is withheld with the reason and the runs that would identify it."""
    def loss(series: str, flops: float, tokens: float, params: float) -> float:
        # in nats a byte-level model can reach (below ln 256 = 5.55 even at the smallest rung)
        return 1.8 + A_TRUE[series] / 80 * params ** -0.35 + 100 * tokens ** -0.37

    store = write_study(tmp_path, "chin1", loss=loss, fit={"law": "chinchilla", "bootstrap": 20, "target_sizes": ["70B"]})
    results = load_study(store)
    report = build_report(results, ReportOptions.from_settings(results.fit_settings))
    assert {f["refuses"] for f in report.settings["unidentified"]} >= {"N/D split"}
    assert report.targets and all(t.unidentified and "tokens per parameter vary by less than 2x" in t.unidentified
                                  for t in report.targets)
    assert all(math.isnan(t.loss) and t.low is None for t in report.targets)
    assert report.versus == [] and report.crossovers == [] and report.comparison["frontier"] == []
    assert "No target could be predicted" in report.verdict and "withheld" in report.verdict
    caveats = [c for c in report.caveats if c.startswith("Not identified") and "N and D terms" in c]
    assert len(caveats) == 1 and "tokens_per_param" in caveats[0]  # one sentence naming every series, not one each
    assert all(s in caveats[0] for s in report.series)
    from scaling.report.document import build_document
    from scaling.report.render import to_markdown
    md = to_markdown(build_document(report))
    assert "Withheld (3 targets: " in md and "1e+120" not in md


def test_series_with_too_few_sizes_is_left_out_with_a_note(tmp_path):
    def status(tid: str) -> str:
        return "running" if tid.startswith("ladder-swla_ssc") and not tid.endswith(("-8k-s0", "-16k-s0")) else "completed"

    store = write_study(tmp_path, "few", status=status, fit={"bootstrap": 0})
    results = load_study(store)
    report = build_report(results, ReportOptions.from_settings(results.fit_settings))
    assert "swla+ssc@C32" not in report.series
    assert any("swla+ssc@C32 has 2 finished size(s)" in c for c in report.caveats)
    assert sum(d.reason == "not finished (status running)" for d in report.dropped) == 3
    assert all(t.low is None for t in report.targets)  # no bootstrap, no intervals
    assert "no interval" in report.verdict or "Without a bootstrap" in report.verdict


def test_too_few_sizes_everywhere_is_a_clear_error(tmp_path):
    store = write_study(tmp_path, "tiny", sizes=["8K", "16K"])
    results = load_study(store)
    with pytest.raises(UserInputError) as err:
        build_report(results, ReportOptions.from_settings(results.fit_settings))
    assert err.value.field == "ladder.sizes" and "at least 3 sizes" in err.value.fix


def test_backtest_that_cannot_fit_says_why(tmp_path):
    store = write_study(tmp_path, "three", sizes=["8K", "32K", "128K"], fit={"bootstrap": 20})
    results = load_study(store)
    report = build_report(results, ReportOptions.from_settings(results.fit_settings))
    assert report.backtest["error"] and "too few runs" in report.backtest["error"]
    assert any(c.startswith("Backtest: none could be run") for c in report.caveats)





def test_power_law_in_params_compares_at_target_sizes(tmp_path):
    store = write_study(tmp_path, "inparams", fit={"law": "power", "x": "params", "bootstrap": 20})
    results = load_study(store)
    report = build_report(results, ReportOptions.from_settings(results.fit_settings))
    assert report.fit["law_input"] == "params_nonembed"
    assert {t.target for t in report.targets} == {"params_nonembed=1.3e9", "params_nonembed=7e9",
                                                  "params_nonembed=7e10"}
    assert "at 70B non-embedding parameters at the study's 20 tokens/param" in report.verdict
    axes = {(b.series, b.axis) for b in report.bands}
    assert axes == {(s, a) for s in SERIES for a in ("flops", "params_nonembed")}
    flops_band = next(b for b in report.bands if b.series == "transformer" and b.axis == "flops")
    assert np.all(np.diff(flops_band.x) > 0)  # compute grows along the size grid


def test_fit_quality_caveat_appears_only_when_the_law_misses_runs(power_report):
    assert not any(c.startswith("Fit quality") for c in power_report.caveats)  # 0.3% noise: the law fits
    bent = Report.from_dict(power_report.to_dict())
    bent.fit["groups"]["swla+grm@C64"]["max_abs_rel_error"] = 0.088
    assert any(c.startswith("Fit quality: The power law does not describe the runs of swla+grm@C64 (in-sample error "
                            "up to 8.8%") for c in caveats_for(bent))


def test_a_floor_the_runs_do_not_show_is_said_to_be_unidentified(tmp_path):
    """Runs on a pure power law (no floor): E lands on its bound; the report says so and shows no
    number for it (caveats, diagnostics, MLflow metrics), instead of "E = 0.000 (0.000 to 0.000)"."""
    from scaling.report.document import build_document
    from scaling.report.publish import headline_metrics
    from scaling.report.render import to_markdown

    store = write_study(tmp_path, "nofloor", loss=lambda s, f, t, p: A_TRUE[s] / 200 * f ** -0.05, noise=0.001,
                        fit={"law": "power", "x": "compute", "bootstrap": 20, "target_sizes": ["70B"]})
    results = load_study(store)
    report = build_report(results, ReportOptions.from_settings(results.fit_settings))
    assert any(f["quantity"] == "E" and f["refuses"] == "floor" for f in report.settings["unidentified"])
    assert any(c.startswith("Shared loss floor: none identified") for c in report.caveats)
    assert not any("E = 0.000" in c for c in report.caveats)
    assert "not identified" in to_markdown(build_document(report))
    assert not any(k.startswith("fit.E.") for k in headline_metrics(report))


def test_differences_on_the_shared_floor_are_withheld_end_to_end(tmp_path):
    """A ladder whose laws fall onto their shared floor long before the targets (alpha 0.6): the fit
    predicts every series at E there, so the differences are ~0 by construction. The report, its
    JSON and the terminal summary withhold them (no "-4e-06 lower, P(lower) 50%"), say why, and
    give no advice on a difference that is not a result."""
    import io

    from rich.console import Console

    from scaling.cli.report import print_report_summary
    from scaling.report.document import build_document
    from scaling.report.render import to_markdown

    store = write_study(tmp_path, "onfloor", loss=lambda s, f, t, p: 2.0 + A_TRUE[s] * 1e3 * f ** -0.6,
                        fit={"law": "power", "x": "compute", "bootstrap": 20, "target_sizes": ["1.3B", "70B"]})
    results = load_study(store)
    report = build_report(results, ReportOptions.from_settings(results.fit_settings))
    targets = {t.target for t in report.targets}
    assert set(report.settings["floor_bound_targets"]) == targets
    assert report.versus == [] and report.comparison["differences"] == []
    assert all(math.isfinite(t.loss) and t.low is not None for t in report.targets)  # losses stay: calibrated
    assert "zero by construction" in report.verdict and "P(lower)" not in report.verdict
    assert report.settings["advice"]["candidates"] == [] and "no headline difference" in report.settings["advice"]["why"]
    md = to_markdown(build_document(report))
    assert "Differences withheld" in md and not re.search(r"\| [+-]\d\.\de-0\d \|", md)
    out = io.StringIO()
    print_report_summary(Console(file=out, width=200), report, type("Files", (), {"uri": lambda self, n: n, "run_id": None})())
    # no floor-bound difference (~1e-5 and below, zero by construction) is printed; measured in-range
    # differences at equal size may be small (e.g. +6.0e-04) and are results
    assert "withheld (shared floor)" in out.getvalue()
    assert not re.search(r"e-0[5-9]", out.getvalue().split("Caveats")[0])
