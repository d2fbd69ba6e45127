"""Every kernel variant compiles for sm_90 (H100/H200) on this CPU machine, in a clean subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("head_dim", [64, 128])
def test_kernels_compile_for_hopper(head_dim):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("compile_sm90.py")), str(head_dim)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("shared=") == 2 * 3 * 6  # dtypes x modes x kernels
