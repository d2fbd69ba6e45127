"""Compile every kernel variant for Hopper (sm_90) without a GPU, using the ptxas in Triton's wheel.

Run as a script (not under TRITON_INTERPRET): the interpreter accepts Python the GPU compiler
rejects, so this is what catches a kernel that would only fail on the chip. Each variant is built
with the launcher's own settings (`launch_settings`: operand dtype, dot precision - TF32 for fp32 -
and warps). Prints one line per variant with its shared memory in bytes (and, with --spills, the
registers and spill stores ptxas reports); exits non-zero on the first failure.

    python tests/kernels/compile_sm90.py 128         # head dim 128, every variant
    python tests/kernels/compile_sm90.py 64 --quick  # what the test runs: no gate-free variants
    python tests/kernels/compile_sm90.py 64 --spills # also registers and spill bytes per thread
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from kernels.common.launch import DEFAULT_BLOCK_HIDDEN, launch_settings
from kernels.matrix_read.kernel import matrix_bwd_states_kernel, matrix_bwd_tokens_kernel, matrix_fwd_kernel
from kernels.mlp_read.kernel import mlp_bwd_tokens_kernel, mlp_bwd_weights_kernel, mlp_fwd_kernel

SM90_SHARED_LIMIT_BYTES = 232_448
INT_POINTERS = ("idx_ptr", "seg_ptr", "bounds_ptr")


def ptxas_usage(ptx: str) -> str:
    """'regs=R spill_stores=S' for sm_90a, from the ptxas in Triton's wheel (-v)."""
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    try:
        log = subprocess.run([ptxas, "-arch=sm_90a", "-v", f.name, "-o", os.devnull], capture_output=True,
                             text=True, check=True).stderr
    finally:
        os.unlink(f.name)
    regs, spills = re.search(r"Used (\d+) registers", log), re.search(r"(\d+) bytes spill stores", log)
    return f"regs={regs.group(1) if regs else '?'} spill_stores={spills.group(1) if spills else '?'}"


def compile_sm90(kernel, dtype: str, constants: dict, num_warps: int, spills: bool = False) -> tuple[int, str]:
    names = list(inspect.signature(kernel.fn).parameters)
    signature = {}
    for name in names:
        if name in constants:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*i32" if name in INT_POINTERS else f"*{dtype}"
        else:
            signature[name] = "i32"
    source = ASTSource(kernel, signature, constexprs={(names.index(k),): v for k, v in constants.items()})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
    return compiled.metadata.shared, ptxas_usage(compiled.asm["ptx"]) if spills else ""


def main() -> int:
    d = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    spills = "--spills" in sys.argv
    modes = ((False, True), (True, True)) if "--quick" in sys.argv else ((False, False), (False, True), (True, True))
    for dtype, torch_dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        matrix = launch_settings(torch_dtype, d * d, None)
        # as MLPReadTriton: fp32 at d >= 128 halves the hidden slice to stay inside shared memory
        block_f = DEFAULT_BLOCK_HIDDEN // (2 if dtype == "fp32" and d >= 128 else 1)
        mlp = launch_settings(torch_dtype, d * block_f, None)
        for sparse, has_gates in modes:
            base = dict(D_IN=d, D_OUT=d, BLOCK_T=64, BLOCK_I=d, BLOCK_O=d, BLOCK_K=4, SPARSE=sparse,
                        HAS_GATES=has_gates, COMPUTE=matrix.compute, PRECISION=matrix.precision)
            # the plain MLP form (silu) and the paper's per-segment LayerNorm form (gelu, the model's)
            mlps = [dict(base, F=4 * d, BLOCK_F=block_f, ACT=act, NORM=norm, COMPUTE=mlp.compute,
                         PRECISION=mlp.precision) for act, norm in (("silu", False), ("gelu", True))]
            variants = [(kernel, base, matrix.num_warps)
                        for kernel in (matrix_fwd_kernel, matrix_bwd_tokens_kernel, matrix_bwd_states_kernel)]
            variants += [(kernel, constants, mlp.num_warps) for constants in mlps
                         for kernel in (mlp_fwd_kernel, mlp_bwd_tokens_kernel, mlp_bwd_weights_kernel)]
            for kernel, constants, warps in variants:
                shared, usage = compile_sm90(kernel, dtype, dict(constants), warps, spills)
                print(f"{kernel.fn.__name__} {dtype}/{constants['PRECISION']} sparse={sparse} gates={has_gates} "
                      f"norm={constants.get('NORM')} warps={warps} shared={shared} {usage}".rstrip(), flush=True)
                if shared > SM90_SHARED_LIMIT_BYTES:
                    print(f"needs {shared} bytes of shared memory, over sm_90's {SM90_SHARED_LIMIT_BYTES}")
                    return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
