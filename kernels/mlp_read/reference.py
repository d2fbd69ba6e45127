"""PyTorch reference of the MLP-memory cached read, with bounded memory.

    out[t] = sum_{i < seg(t)} w_i[t] * r_i(x_t),  r_i(x) = W2_i act(W1_i x)  (or LN of it: `normed`)

W1_i: (F, d_in), W2_i: (d_out, F). Dense gates loop over cached segments; SSC walks blocks of
the static (token, slot) pairs, gathering only that block's weights (`kernels.common.pairs`).
The backward recomputes the hidden activations (and the norm) of one segment or block at a time:

    h = W1_i x,  a = act(h),  o = W2_i a,  n = LN(o)
    e = d loss / d o = w do (plain) or LN'(w do) (normed);  dw_i[t] = <do, o> or <do, n>
    p = W2_i^T e,  dh = p * act'(h),  dx += W1_i^T dh,  dW1_i = sum_t dh x^T,  dW2_i = sum_t e a^T
"""

from __future__ import annotations

import torch

from kernels.common.activations import activate, activation_grad
from kernels.common.norm import normalise, normalise_backward
from kernels.common.pairs import block_slots, gather_states, pair_blocks, scatter_states, slot_pairs
from kernels.common.precision import without_autocast
from kernels.common.segments import SegmentTable
from kernels.common.weights import SegmentWeights, accumulation_dtype, grad_buffers


def _forward(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, activation: str,
             normed: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(r(x), pre-activation, activation, rstd or None) for x (..., T, d_in), w1 (..., F, d_in), w2 (..., d_out, F)."""
    pre = torch.matmul(x, w1.transpose(-1, -2))
    hidden = activate(activation, pre)
    out = torch.matmul(hidden, w2.transpose(-1, -2))
    if not normed:
        return out, pre, hidden, None
    n, rstd = normalise(out)
    return n, pre, hidden, rstd


def _backward(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, w: torch.Tensor, do: torch.Tensor,
              activation: str, normed: bool) -> tuple[torch.Tensor, ...]:
    """(dx, dW1, dW2, d loss / d w) of w * r(x); dW sums over the token dimension (-2)."""
    read, pre, hidden, rstd = _forward(x, w1, w2, activation, normed)
    grad_read = (do * read).sum(-1)
    err = normalise_backward(read, rstd, w * do) if rstd is not None else w * do
    grad_pre = torch.matmul(err, w2) * activation_grad(activation, pre)
    return (torch.matmul(grad_pre, w1), torch.matmul(grad_pre.transpose(-1, -2), x),
            torch.matmul(err.transpose(-1, -2), hidden), grad_read)


class MLPReadReference(torch.autograd.Function):
    @staticmethod
    @without_autocast
    def forward(ctx, x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, gates: torch.Tensor | None,
                indices: torch.Tensor | None, table: SegmentTable, activation: str, normed: bool) -> torch.Tensor:
        acc = accumulation_dtype(x.dtype)
        xf = x.to(acc)
        out = xf.new_zeros(*x.shape[:3], w2.shape[-2])
        if indices is None:
            weights = SegmentWeights(table, gates, acc)
            for i in range(table.n_read):
                s = weights.start(i)
                read = _forward(xf[:, :, s:], w1[:, :, i].to(acc), w2[:, :, i].to(acc), activation, normed)[0]
                out[:, :, s:] += weights.weight(i, x)[..., None] * read
        else:
            pairs = slot_pairs(table, indices.shape[-1], x.device)
            for a, b in pair_blocks(pairs, _pair_bytes(x, w1, w2, xf)):
                tok, _, chosen, valid, g = block_slots(pairs, a, b, indices, gates, w1.shape[2])
                read = _forward(xf[:, :, tok, None], gather_states(w1, chosen).to(acc),
                                gather_states(w2, chosen).to(acc), activation, normed)[0][..., 0, :]
                out.index_add_(2, tok, (g.to(acc) * valid)[..., None] * read)
        ctx.save_for_backward(x, w1, w2, gates, indices)
        ctx.settings = (table, activation, normed)
        return out.to(x.dtype)

    @staticmethod
    @without_autocast
    def backward(ctx, grad_out: torch.Tensor):
        x, w1, w2, gates, indices = ctx.saved_tensors
        table, activation, normed = ctx.settings
        acc = accumulation_dtype(x.dtype)
        xf, do = x.to(acc), grad_out.to(acc)
        (dx, dw1, dw2), dg = grad_buffers(acc, [x, w1, w2], gates, ctx.needs_input_grad[3])
        if indices is None:
            weights = SegmentWeights(table, gates, acc)
            for i in range(table.n_read):
                s = weights.start(i)
                grads = _backward(xf[:, :, s:], w1[:, :, i].to(acc), w2[:, :, i].to(acc),
                                  weights.weight(i, x)[..., None], do[:, :, s:], activation, normed)
                dx[:, :, s:] += grads[0]
                dw1[:, :, i], dw2[:, :, i] = grads[1], grads[2]
                if dg is not None:
                    weights.add_grad(dg, i, grads[3])
        else:
            pairs = slot_pairs(table, indices.shape[-1], x.device)
            for a, b in pair_blocks(pairs, 2 * _pair_bytes(x, w1, w2, xf)):
                tok, slot, chosen, valid, g = block_slots(pairs, a, b, indices, gates, w1.shape[2])
                w = (g.to(acc) * valid)[..., None, None]
                grads = _backward(xf[:, :, tok, None], gather_states(w1, chosen).to(acc),
                                  gather_states(w2, chosen).to(acc), w, do[:, :, tok, None], activation, normed)
                dx.index_add_(2, tok, grads[0][..., 0, :])
                scatter_states(dw1, chosen, grads[1])
                scatter_states(dw2, chosen, grads[2])
                if dg is not None:
                    dg[:, :, tok, slot] = grads[3][..., 0] * valid
        return (dx.to(x.dtype), dw1.to(w1.dtype), dw2.to(w2.dtype), None if dg is None else dg.to(gates.dtype),
                None, None, None, None)


def _pair_bytes(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, xf: torch.Tensor) -> int:
    """Bytes of one pair's gathered (W1, W2) over every (batch, head)."""
    return x.shape[0] * x.shape[1] * (w1.shape[-1] * w1.shape[-2] + w2.shape[-1] * w2.shape[-2]) * xf.element_size()
