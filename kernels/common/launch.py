"""Launch settings shared by the Triton wrappers: block sizes, compute dtype, dummy pointers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels.common.dispatch import interpreting
from scaling.errors import UserInputError

DEFAULT_BLOCK_TOKENS = 64
DEFAULT_BLOCK_HIDDEN = 64
MIN_DOT_DIM = 16  # tl.dot needs every dimension >= 16 on NVIDIA GPUs


@dataclass(frozen=True)
class Launch:
    block_tokens: int
    compute: tl.dtype
    precision: str
    num_warps: int


def feature_block(dim: int) -> int:
    return max(MIN_DOT_DIM, triton.next_power_of_2(dim))


def launch_settings(dtype: torch.dtype, widest_tile: int, block_tokens: int | None) -> Launch:
    """bf16/fp16 operands stay in their dtype for tensor cores; fp32 operands use TF32 tensor-core
    products, other dtypes (fp64) exact fp32 (ieee) ones; every dot accumulates in fp32.

    fp32 reaches the kernels only where no autocast is on (the ops cast to the autocast dtype,
    `kernels.common.precision`): fp32 training. Its ieee builds spill 4-13 KB per thread on sm_90
    and run on the CUDA cores, so fp32 takes TF32, as Triton's and flash-linear-attention's fp32
    dots do by default (compare fp32 kernels with the reference at TF32 tolerances).
    The CPU interpreter computes bf16 dots incorrectly (checked with Triton 3.7), so there every
    dot runs on fp32 operands, exactly; the GPU check tests the bf16 and TF32 paths on the chip.
    """
    low = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}.get(dtype)
    if interpreting():
        compute, precision = tl.float32, "ieee"
    elif low is not None:
        compute, precision = low, "tf32"  # input_precision only matters for fp32 operands
    elif dtype == torch.float32:
        compute, precision = tl.float32, "tf32"
    else:
        compute, precision = tl.float32, "ieee"
    block = block_tokens or DEFAULT_BLOCK_TOKENS
    if block < MIN_DOT_DIM or block & (block - 1):
        raise UserInputError("block_tokens", f"must be a power of two >= {MIN_DOT_DIM}, got {block}",
                             "pass 16, 32, 64 or 128, or leave it unset")
    return Launch(block, compute, precision, 8 if widest_tile >= 128 * 64 else 4)


def contiguous_or_dummy(x: torch.Tensor | None, dummy: torch.Tensor) -> torch.Tensor:
    """Kernels take a pointer for every optional input; an unused one points at `dummy`."""
    return dummy if x is None else x.contiguous()
