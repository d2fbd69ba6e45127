"""Triton kernels of the MLP-memory cached read (forward, dx/dgates, dW1/dW2).

Per (batch x head) bh and cached segment i the memory is W2_i act(W1_i x), W1_i: (F, D_IN),
W2_i: (D_OUT, F). The hidden width F is walked in BLOCK_F slices so one program never holds a
whole (F x d) matrix: a slice of W1_i and the matching slice of W2_i give that slice's share of
the read, and the backward recomputes the hidden activations instead of storing them.
* forward and dx/dg: one program per token block, looping segments (and F slices);
* dW: one program per (segment, F slice), which owns dW1_i[slice, :] and dW2_i[:, slice]
  and walks the token blocks that read segment i - no atomics.
"""

from __future__ import annotations

import triton
import triton.language as tl

from kernels.common.triton_helpers import act_fwd, act_grad, load_slots, mm, segment_weight


@triton.jit
def mlp_fwd_kernel(x_ptr, w1_ptr, w2_ptr, g_ptr, idx_ptr, seg_ptr, out_ptr, L, N, K,
                   D_IN: tl.constexpr, D_OUT: tl.constexpr, F: tl.constexpr, BLOCK_T: tl.constexpr,
                   BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_K: tl.constexpr,
                   SPARSE: tl.constexpr, HAS_GATES: tl.constexpr, ACT: tl.constexpr, COMPUTE: tl.constexpr,
                   PRECISION: tl.constexpr):
    bh = tl.program_id(1).to(tl.int64)
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    t_mask = t < L
    ri = tl.arange(0, BLOCK_I)
    ro = tl.arange(0, BLOCK_O)
    x = tl.load(x_ptr + bh * L * D_IN + t[:, None] * D_IN + ri[None, :],
                mask=t_mask[:, None] & (ri < D_IN)[None, :], other=0.0)
    seg_t = tl.load(seg_ptr + t, mask=t_mask, other=0)
    n_hi = tl.minimum(tl.max(seg_t, axis=0), N)
    idx_tile, gate_tile = load_slots(idx_ptr, g_ptr, bh, t, t_mask, L, K, BLOCK_T, BLOCK_K, SPARSE)
    acc = tl.zeros((BLOCK_T, BLOCK_O), dtype=tl.float32)
    for i in range(0, n_hi):
        w, match, count = segment_weight(i, bh, t, t_mask, seg_t, g_ptr, L, N, idx_tile, gate_tile,
                                         SPARSE, HAS_GATES)
        if count > 0:
            for f0 in range(0, F, BLOCK_F):
                rf = f0 + tl.arange(0, BLOCK_F)
                w1 = tl.load(w1_ptr + (bh * N + i) * F * D_IN + rf[:, None] * D_IN + ri[None, :],
                             mask=(rf < F)[:, None] & (ri < D_IN)[None, :], other=0.0)  # (BF, I)
                w2 = tl.load(w2_ptr + (bh * N + i) * D_OUT * F + ro[:, None] * F + rf[None, :],
                             mask=(ro < D_OUT)[:, None] & (rf < F)[None, :], other=0.0)  # (O, BF)
                hidden = act_fwd(mm(x, tl.trans(w1), COMPUTE, PRECISION), ACT)
                acc += mm(w[:, None] * hidden, tl.trans(w2), COMPUTE, PRECISION)
    tl.store(out_ptr + bh * L * D_OUT + t[:, None] * D_OUT + ro[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=t_mask[:, None] & (ro < D_OUT)[None, :])


@triton.jit
def mlp_bwd_tokens_kernel(x_ptr, w1_ptr, w2_ptr, g_ptr, idx_ptr, seg_ptr, do_ptr, dx_ptr, dg_ptr, L, N, K,
                          D_IN: tl.constexpr, D_OUT: tl.constexpr, F: tl.constexpr, BLOCK_T: tl.constexpr,
                          BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_F: tl.constexpr,
                          BLOCK_K: tl.constexpr, SPARSE: tl.constexpr, HAS_GATES: tl.constexpr, ACT: tl.constexpr,
                          COMPUTE: tl.constexpr, PRECISION: tl.constexpr):
    """dx[t] = sum_i W1_i^T (w_i[t] W2_i^T do[t] * act'(h)); dgates from <act(h), W2_i^T do[t]>."""
    bh = tl.program_id(1).to(tl.int64)
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    t_mask = t < L
    ri = tl.arange(0, BLOCK_I)
    ro = tl.arange(0, BLOCK_O)
    i_mask = t_mask[:, None] & (ri < D_IN)[None, :]
    x = tl.load(x_ptr + bh * L * D_IN + t[:, None] * D_IN + ri[None, :], mask=i_mask, other=0.0)
    do = tl.load(do_ptr + bh * L * D_OUT + t[:, None] * D_OUT + ro[None, :],
                 mask=t_mask[:, None] & (ro < D_OUT)[None, :], other=0.0)
    seg_t = tl.load(seg_ptr + t, mask=t_mask, other=0)
    n_hi = tl.minimum(tl.max(seg_t, axis=0), N)
    idx_tile, gate_tile = load_slots(idx_ptr, g_ptr, bh, t, t_mask, L, K, BLOCK_T, BLOCK_K, SPARSE)
    dx = tl.zeros((BLOCK_T, BLOCK_I), dtype=tl.float32)
    dg_slots = tl.zeros((BLOCK_T, BLOCK_K), dtype=tl.float32)
    for i in range(0, n_hi):
        w, match, count = segment_weight(i, bh, t, t_mask, seg_t, g_ptr, L, N, idx_tile, gate_tile,
                                         SPARSE, HAS_GATES)
        if count > 0:
            r = tl.zeros((BLOCK_T,), dtype=tl.float32)
            for f0 in range(0, F, BLOCK_F):
                rf = f0 + tl.arange(0, BLOCK_F)
                w1 = tl.load(w1_ptr + (bh * N + i) * F * D_IN + rf[:, None] * D_IN + ri[None, :],
                             mask=(rf < F)[:, None] & (ri < D_IN)[None, :], other=0.0)
                w2 = tl.load(w2_ptr + (bh * N + i) * D_OUT * F + ro[:, None] * F + rf[None, :],
                             mask=(ro < D_OUT)[:, None] & (rf < F)[None, :], other=0.0)
                pre = mm(x, tl.trans(w1), COMPUTE, PRECISION)  # (T, BF)
                back = mm(do, w2, COMPUTE, PRECISION)  # W2^T do, (T, BF)
                if HAS_GATES:
                    r += tl.sum(act_fwd(pre, ACT) * back, axis=1)
                dx += mm(w[:, None] * back * act_grad(pre, ACT), w1, COMPUTE, PRECISION)
            if HAS_GATES:
                if SPARSE:
                    dg_slots += tl.where(match, r[:, None], 0.0)
                else:
                    tl.store(dg_ptr + bh * L * N + t * N + i, r.to(dg_ptr.dtype.element_ty),
                             mask=t_mask & (seg_t > i))
    tl.store(dx_ptr + bh * L * D_IN + t[:, None] * D_IN + ri[None, :], dx.to(dx_ptr.dtype.element_ty), mask=i_mask)
    if SPARSE:
        rk = tl.arange(0, BLOCK_K)
        tl.store(dg_ptr + bh * L * K + t[:, None] * K + rk[None, :], dg_slots.to(dg_ptr.dtype.element_ty),
                 mask=t_mask[:, None] & (rk < K)[None, :])


@triton.jit
def mlp_bwd_weights_kernel(x_ptr, w1_ptr, w2_ptr, g_ptr, idx_ptr, seg_ptr, bounds_ptr, do_ptr, dw1_ptr, dw2_ptr,
                           L, N, K, D_IN: tl.constexpr, D_OUT: tl.constexpr, F: tl.constexpr,
                           BLOCK_T: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr,
                           BLOCK_F: tl.constexpr, BLOCK_K: tl.constexpr, SPARSE: tl.constexpr,
                           HAS_GATES: tl.constexpr, ACT: tl.constexpr, COMPUTE: tl.constexpr,
                           PRECISION: tl.constexpr):
    """dW1_i[f] = sum_t dh[t, f] x_t^T and dW2_i[:, f] = sum_t w_i[t] do[t] act(h[t, f])."""
    n_fb = tl.cdiv(F, BLOCK_F)
    i = tl.program_id(0) // n_fb
    rf = (tl.program_id(0) % n_fb) * BLOCK_F + tl.arange(0, BLOCK_F)
    bh = tl.program_id(1).to(tl.int64)
    ri = tl.arange(0, BLOCK_I)
    ro = tl.arange(0, BLOCK_O)
    w1_offs = (bh * N + i) * F * D_IN + rf[:, None] * D_IN + ri[None, :]
    w1_mask = (rf < F)[:, None] & (ri < D_IN)[None, :]
    w2_offs = (bh * N + i) * D_OUT * F + ro[:, None] * F + rf[None, :]
    w2_mask = (ro < D_OUT)[:, None] & (rf < F)[None, :]
    w1 = tl.load(w1_ptr + w1_offs, mask=w1_mask, other=0.0)
    w2 = tl.load(w2_ptr + w2_offs, mask=w2_mask, other=0.0)
    acc1 = tl.zeros((BLOCK_F, BLOCK_I), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_O, BLOCK_F), dtype=tl.float32)
    start = tl.load(bounds_ptr + i + 1)
    for t0 in range(start, L, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        t_mask = t < L
        seg_t = tl.load(seg_ptr + t, mask=t_mask, other=0)
        idx_tile, gate_tile = load_slots(idx_ptr, g_ptr, bh, t, t_mask, L, K, BLOCK_T, BLOCK_K, SPARSE)
        w, match, count = segment_weight(i, bh, t, t_mask, seg_t, g_ptr, L, N, idx_tile, gate_tile,
                                         SPARSE, HAS_GATES)
        if count > 0:
            x = tl.load(x_ptr + bh * L * D_IN + t[:, None] * D_IN + ri[None, :],
                        mask=t_mask[:, None] & (ri < D_IN)[None, :], other=0.0)
            do = tl.load(do_ptr + bh * L * D_OUT + t[:, None] * D_OUT + ro[None, :],
                         mask=t_mask[:, None] & (ro < D_OUT)[None, :], other=0.0)
            pre = mm(x, tl.trans(w1), COMPUTE, PRECISION)
            back = mm(do, w2, COMPUTE, PRECISION)
            grad_pre = w[:, None] * back * act_grad(pre, ACT)
            acc1 += mm(tl.trans(grad_pre), x, COMPUTE, PRECISION)
            acc2 += mm(tl.trans(w[:, None] * do.to(tl.float32)), act_fwd(pre, ACT), COMPUTE, PRECISION)
    tl.store(dw1_ptr + w1_offs, acc1.to(dw1_ptr.dtype.element_ty), mask=w1_mask)
    tl.store(dw2_ptr + w2_offs, acc2.to(dw2_ptr.dtype.element_ty), mask=w2_mask)
