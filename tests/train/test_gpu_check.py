"""benchmarks/gpu_check.py runs on a bare GPU machine: only torch, numpy, the stdlib and this tree.

Here (no GPU) it runs its CPU smoke table with ray, mlflow, pydantic, optuna, yaml, boto3, typer and
rich made unimportable, as they are on the GPU machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("ray", "mlflow", "pydantic", "optuna", "yaml", "boto3", "botocore", "typer", "rich", "scipy", "pandas")


def test_gpu_check_needs_nothing_but_torch_and_prints_its_table():
    runner = (f"import runpy, sys; sys.modules.update({{m: None for m in {BLOCKED!r}}}); "
              f"sys.argv = ['gpu_check.py', '--archs', 'transformer,swla+grm', '--steps', '3']; "
              f"runpy.run_path({str(REPO / 'benchmarks' / 'gpu_check.py')!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, timeout=600, cwd=REPO,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "No GPU" in out and "loss bf16" in out and "loss fp32" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("transformer", "swla+grm"))]
    assert [r[0] for r in rows] == ["transformer", "swla+grm"]
    for row in rows:  # both precisions trained to a finite loss: columns are loss bf16, loss fp32, diff
        bf16, fp32 = float(row[-3]), float(row[-2])
        assert 0 < bf16 < 6 and 0 < fp32 < 6 and abs(bf16 - fp32) < 0.1
