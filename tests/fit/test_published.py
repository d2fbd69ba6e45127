"""The fitting module against published numbers: Epoch AI's replication of Chinchilla's
Approach 3, and Gadre et al.'s over-training extrapolations.

Reference values are from the data README (Epoch AI, "Chinchilla Scaling: A replication
attempt", 2024; Gadre et al., 2024); nothing here was produced by this project.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from scaling.cli.app import app
from scaling.fit import CHINCHILLA, FitOptions, backtest, make_fit_data

# Epoch's 95% bootstrap intervals for Approach 3 on the 240 points.
EPOCH_CI95 = {"E": (1.769, 1.871), "A": (285.0, 744.0), "B": (1042.0, 5810.0), "alpha": (0.317, 0.373), "beta": (0.331, 0.415)}
# Hoffmann et al.'s own procedure (Huber 1e-3, L-BFGS, 4,500 starts) on the same 240 points.
HOFFMANN_ON_EPOCH = {"E": 1.8172, "A": 477.9, "B": 2142.6, "alpha": 0.3473, "beta": 0.3672}
GADRE_LARGEST_FITTED_PARAMS = 411_616_256


def test_chinchilla_fit_lands_in_epoch_intervals_and_on_hoffmann_optimum(epoch_fit):
    params = epoch_fit.groups["all"].params
    print("\nEpoch points, 240 after dropping 5: fitted", {k: round(v, 4) for k, v in params.items()})
    for name, (low, high) in EPOCH_CI95.items():
        assert low <= params[name] <= high, f"{name} = {params[name]} outside Epoch's 95% interval [{low}, {high}]"
    for name, ref in HOFFMANN_ON_EPOCH.items():
        rel = params[name] / ref - 1.0
        print(f"  {name}: {params[name]:.5g} vs Hoffmann-procedure {ref} ({rel:+.3%})")
        assert abs(rel) <= 0.005, f"{name} = {params[name]} is {rel:+.2%} from {ref}"
    settings = epoch_fit.settings
    assert settings["n_starts"] == 4500 and settings["delta"] == 1e-3
    assert epoch_fit.groups["all"].n_points == 240


def test_bootstrap_intervals_are_as_wide_as_epochs(epoch_fit):
    """Resampling the 240 points gives intervals of the width Epoch AI found (within 2x)."""
    ours = epoch_fit.groups["all"].ci95
    params = epoch_fit.groups["all"].params
    for name, (low, high) in EPOCH_CI95.items():
        lo, hi = ours[name]
        assert lo <= params[name] <= hi
        log_scale = name in ("A", "B")
        width = (math.log(hi) - math.log(lo)) if log_scale else hi - lo
        ref = (math.log(high) - math.log(low)) if log_scale else high - low
        print(f"  {name}: ours [{lo:.4g}, {hi:.4g}] vs Epoch [{low}, {high}] (width ratio {width / ref:.2f})")
        assert 0.5 <= width / ref <= 2.0


def test_gadre_overtrained_extrapolation(gadre_csv, tmp_path):
    """Fit runs <= 411M parameters per data set, predict the 1.4B and 6.9B runs' C4 loss.

    Gadre et al. report 0.71% / 0.73% with their own (compute, token-multiplier) law; the
    Chinchilla form fitted here on the same runs measures 0.8-2.2% mean per data set (1.6%
    over all nine held-out runs, worst 4.7%: c4_original's 6.9B). Bounds: measured plus margin.
    """
    out = tmp_path / "gadre.json"
    result = CliRunner().invoke(
        app,
        [
            "fit", str(gadre_csv), "--n-col", "params_no_embed", "--d-col", "tokens", "--loss-col", "loss_c4_val",
            "--group-col", "dataset", "--fit-where", f"params <= {GADRE_LARGEST_FITTED_PARAMS}",
            "--predict-where", f"params > {GADRE_LARGEST_FITTED_PARAMS}", "--bootstrap", "100", "--json", str(out),
            "--plain-bootstrap",
        ],
    )
    assert result.exit_code == 0, result.output
    import json

    payload = json.loads(out.read_text())
    errors = []
    print()
    for dataset in ("c4_original", "rpj", "rw_original"):
        group = payload["groups"][dataset]
        bt = group["backtest"]
        assert set(group["params"]) == {"E", "A", "B", "alpha", "beta"}
        assert group["n_points"] == (31 if dataset == "c4_original" else 32)
        assert bt["n_holdout"] == 3
        for p in bt["points"]:
            assert p["low"] <= p["prediction"] <= p["high"]
            rel = p["prediction"] / p["actual"] - 1.0
            errors.append(abs(rel))
            print(f"  {dataset}: N={p['inputs']['params_nonembed']:.3g}, D/N={p['inputs']['tokens'] / p['inputs']['params_nonembed']:.0f}: "
                  f"predicted {p['prediction']:.4f}, actual {p['actual']:.4f} ({rel:+.2%})")
        print(f"  {dataset}: mean {bt['mean_abs_rel_error']:.2%}, max {bt['max_abs_rel_error']:.2%}")
        assert bt["mean_abs_rel_error"] <= 0.03
    print(f"  all nine held-out runs: mean {np.mean(errors):.2%}, max {np.max(errors):.2%} (Gadre et al.: ~0.7%)")
    assert np.mean(errors) <= 0.025
    assert np.max(errors) <= 0.06


def test_library_backtest_on_gadre_matches_cli_split(gadre_csv):
    """The library's backtest on one data set gives the same held-out errors as the CLI path."""
    df = pd.read_csv(gadre_csv)
    df = df[df["dataset"] == "rw_original"]
    data = make_fit_data(
        {"params_nonembed": df["params_no_embed"].to_numpy(), "tokens": df["tokens"].to_numpy()},
        df["loss_c4_val"].to_numpy(),
    )
    fitted = df["params"].to_numpy() <= GADRE_LARGEST_FITTED_PARAMS
    bt = backtest(data, CHINCHILLA, fitted, ~fitted, options=FitOptions(bootstrap=0))
    group = bt.groups["all"]
    assert group.n_fit == 32 and group.n_holdout == 3
    assert group.coverage is None and all(p.low is None for p in group.points)
    assert group.mean_abs_rel_error <= 0.015
