"""The kernels never transpose a computed tile (issue 22): tl.trans only of a tile as loaded.

tl.trans of a tl.dot result (or of anything computed from one) fed to another tl.dot is the
pattern behind flash-linear-attention's wrong Hopper gradients with Triton 3.4-3.7.0 (fla issue
640). The interpreter cannot see it, so this reads the kernels' source: every tl.trans /
tl.permute argument must be a name bound directly by a load (tl.load or a `load_*` helper).
Also the launcher's dot precision per dtype, which the interpreter overrides.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import triton.language as tl

from kernels.common.launch import launch_settings

KERNELS = Path(__file__).resolve().parents[2] / "kernels"
SOURCES = sorted(KERNELS.glob("*/kernel.py")) + [KERNELS / "common" / "triton_helpers.py"]


def _call_name(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return f"{_call_name(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _is_load(call: ast.AST) -> bool:
    name = _call_name(call)
    return isinstance(call, ast.Call) and (name == "tl.load" or name.split(".")[-1].startswith("load_"))


def transposes_of_computed_tiles(source: str) -> list[str]:
    """'function:line: expression' of every tl.trans/tl.permute whose argument is not a loaded tile."""
    bad = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, ast.FunctionDef):
            continue
        loaded = set()
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and _is_load(node.value):
                for target in node.targets:
                    names = target.elts if isinstance(target, ast.Tuple) else [target]
                    loaded |= {n.id for n in names if isinstance(n, ast.Name)}
        for node in ast.walk(fn):
            if isinstance(node, ast.Call) and _call_name(node) in ("tl.trans", "tl.permute"):
                arg = node.args[0]
                if not (isinstance(arg, ast.Name) and arg.id in loaded):
                    bad.append(f"{fn.name}:{node.lineno}: {ast.unparse(node)}")
    return bad


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(KERNELS)))
def test_kernels_transpose_only_loaded_tiles(path):
    assert transposes_of_computed_tiles(path.read_text()) == []


def test_the_check_sees_the_hazard():
    """The rewritten dW kernel's old lines, and a transposed dot result, are caught."""
    old = '''
def k(x_ptr, w1, w2):
    x = load_rows(x_ptr)
    pre = mm(x, tl.trans(w1))
    acc1 = mm(tl.trans(scale[:, None] * back * act_grad(pre, ACT)), x)
    s = tl.dot(x, x)
    y = tl.dot(tl.trans(s), x)
'''
    assert len(transposes_of_computed_tiles(old)) == 3  # w1 is a parameter here, not loaded in k


def test_launcher_dot_precision(monkeypatch):
    """On the GPU: bf16/fp16 operands stay low precision, fp32 takes TF32 (not ieee), fp64 exact fp32;
    the interpreter always runs fp32 operands exactly (its bf16 dots are wrong)."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    got = {dtype: (launch_settings(dtype, 64 * 64, None).compute, launch_settings(dtype, 64 * 64, None).precision)
           for dtype in (torch.bfloat16, torch.float16, torch.float32, torch.float64)}
    assert got == {torch.bfloat16: (tl.bfloat16, "tf32"), torch.float16: (tl.float16, "tf32"),
                   torch.float32: (tl.float32, "tf32"), torch.float64: (tl.float32, "ieee")}
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert {launch_settings(d, 64 * 64, None).precision for d in got} == {"ieee"}
    assert {launch_settings(d, 64 * 64, None).compute for d in got} == {tl.float32}
