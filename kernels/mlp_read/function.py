"""autograd.Function tying the MLP-read Triton kernels together, and their launchers."""

from __future__ import annotations

import torch
import triton

from kernels.common.launch import DEFAULT_BLOCK_HIDDEN, contiguous_or_dummy, feature_block, launch_settings
from kernels.common.segments import SegmentTable, reads_nothing
from kernels.mlp_read.kernel import mlp_bwd_tokens_kernel, mlp_bwd_weights_kernel, mlp_fwd_kernel


def _common(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, gates: torch.Tensor | None,
            indices: torch.Tensor | None, table: SegmentTable, activation: str, normed: bool,
            block_tokens: int | None, block_hidden: int | None) -> tuple[dict, tuple, dict]:
    d_in, hidden, d_out = x.shape[-1], w1.shape[3], w2.shape[3]
    n_slots = 1 if indices is None else indices.shape[-1]
    block_i, block_o = feature_block(d_in), feature_block(d_out)
    # fp32 tiles at d = 128 with 64-wide hidden slices need ~213 KB of shared memory on sm_90
    # (measured by compiling offline); halving the slice keeps them well inside the 227 KB limit.
    wide_fp32 = x.dtype == torch.float32 and max(block_i, block_o) >= 128
    block_f = block_hidden or min(DEFAULT_BLOCK_HIDDEN // (2 if wide_fp32 else 1), feature_block(hidden))
    launch = launch_settings(x.dtype, max(block_i, block_o) * block_f, block_tokens)
    meta = dict(D_IN=d_in, D_OUT=d_out, F=hidden, BLOCK_T=launch.block_tokens, BLOCK_I=block_i, BLOCK_O=block_o,
                BLOCK_F=block_f, BLOCK_K=triton.next_power_of_2(max(n_slots, 1)), SPARSE=indices is not None,
                HAS_GATES=gates is not None, ACT=activation, NORM=normed, COMPUTE=launch.compute,
                PRECISION=launch.precision, num_warps=launch.num_warps)
    dummy = table.seg_of_token_i32
    ptrs = dict(x=x.contiguous(), w1=w1.contiguous(), w2=w2.contiguous(), g=contiguous_or_dummy(gates, dummy),
                idx=dummy if indices is None else indices.to(torch.int32).contiguous())
    return ptrs, (x.shape[2], w1.shape[2], n_slots), meta


class MLPReadTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, gates: torch.Tensor | None,
                indices: torch.Tensor | None, table: SegmentTable, activation: str, normed: bool,
                block_tokens: int | None, block_hidden: int | None) -> torch.Tensor:
        ptrs, sizes, meta = _common(x, w1, w2, gates, indices, table, activation, normed, block_tokens,
                                    block_hidden)
        b, h, length = x.shape[:3]
        out = x.new_zeros(b, h, length, w2.shape[3])
        if not reads_nothing(table, indices):
            grid = (triton.cdiv(length, meta["BLOCK_T"]), b * h)
            mlp_fwd_kernel[grid](ptrs["x"], ptrs["w1"], ptrs["w2"], ptrs["g"], ptrs["idx"], table.seg_of_token_i32,
                                 out, *sizes, **meta)
        ctx.save_for_backward(x, w1, w2, gates, indices)
        ctx.settings = (table, activation, normed, block_tokens, block_hidden)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, w1, w2, gates, indices = ctx.saved_tensors
        table, activation, normed, block_tokens, block_hidden = ctx.settings
        ptrs, sizes, meta = _common(x, w1, w2, gates, indices, table, activation, normed, block_tokens,
                                    block_hidden)
        b, h, length = x.shape[:3]
        do = grad_out.contiguous()
        dx = torch.zeros_like(ptrs["x"])
        dw1, dw2 = torch.zeros_like(ptrs["w1"]), torch.zeros_like(ptrs["w2"])
        dg = None if gates is None else torch.zeros_like(ptrs["g"])
        if not reads_nothing(table, indices):
            grid = (triton.cdiv(length, meta["BLOCK_T"]), b * h)
            mlp_bwd_tokens_kernel[grid](ptrs["x"], ptrs["w1"], ptrs["w2"], ptrs["g"], ptrs["idx"],
                                        table.seg_of_token_i32, do, dx, ptrs["g"] if dg is None else dg,
                                        *sizes, **meta)
            if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
                n_fb = triton.cdiv(meta["F"], meta["BLOCK_F"])
                mlp_bwd_weights_kernel[(table.n_read * n_fb, b * h)](
                    ptrs["x"], ptrs["w1"], ptrs["w2"], ptrs["g"], ptrs["idx"], table.seg_of_token_i32,
                    table.bounds_i32, do, dw1, dw2, *sizes, **meta)
        return dx, dw1, dw2, dg, None, None, None, None, None, None
