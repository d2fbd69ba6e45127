"""benchmarks/mc_vs_base.py --quick: the paired table and the noise calibration come out of real runs."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "mc_vs_base.py"


@pytest.mark.slow
def test_quick_run_prints_paired_differences_and_the_noise_ratio(capsys):
    spec = importlib.util.spec_from_file_location("mc_vs_base", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    summary = bench.main(["--quick", "--jobs", "1"])
    out = capsys.readouterr().out
    cell = summary["cells"][("3K", 2.0)]
    assert set(cell) == {"swla", "swla+grm@C32", "swla+grm@C32 (plain softmax)"}
    for name in ("swla+grm@C32", "swla+grm@C32 (plain softmax)"):
        row = cell[name]
        assert row["n"] == 2 and math.isfinite(row["mean"]) and row["low"] < row["mean"] < row["high"]
        # the paired difference is MC's seed-mean loss minus the base's
        assert row["mean"] == pytest.approx(row["loss"] - cell["swla"]["loss"], abs=1e-9)
    # the bias changes the model: the two gated runs do not train to the same loss
    assert cell["swla+grm@C32"]["loss"] != cell["swla+grm@C32 (plain softmax)"]["loss"]
    assert summary["noise"] and all(n["seed_sd"] >= 0 and n["ckpt_sd"] > 0 for n in summary["noise"])
    assert summary["pooled_ratio"] > 0
    assert "paired by seed" in out and "pooled seed sd / checkpoint sd" in out
