"""Degenerate fits are found and said: a floor pinned at its bound, an N/D split the runs cannot make,
absurd allocations; and `mcscale fit` warns."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from scaling.cli.app import app
from scaling.fit import CHINCHILLA, FitOptions, fit, make_fit_data, power_law
from scaling.fit.degenerate import consolidate, diagnose_fit, diagnose_frontier


def _pure_power(n_sizes: int = 6) -> tuple[np.ndarray, np.ndarray]:
    c = np.geomspace(1e10, 1e13, n_sizes)
    return c, 40.0 * c ** -0.08  # no floor at all


def test_floor_pinned_at_its_bound_is_a_finding():
    c, loss = _pure_power()
    data = make_fit_data({"flops": c}, loss)
    result = fit(data, power_law("flops"), options=FitOptions(bootstrap=0))
    assert result.groups["all"].params["E"] < 1e-3
    findings = diagnose_fit(result, data)
    assert [f.refuses for f in findings] == ["floor"]
    assert "pinned at its lower bound" in findings[0].problem


def test_a_floor_the_data_show_is_not_a_finding():
    c, loss = _pure_power()
    data = make_fit_data({"flops": c}, 1.5 + loss)
    result = fit(data, power_law("flops"), options=FitOptions(bootstrap=0))
    assert diagnose_fit(result, data) == []


def test_one_tokens_per_param_leaves_the_split_unidentified():
    n = np.geomspace(1e7, 1e9, 6)
    d = 3.0 * n
    loss = CHINCHILLA.predict({"E": 1.8, "A": 480.0, "alpha": 0.35, "B": 2100.0, "beta": 0.37}, {"params_nonembed": n, "tokens": d})
    data = make_fit_data({"params_nonembed": np.tile(n, 2), "tokens": np.tile(d, 2)}, np.tile(loss, 2),
                         group=np.repeat(["a", "b"], 6))
    result = fit(data, CHINCHILLA, options=FitOptions(bootstrap=0))
    split = [f for f in diagnose_fit(result, data) if f.refuses == "N/D split"]
    assert {f.scope for f in split} == {"a", "b"}
    lines = consolidate(split)
    assert len(lines) == 1 and lines[0].startswith("a, b: the N and D terms are not separately identified")


def test_absurd_allocations_are_found_once_per_series():
    def row(g, n, d, c):
        return {"group": g, "flops": c, "params_nonembed": {"value": n}, "tokens": {"value": d}}

    frontier = [row("a", 1e3, 1e20, 1e23), row("a", 1e3, 1e21, 1e24), row("b", 7e10, 1.4e12, 1e23)]
    found = diagnose_frontier(frontier)
    assert [f.scope for f in found] == ["a"] and found[0].refuses == "allocation"


def test_mcscale_fit_warns_about_a_pinned_floor(tmp_path):
    c, loss = _pure_power()
    path = tmp_path / "runs.csv"
    pd.DataFrame({"flops": c, "loss": loss}).to_csv(path, index=False)
    out = tmp_path / "fit.json"
    res = CliRunner().invoke(app, ["fit", str(path), "--law", "power", "--x", "compute", "--c-col", "flops",
                                   "--bootstrap", "0", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "warning:" in res.output and "degenerate fit" in res.output and "pinned at its lower bound" in res.output
    assert "not identified" in res.output  # the table shows no number for it
    payload = json.loads(out.read_text())
    assert payload["settings"]["degenerate"][0]["quantity"] == "E"


def test_mcscale_fit_calibrated_backtest_on_gadre(gadre_csv, tmp_path):
    """--calibrated: the held-out runs are predicted by the form-averaged model with calibrated
    intervals, which cover all three of rw_original's 1.4B/6.9B runs."""
    out = tmp_path / "cal.json"
    res = CliRunner().invoke(app, [
        "fit", str(gadre_csv), "--n-col", "params_no_embed", "--d-col", "tokens", "--loss-col", "loss_c4_val",
        "--fit-where", "dataset == 'rw_original' and params <= 411616256",
        "--predict-where", "dataset == 'rw_original' and params > 411616256", "--bootstrap", "30", "--calibrated",
        "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "calibrated prediction interval" in res.output
    payload = json.loads(out.read_text())
    assert set(payload["settings"]["calibration"]["forms"]) == {"chinchilla", "gadre", "broken"}
    bt = payload["groups"]["all"]["backtest"]
    assert bt["n_holdout"] == 3 and bt["coverage"] == 1.0


def test_intervals_spanning_an_order_of_magnitude_are_not_predictions():
    from scaling.fit.degenerate import diagnose_unpredictable

    targets, found = diagnose_unpredictable({
        "flops=2e20": {"a": (1.9, 2.3), "b": (1.8, 2.4)},  # a prediction
        "flops=6e23": {"a": (0.8, 5.5), "b": (0.03, 79.0)},  # "anything from 0.03 to 79": none
        "flops=6e25": {"a": (None, None)},  # no interval: not judged here
    })
    assert targets == ["flops=6e23"] and len(found) == 1 and found[0].refuses == "unpredictable"
    assert "0.03 to 79 for b" in found[0].problem and "flops=2e20" not in found[0].problem


def _two_series_one_unidentified(tmp_path):
    """Series "good" trains each size at three token budgets; series "flat" at one tokens/param,
    so its N and D terms cannot be told apart. The largest size of each is held out."""
    rows = []
    law = {"E": 1.8, "A": 480.0, "alpha": 0.35, "B": 2100.0, "beta": 0.37}
    rng = np.random.default_rng(5)
    for arch, ratios in (("good", (5, 20, 80)), ("flat", (20,))):
        for n in np.geomspace(1e7, 2e9, 7):
            for r in ratios:
                X = {"params_nonembed": np.array([n]), "tokens": np.array([r * n])}
                rows.append({"arch": arch, "params_nonembed": n, "tokens": r * n,
                             "loss": float(CHINCHILLA.predict(law, X)[0]) * float(np.exp(0.003 * rng.standard_normal()))})
    path = tmp_path / "runs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_calibrated_refuses_an_interval_exactly_where_plain_does(tmp_path):
    """Issue 23, item 4: an unidentified fit gets no interval, calibrated or plain; the same groups
    are refused by both, with the reason and the runs that would identify the fit; an identified
    series keeps its interval in both."""
    path = _two_series_one_unidentified(tmp_path)
    payloads = {}
    for mode in ("--calibrated", "--plain-bootstrap"):
        out = tmp_path / f"{mode}.json"
        res = CliRunner().invoke(app, ["fit", str(path), "--group-col", "arch", "--bootstrap", "20", mode,
                                       "--predict-where", "params_nonembed > 1.5e9", "--json", str(out)])
        assert res.exit_code == 0, res.output
        said = " ".join(res.output.split())  # the console wraps long lines
        assert "no interval: the fit is not identified" in said and "tokens_per_param" in said
        payloads[mode] = json.loads(out.read_text())
    refused = {mode: {g for g, grp in p["groups"].items() if grp["backtest"]["interval_refused"]}
               for mode, p in payloads.items()}
    assert refused["--calibrated"] == refused["--plain-bootstrap"] == {"flat"}
    for mode, p in payloads.items():
        flat, good = p["groups"]["flat"]["backtest"], p["groups"]["good"]["backtest"]
        assert all(pt["low"] is None and pt["in_interval"] is None for pt in flat["points"]) and flat["coverage"] is None
        assert "N and D terms" in flat["interval_refused"]
        assert all(pt["low"] < pt["prediction"] < pt["high"] for pt in good["points"])
    assert payloads["--calibrated"]["groups"]["good"]["backtest"]["interval_kind"] == "calibrated"
    assert payloads["--plain-bootstrap"]["groups"]["good"]["backtest"]["interval_kind"] == "uncalibrated (plain bootstrap)"

