"""`mcscale fit` end to end: the real console entry point in a subprocess, and typer's CliRunner
for the many bad-input cases (each must be one clear message and exit code 2, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from scaling.cli.app import app
from scaling.fit import FitResult


def _mcscale(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scaling", *args], capture_output=True, text=True, timeout=300)


def _invoke(*args: str):
    return CliRunner().invoke(app, ["fit", *args])


def test_epoch_backtest_through_the_command_line(epoch_csv, tmp_path):
    """Fit Epoch's points with C < 1e21, predict C >= 1e21: mean |error| <= 1.1%."""
    out = tmp_path / "fit.json"
    proc = _mcscale(
        "fit", str(epoch_csv), "--law", "chinchilla", "--n-col", "Model Size", "--c-col", "Training FLOP",
        "--drop-highest", "5", "--fit-where", "`Training FLOP` < 1e21", "--predict-where", "`Training FLOP` >= 1e21",
        "--bootstrap", "100", "--seed", "1", "--json", str(out), "--plain-bootstrap",
    )
    assert proc.returncode == 0, proc.stderr
    assert "D = C / (6 N)" in proc.stdout  # the derived tokens are stated
    assert "backtest" in proc.stdout and "alpha" in proc.stdout
    assert "UNCALIBRATED" in proc.stdout  # the plain bootstrap's intervals say what they are
    payload = json.loads(out.read_text())
    assert payload["settings"]["intervals"] == "uncalibrated (plain bootstrap)"
    assert payload["groups"]["all"]["backtest"]["interval_kind"] == "uncalibrated (plain bootstrap)"
    group = payload["groups"]["all"]
    bt = group["backtest"]
    print(f"\nEpoch backtest (fit C < 1e21, predict C >= 1e21): {bt['n_fit']} fitted, {bt['n_holdout']} held out, "
          f"mean |err| {bt['mean_abs_rel_error']:.2%}, max {bt['max_abs_rel_error']:.2%}, "
          f"{bt['coverage']:.0%} inside the 95% prediction interval")
    assert bt["n_fit"] + bt["n_holdout"] == 240
    assert bt["mean_abs_rel_error"] <= 0.011
    for p in bt["points"]:
        assert {"prediction", "low", "high", "actual"} <= set(p)
        assert p["low"] < p["prediction"] < p["high"]
        assert p["inputs"]["flops"] >= 1e21
    assert set(group["params"]) == set(group["ci95"]) == {"E", "A", "B", "alpha", "beta"}
    assert all(lo < group["params"][k] < hi for k, (lo, hi) in group["ci95"].items())
    # The saved JSON is a FitResult that reads back and predicts.
    back = FitResult.from_json(out)
    assert back.n_bootstrap == 100
    assert back.predict("all", {"params_nonembed": np.array([1e10]), "tokens": np.array([2e11])})[0] > group["params"]["E"]


def test_bad_input_in_a_subprocess_is_a_message_and_exit_2(tmp_path):
    path = tmp_path / "runs.csv"
    pd.DataFrame({"params_nonembed": [1e7, 1e8, 1e9], "tokens": [1e9, 1e10, 1e11], "loss": [4.0, 3.0, 2.5]}).to_csv(path, index=False)
    proc = _mcscale("fit", str(path), "--loss-col", "val_loss")
    assert proc.returncode == 2
    assert "val_loss" in proc.stderr and "--loss-col" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def _ladder(n_sizes: int = 4, tokens_per_param=(10, 20, 40)) -> pd.DataFrame:
    n = np.repeat(np.geomspace(1e7, 1e9, n_sizes), len(tokens_per_param))
    d = n * np.tile(tokens_per_param, n_sizes)
    loss = 1.8 + 400 * n**-0.34 + 2000 * d**-0.37
    return pd.DataFrame({"params_nonembed": n, "tokens": d, "loss": loss, "run": [f"r{i}" for i in range(len(n))]})


