"""PyTorch reference of the matrix-memory cached read, with bounded memory.

    out[t] = sum_{i < seg(t)} w_i[t] * (S_i q_t)        (w from `SegmentWeights`, or SSC slots)

Dense gates (grm, soup, residual): forward and backward loop over cached segments, so nothing
larger than one (B, H, L, d) block is alive at a time. SSC: blocks of the static (token, slot)
pairs (`kernels.common.pairs`), each gathering only its own pairs' states, so a token reads
exactly min(K, seg(t)) states. The backward recomputes S_i q_t instead of saving it:

    dq[t]  = sum_i w_i[t] S_i^T do[t]
    dS_i   = sum_{t >= bounds[i+1]} w_i[t] do[t] q_t^T
    dw_i[t] = <do[t], S_i q_t>
"""

from __future__ import annotations

import torch

from kernels.common.pairs import block_slots, gather_states, pair_blocks, scatter_states, slot_pairs
from kernels.common.precision import without_autocast
from kernels.common.segments import SegmentTable
from kernels.common.weights import SegmentWeights, accumulation_dtype, grad_buffers


def _read(x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """x (..., T, d_in) through state (..., d_out, d_in) -> (..., T, d_out)."""
    return torch.matmul(x, state.transpose(-1, -2))


class MatrixReadReference(torch.autograd.Function):
    @staticmethod
    @without_autocast
    def forward(ctx, q: torch.Tensor, states: torch.Tensor, gates: torch.Tensor | None,
                indices: torch.Tensor | None, table: SegmentTable) -> torch.Tensor:
        acc = accumulation_dtype(q.dtype)
        qf = q.to(acc)
        out = qf.new_zeros(*q.shape[:3], states.shape[-2])
        if indices is None:
            weights = SegmentWeights(table, gates, acc)
            for i in range(table.n_read):
                s = weights.start(i)
                out[:, :, s:] += weights.weight(i, q)[..., None] * _read(qf[:, :, s:], states[:, :, i].to(acc))
        else:
            pairs = slot_pairs(table, indices.shape[-1], q.device)
            per_pair = q.shape[0] * q.shape[1] * states.shape[-1] * states.shape[-2] * qf.element_size()
            for a, b in pair_blocks(pairs, per_pair):
                tok, _, chosen, valid, g = block_slots(pairs, a, b, indices, gates, states.shape[2])
                read = _read(qf[:, :, tok, None], gather_states(states, chosen).to(acc))[..., 0, :]
                out.index_add_(2, tok, (g.to(acc) * valid)[..., None] * read)
        ctx.save_for_backward(q, states, gates, indices)
        ctx.table = table
        return out.to(q.dtype)

    @staticmethod
    @without_autocast
    def backward(ctx, grad_out: torch.Tensor):
        q, states, gates, indices = ctx.saved_tensors
        table: SegmentTable = ctx.table
        acc = accumulation_dtype(q.dtype)
        qf, do = q.to(acc), grad_out.to(acc)
        (dq, ds), dg = grad_buffers(acc, [q, states], gates, ctx.needs_input_grad[2])
        if indices is None:
            weights = SegmentWeights(table, gates, acc)
            for i in range(table.n_read):
                s = weights.start(i)
                state = states[:, :, i].to(acc)
                w = weights.weight(i, q)[..., None]
                do_s = do[:, :, s:]
                dq[:, :, s:] += w * torch.matmul(do_s, state)
                ds[:, :, i] = torch.matmul((w * do_s).transpose(-1, -2), qf[:, :, s:])
                if dg is not None:
                    weights.add_grad(dg, i, (do_s * _read(qf[:, :, s:], state)).sum(-1))
        else:
            pairs = slot_pairs(table, indices.shape[-1], q.device)
            per_pair = 2 * q.shape[0] * q.shape[1] * states.shape[-1] * states.shape[-2] * qf.element_size()
            for a, b in pair_blocks(pairs, per_pair):
                tok, slot, chosen, valid, g = block_slots(pairs, a, b, indices, gates, states.shape[2])
                state = gather_states(states, chosen).to(acc)  # (B, H, p, d_out, d_in)
                x, d_o = qf[:, :, tok, None], do[:, :, tok, None]  # (B, H, p, 1, d)
                w = (g.to(acc) * valid)[..., None, None]
                dq.index_add_(2, tok, torch.matmul(w * d_o, state)[..., 0, :])
                scatter_states(ds, chosen, torch.matmul((w * d_o).transpose(-1, -2), x))
                if dg is not None:
                    dg[:, :, tok, slot] = (d_o * _read(x, state)).sum(-1)[..., 0] * valid
        return (dq.to(q.dtype), ds.to(states.dtype), None if dg is None else dg.to(gates.dtype), None, None)
