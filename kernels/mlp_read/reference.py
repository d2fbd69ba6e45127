"""PyTorch reference of the MLP-memory cached read, with bounded memory.

    out[t] = sum_{i < seg(t)} w_i[t] * W2_i act(W1_i x_t)      (w from `SegmentWeights`)

W1_i: (F, d_in), W2_i: (d_out, F). Forward and backward loop over cached segments; the
backward recomputes the hidden activations of one segment at a time:

    h = W1_i x,  a = act(h),  p = W2_i^T do
    dw_i[t] = <a, p>,  dh = w_i[t] p * act'(h)
    dx[t] += W1_i^T dh,  dW1_i = sum_t dh x^T,  dW2_i = sum_t w_i[t] do a^T
"""

from __future__ import annotations

import torch

from kernels.common.activations import activate, activation_grad
from kernels.common.segments import SegmentTable
from kernels.common.weights import SegmentWeights


class MLPReadReference(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, gates: torch.Tensor | None,
                indices: torch.Tensor | None, table: SegmentTable, activation: str) -> torch.Tensor:
        weights, xf = SegmentWeights.prepare(table, gates, indices, x)
        acc = xf.dtype
        out = xf.new_zeros(*x.shape[:3], w2.shape[-2])
        for i in range(table.n_read):
            s = weights.start(i)
            hidden = activate(activation, torch.matmul(xf[:, :, s:], w1[:, :, i].to(acc).transpose(-1, -2)))
            read = torch.matmul(hidden, w2[:, :, i].to(acc).transpose(-1, -2))
            out[:, :, s:] += weights.weight(i, x)[..., None] * read
        ctx.save_for_backward(x, w1, w2, gates, indices)
        ctx.table, ctx.activation = table, activation
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, w1, w2, gates, indices = ctx.saved_tensors
        table: SegmentTable = ctx.table
        weights, xf = SegmentWeights.prepare(table, gates, indices, x)
        acc, do = xf.dtype, grad_out.to(xf.dtype)
        dx, dw1, dw2 = weights.grad_buffer(x), weights.grad_buffer(w1), weights.grad_buffer(w2)
        dg = weights.grad_buffer(gates, ctx.needs_input_grad[3])
        for i in range(table.n_read):
            s = weights.start(i)
            a1, a2 = w1[:, :, i].to(acc), w2[:, :, i].to(acc)
            x_s, do_s = xf[:, :, s:], do[:, :, s:]
            w = weights.weight(i, x)[..., None]
            pre = torch.matmul(x_s, a1.transpose(-1, -2))
            hidden = activate(ctx.activation, pre)
            back = torch.matmul(do_s, a2)  # p = W2^T do, (B, H, L - s, F)
            grad_pre = w * back * activation_grad(ctx.activation, pre)
            dx[:, :, s:] += torch.matmul(grad_pre, a1)
            dw1[:, :, i] = torch.matmul(grad_pre.transpose(-1, -2), x_s)
            dw2[:, :, i] = torch.matmul((w * do_s).transpose(-1, -2), hidden)
            if dg is not None:
                weights.add_grad(dg, i, (hidden * back).sum(-1))
        return (dx.to(x.dtype), dw1.to(w1.dtype), dw2.to(w2.dtype), None if dg is None else dg.to(gates.dtype),
                None, None, None)
