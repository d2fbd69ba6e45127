"""benchmarks/kernels.py: its GPU parts run on tiny shapes through the interpreter, its CPU part as shipped.

The GPU machine is not always available, so the code paths the GPU run takes (correctness
table, Triton-vs-gather table, the in-script gather baseline) are exercised here on CPU.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest
import torch

from kernels import gated_cached_read, mlp_cached_read, ssc_cached_read

pytestmark = pytest.mark.usefixtures("interpreted_kernels")

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "kernels.py"
    spec = importlib.util.spec_from_file_location("benchmarks_kernels", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_gather_baseline_computes_the_same_reads(bench):
    """The baseline the speedups are measured against must compute what the ops compute."""
    cases = {name: (tensors, op, gather) for name, tensors, op, gather in
             bench.op_cases(1, 2, 128, 16, 8, torch.float64, CPU, top_k=2)}
    assert {"grm", "ssc(k=2)", "mlp-grm", "mlp-ssc(k=2)"} <= cases.keys()
    for name in ("grm", "ssc(k=2)", "mlp-grm", "mlp-ssc(k=2)"):
        tensors, op, gather = cases[name]
        torch.testing.assert_close(gather(*tensors), op("reference")(*tensors))
    assert gated_cached_read and ssc_cached_read and mlp_cached_read  # the ops the cases wrap


def test_gpu_parts_run_through_the_interpreter(bench, capsys):
    assert bench.check_correctness(CPU, length=32, segment=8, d=16, batch=1, heads=1)
    bench.op_benchmark(CPU, [32], time.monotonic() + 600, repeats=1, dims=(16,), segments=(8,), heads=1)
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith(("grm ", "residual ", "ssc(", "mlp-"))]
    assert sum(row[-1] == "ok" for row in rows) == 12  # 6 ops x 2 dtypes, all within tolerance
    timed = [row for row in rows if row[1] == "32"]
    assert len(timed) == 4 and all(row[6].endswith("x") for row in timed)  # grm, ssc, mlp grm, mlp ssc vs gather
