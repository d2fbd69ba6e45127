"""autograd.Function tying the matrix-read Triton kernels together, and their launchers."""

from __future__ import annotations

import torch
import triton

from kernels.common.launch import contiguous_or_dummy, feature_block, launch_settings
from kernels.common.segments import SegmentTable, reads_nothing
from kernels.matrix_read.kernel import matrix_bwd_states_kernel, matrix_bwd_tokens_kernel, matrix_fwd_kernel


def _common(q: torch.Tensor, states: torch.Tensor, gates: torch.Tensor | None, indices: torch.Tensor | None,
            table: SegmentTable, block_tokens: int | None) -> tuple[dict, tuple, dict]:
    b, h, length, d_in = q.shape
    n_states, d_out = states.shape[2], states.shape[3]
    n_slots = 1 if indices is None else indices.shape[-1]
    block_i, block_o = feature_block(d_in), feature_block(d_out)
    launch = launch_settings(q.dtype, block_i * block_o, block_tokens)
    meta = dict(D_IN=d_in, D_OUT=d_out, BLOCK_T=launch.block_tokens, BLOCK_I=block_i, BLOCK_O=block_o,
                BLOCK_K=triton.next_power_of_2(max(n_slots, 1)), SPARSE=indices is not None, HAS_GATES=gates is not None,
                COMPUTE=launch.compute, PRECISION=launch.precision, num_warps=launch.num_warps)
    sizes = (length, n_states, n_slots)
    dummy = table.seg_of_token_i32
    ptrs = dict(q=q.contiguous(), s=states.contiguous(), g=contiguous_or_dummy(gates, dummy),
                idx=dummy if indices is None else indices.to(torch.int32).contiguous())
    return ptrs, sizes, meta


class MatrixReadTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: torch.Tensor, states: torch.Tensor, gates: torch.Tensor | None,
                indices: torch.Tensor | None, table: SegmentTable, block_tokens: int | None) -> torch.Tensor:
        ptrs, sizes, meta = _common(q, states, gates, indices, table, block_tokens)
        b, h, length = q.shape[:3]
        out = q.new_empty(b, h, length, states.shape[3])
        if reads_nothing(table, indices):
            out.zero_()
        else:
            grid = (triton.cdiv(length, meta["BLOCK_T"]), b * h)
            matrix_fwd_kernel[grid](ptrs["q"], ptrs["s"], ptrs["g"], ptrs["idx"], table.seg_of_token_i32, out,
                                    *sizes, **meta)
        ctx.save_for_backward(q, states, gates, indices)
        ctx.table, ctx.block_tokens = table, block_tokens
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        q, states, gates, indices = ctx.saved_tensors
        table: SegmentTable = ctx.table
        ptrs, sizes, meta = _common(q, states, gates, indices, table, ctx.block_tokens)
        b, h, length = q.shape[:3]
        do = grad_out.contiguous()
        dq = torch.zeros_like(ptrs["q"])
        ds = torch.zeros_like(ptrs["s"])
        dg = None if gates is None else torch.zeros_like(ptrs["g"])
        if not reads_nothing(table, indices):
            grid = (triton.cdiv(length, meta["BLOCK_T"]), b * h)
            matrix_bwd_tokens_kernel[grid](ptrs["q"], ptrs["s"], ptrs["g"], ptrs["idx"], table.seg_of_token_i32, do,
                                           dq, ptrs["g"] if dg is None else dg, *sizes, **meta)
            if ctx.needs_input_grad[1]:
                matrix_bwd_states_kernel[(table.n_read, b * h)](ptrs["q"], ptrs["g"], ptrs["idx"],
                                                                table.seg_of_token_i32, table.bounds_i32, do, ds,
                                                                *sizes, **meta)
        return dq, ds, dg, None, None, None