def _write(df: pd.DataFrame, tmp_path: Path, name: str = "runs.csv") -> str:
    path = tmp_path / name
    if name.endswith(".parquet"):
        df.to_parquet(path)
    else:
        df.to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize(
    "case, make, args, expect",
    [
        ("fewer points than parameters", lambda: _ladder().iloc[:4], [], ["4 point", "5 parameters"]),
        ("constant loss", lambda: _ladder().assign(loss=3.0), [], ["constant", "loss"]),
        ("zero loss", lambda: _ladder().assign(loss=lambda d: np.where(d.index == 3, 0.0, d.loss)), [], ["zero or negative", "'loss'"]),
        ("negative tokens", lambda: _ladder().assign(tokens=lambda d: -d.tokens), [], ["zero or negative", "'tokens'"]),
        ("missing loss values", lambda: _ladder().assign(loss=lambda d: np.where(d.index == 2, np.nan, d.loss)), [], ["missing", "'loss'"]),
        ("missing tokens column", lambda: _ladder().drop(columns="tokens"), [], ["--d-col", "--c-col"]),
        ("missing params column", _ladder, ["--n-col", "n_params"], ["--n-col", "n_params"]),
        ("missing group column", _ladder, ["--group-col", "arch"], ["--group-col", "arch"]),
        ("text in a numeric column", lambda: _ladder().assign(tokens="many"), [], ["non-numeric", "tokens"]),
        ("bad query", _ladder, ["--fit-where", "params_nonembed <"], ["--fit-where", "pandas query"]),
        ("query on a missing column", _ladder, ["--predict-where", "size > 1e9"], ["--predict-where", "size"]),
        ("query selecting nothing", _ladder, ["--fit-where", "params_nonembed > 1e12"], ["--fit-where", "no rows"]),
        ("unknown law", _ladder, ["--law", "kaplan"], ["--law", "chinchilla"]),
        ("unknown shared parameter", _ladder, ["--share", "gamma"], ["--share", "gamma"]),
        ("one model size only", lambda: _ladder().assign(params_nonembed=1e8), [], ["distinct", "params_nonembed"]),
        ("negative drop", _ladder, ["--drop-highest", "-1"], ["--drop-highest"]),
    ],
)
def test_degenerate_input_is_a_clear_error_with_exit_2(case, make, args, expect, tmp_path):
    result = _invoke(_write(make(), tmp_path), "--bootstrap", "0", *args)
    assert result.exit_code == 2, f"{case}: exit {result.exit_code}\n{result.output}"
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for text in expect:
        assert text in result.output, f"{case}: {text!r} not in {result.output!r}"
    assert "Traceback" not in result.output


def test_missing_and_corrupt_files_exit_2(tmp_path):
    missing = _invoke(str(tmp_path / "nope.csv"))
    assert missing.exit_code == 2 and "no file" in missing.output
    corrupt = tmp_path / "runs.parquet"
    corrupt.write_bytes(b"PAR1" + bytes(range(256)) * 4)
    bad = _invoke(str(corrupt))
    assert bad.exit_code == 2 and "could not be read as Parquet" in bad.output
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert _invoke(str(empty)).exit_code == 2


def test_parquet_power_law_on_compute_with_groups_and_runs(tmp_path):
    """A power law over compute, per group, from Parquet; runs resampled whole."""
    rows = []
    for arch, (a, alpha) in {"grm": (60.0, 0.06), "transformer": (80.0, 0.07)}.items():
        for run, c in enumerate(np.geomspace(1e17, 1e21, 8)):
            for step_frac in (0.5, 1.0):  # two checkpoints per run
                rows.append({"arch": arch, "run": f"{arch}-{run}", "flops": c * step_frac,
                             "loss": 1.7 + a * (c * step_frac) ** -alpha})
    path = _write(pd.DataFrame(rows), tmp_path, "runs.parquet")
    out = tmp_path / "power.json"
    result = _invoke(path, "--law", "power", "--x", "compute", "--c-col", "flops", "--group-col", "arch",
                     "--bootstrap", "50", "--json", str(out))
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert payload["settings"]["bootstrap_unit"].startswith("runs")
    for arch, (a, alpha) in {"grm": (60.0, 0.06), "transformer": (80.0, 0.07)}.items():
        params = payload["groups"][arch]["params"]
        assert set(params) == {"E", "A", "alpha"}
        assert params["alpha"] == pytest.approx(alpha, rel=1e-3)
        assert params["E"] == pytest.approx(1.7, rel=1e-3)
        assert payload["groups"][arch]["n_points"] == 16


def test_shared_e_from_the_command_line(tmp_path):
    frames = []
    for arch, (a, alpha) in {"grm": (300.0, 0.30), "transformer": (600.0, 0.36)}.items():
        df = _ladder(5)
        df["loss"] = 1.7 + a * df.params_nonembed**-alpha + 2000 * df.tokens**-0.37
        df["arch"] = arch
        frames.append(df)
    path = _write(pd.concat(frames), tmp_path)
    out = tmp_path / "joint.json"
    result = _invoke(path, "--group-col", "arch", "--share", "E", "--bootstrap", "0", "--json", str(out))
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert payload["shared"] == ["E"]
    e = [payload["groups"][g]["params"]["E"] for g in ("grm", "transformer")]
    assert e[0] == e[1] == pytest.approx(1.7, rel=1e-3)
    assert payload["groups"]["transformer"]["params"]["alpha"] == pytest.approx(0.36, rel=1e-3)
