"""Compile every kernel variant for Hopper (sm_90) without a GPU, using the ptxas in Triton's wheel.

Run as a script (not under TRITON_INTERPRET): the interpreter accepts Python the GPU compiler
rejects, so this is what catches a kernel that would only fail on the chip. Prints one line per
variant with its shared memory in bytes; exits non-zero on the first failure.

    python tests/kernels/compile_sm90.py 128         # head dim 128, every variant
    python tests/kernels/compile_sm90.py 64 --quick  # what the test runs: no gate-free variants
"""

from __future__ import annotations

import inspect
import sys

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from kernels.matrix_read.kernel import matrix_bwd_states_kernel, matrix_bwd_tokens_kernel, matrix_fwd_kernel
from kernels.mlp_read.kernel import mlp_bwd_tokens_kernel, mlp_bwd_weights_kernel, mlp_fwd_kernel

SM90_SHARED_LIMIT_BYTES = 232_448
INT_POINTERS = ("idx_ptr", "seg_ptr", "bounds_ptr")


def compile_sm90(kernel, dtype: str, constants: dict) -> int:
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
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})
    return compiled.metadata.shared


def main() -> int:
    d = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    modes = ((False, True), (True, True)) if "--quick" in sys.argv else ((False, False), (False, True), (True, True))
    for dtype, compute, precision in (("bf16", tl.bfloat16, "tf32"), ("fp32", tl.float32, "ieee")):
        for sparse, has_gates in modes:
            base = dict(D_IN=d, D_OUT=d, BLOCK_T=64, BLOCK_I=d, BLOCK_O=d, BLOCK_K=4, SPARSE=sparse,
                        HAS_GATES=has_gates, COMPUTE=compute, PRECISION=precision)
            # the plain MLP form (silu) and the paper's per-segment LayerNorm form (gelu, the model's)
            mlps = [dict(base, F=4 * d, BLOCK_F=32 if dtype == "fp32" and d >= 128 else 64, ACT=act, NORM=norm)
                    for act, norm in (("silu", False), ("gelu", True))]
            variants = [(matrix_fwd_kernel, base), (matrix_bwd_tokens_kernel, base), (matrix_bwd_states_kernel, base)]
            variants += [(kernel, mlp) for mlp in mlps
                         for kernel in (mlp_fwd_kernel, mlp_bwd_tokens_kernel, mlp_bwd_weights_kernel)]
            for kernel, constants in variants:
                shared = compile_sm90(kernel, dtype, dict(constants))
                print(f"{kernel.fn.__name__} {dtype} sparse={sparse} gates={has_gates} norm={constants.get('NORM')} "
                      f"shared={shared}", flush=True)
                if shared > SM90_SHARED_LIMIT_BYTES:
                    print(f"needs {shared} bytes of shared memory, over sm_90's {SM90_SHARED_LIMIT_BYTES}")
                    return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
