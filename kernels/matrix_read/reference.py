"""PyTorch reference of the matrix-memory cached read, with bounded memory.

    out[t] = sum_{i < seg(t)} w_i[t] * (S_i q_t)        (w from `SegmentWeights`)

Forward and backward each loop over cached segments, so nothing larger than one (B, H, L, d)
block is alive at a time, and the backward recomputes S_i q_t instead of saving it:

    dq[t]  = sum_i w_i[t] S_i^T do[t]
    dS_i   = sum_{t >= bounds[i+1]} w_i[t] do[t] q_t^T
    dw_i[t] = <do[t], S_i q_t>
"""

from __future__ import annotations

import torch

from kernels.common.segments import SegmentTable
from kernels.common.weights import SegmentWeights


class MatrixReadReference(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: torch.Tensor, states: torch.Tensor, gates: torch.Tensor | None,
                indices: torch.Tensor | None, table: SegmentTable) -> torch.Tensor:
        weights, qf = SegmentWeights.prepare(table, gates, indices, q)
        out = qf.new_zeros(*q.shape[:3], states.shape[-2])
        for i in range(table.n_read):
            s = weights.start(i)
            read = torch.matmul(qf[:, :, s:], states[:, :, i].to(qf.dtype).transpose(-1, -2))
            out[:, :, s:] += weights.weight(i, q)[..., None] * read
        ctx.save_for_backward(q, states, gates, indices)
        ctx.table = table
        return out.to(q.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        q, states, gates, indices = ctx.saved_tensors
        table: SegmentTable = ctx.table
        weights, qf = SegmentWeights.prepare(table, gates, indices, q)
        do = grad_out.to(qf.dtype)
        dq, ds = weights.grad_buffer(q), weights.grad_buffer(states)
        dg = weights.grad_buffer(gates, ctx.needs_input_grad[2])
        for i in range(table.n_read):
            s = weights.start(i)
            state = states[:, :, i].to(qf.dtype)
            w = weights.weight(i, q)[..., None]
            do_s = do[:, :, s:]
            dq[:, :, s:] += w * torch.matmul(do_s, state)
            ds[:, :, i] = torch.matmul((w * do_s).transpose(-1, -2), qf[:, :, s:])
            if dg is not None:
                read = torch.matmul(qf[:, :, s:], state.transpose(-1, -2))
                weights.add_grad(dg, i, (do_s * read).sum(-1))
        return (dq.to(q.dtype), ds.to(states.dtype), None if dg is None else dg.to(gates.dtype), None, None)
