"""Triton kernels of the MLP-memory cached read (forward, dx/dgates, dW1/dW2).

Per (batch x head) bh and cached segment i the read is o_i = W2_i act(W1_i x), W1_i: (F, D_IN),
W2_i: (D_OUT, F), or LN(o_i) with NORM (the paper's deep memory normalises each segment's output;
the op adds z and applies the shared gain outside). A norm needs the whole o_i of a token, so with
NORM every kernel first accumulates o_i over all hidden slices (`segment_output`), and the
backward turns w do into e = d loss / d o_i through the norm before the slice loop.
The hidden width F is walked in BLOCK_F slices so one program never holds a
whole (F x d) matrix: a slice of W1_i and the matching slice of W2_i give that slice's share of
the read, and the backward recomputes the hidden activations instead of storing them.
* forward and dx/dg: one program per token block, looping segments (and F slices);
* dW: one program per (segment, F slice), which owns dW1_i[slice, :] and dW2_i[:, slice]
  and walks the token blocks that read segment i - no atomics.
"""

from __future__ import annotations

import triton
import triton.language as tl

from kernels.common.triton_helpers import (act_fwd, act_grad, gate_grad, layer_norm_rows, layer_norm_rows_grad,
                                           load_rows, mm, readers_block, segment_weight, store_rows,
                                           store_slot_grads, token_block)


@triton.jit
def slice_offsets(bh, i, rf, N, D_IN: tl.constexpr, D_OUT: tl.constexpr, F: tl.constexpr, BLOCK_I: tl.constexpr,
                  BLOCK_O: tl.constexpr):
    """Offsets and masks of the hidden slice rf: W1_i[rf, :] as (BF, I) and W2_i[:, rf] as (O, BF)."""
    ri = tl.arange(0, BLOCK_I)
    ro = tl.arange(0, BLOCK_O)
    w1_offs = (bh * N + i) * F * D_IN + rf[:, None] * D_IN + ri[None, :]
    w2_offs = (bh * N + i) * D_OUT * F + ro[:, None] * F + rf[None, :]
    return (w1_offs, (rf < F)[:, None] & (ri < D_IN)[None, :], w2_offs, (ro < D_OUT)[:, None] & (rf < F)[None, :])


@triton.jit
def load_slice(w1_ptr, w2_ptr, bh, i, rf, N, D_IN: tl.constexpr, D_OUT: tl.constexpr, F: tl.constexpr,
               BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr):
    w1_offs, w1_mask, w2_offs, w2_mask = slice_offsets(bh, i, rf, N, D_IN, D_OUT, F, BLOCK_I, BLOCK_O)
    return tl.load(w1_ptr + w1_offs, mask=w1_mask, other=0.0), tl.load(w2_ptr + w2_offs, mask=w2_mask, other=0.0)


@triton.jit
def segment_output(x, w1_ptr, w2_ptr, bh, i, N, D_IN: tl.constexpr, D_OUT: tl.constexpr, F: tl.constexpr,
                   BLOCK_T: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_F: tl.constexpr,
                   ACT: tl.constexpr, COMPUTE: tl.constexpr, PRECISION: tl.constexpr):
    """o_i = W2_i act(W1_i x) for a token block (T, BLOCK_O) fp32, walking the hidden slices."""
    o = tl.zeros((BLOCK_T, BLOCK_O), dtype=tl.float32)
    for f0 in range(0, F, BLOCK_F):
        w1, w2 = load_slice(w1_ptr, w2_ptr, bh, i, f0 + tl.arange(0, BLOCK_F), N, D_IN, D_OUT, F, BLOCK_I, BLOCK_O)
        o += mm(act_fwd(mm(x, tl.trans(w1), COMPUTE, PRECISION), ACT), tl.trans(w2), COMPUTE, PRECISION)
    return o


@triton.jit
def output_error(x, do, w, w1_ptr, w2_ptr, bh, i, N, D_IN: tl.constexpr, D_OUT: tl.constexpr, F: tl.constexpr,
                 BLOCK_T: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_F: tl.constexpr,
                 ACT: tl.constexpr, NORM: tl.constexpr, COMPUTE: tl.constexpr, PRECISION: tl.constexpr):
    """(e, scale, r): e * scale[:, None] = d loss / d o_i, and r = <do, LN(o_i)> (NORM; else 0).

    Without NORM, e = do and scale = w, so the slice loop applies the weight where it used to;
    with NORM the weight sits inside the norm's backward, e = LN'(w do) and scale = 1.
    """
    if NORM:
        n, rstd = layer_norm_rows(segment_output(x, w1_ptr, w2_ptr, bh, i, N, D_IN, D_OUT, F, BLOCK_T, BLOCK_I,
                                                 BLOCK_O, BLOCK_F, ACT, COMPUTE, PRECISION), D_OUT, BLOCK_O)
        do32 = do.to(tl.float32)
        e = layer_norm_rows_grad(n, rstd, w[:, None] * do32, D_OUT, BLOCK_O)
        scale = tl.full((BLOCK_T,), 1.0, tl.float32)
        r = tl.sum(do32 * n, axis=1)
    else:
        e = do.to(tl.float32)
        scale = w
        r = tl.zeros((BLOCK_T,), dtype=tl.float32)
    return e, scale, r


@triton.jit
def mlp_fwd_kernel(x_ptr, w1_ptr, w2_ptr, g_ptr, idx_ptr, seg_ptr, out_ptr, L, N, K,
                   D_IN: tl.constexpr, D_OUT: tl.constexpr, F: tl.constexpr, BLOCK_T: tl.constexpr,
                   BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_K: tl.constexpr,
                   SPARSE: tl.constexpr, HAS_GATES: tl.constexpr, ACT: tl.constexpr, NORM: tl.constexpr,
                   COMPUTE: tl.constexpr, PRECISION: tl.constexpr):
    bh, t, t_mask, seg_t, n_hi, idx_tile, gate_tile = token_block(seg_ptr, idx_ptr, g_ptr, L, N, K, BLOCK_T,
                                                                  BLOCK_K, SPARSE)
    x = load_rows(x_ptr, bh, t, t_mask, L, D_IN, BLOCK_I)
    acc = tl.zeros((BLOCK_T, BLOCK_O), dtype=tl.float32)
    for i in range(0, n_hi):
        w, match, count = segment_weight(i, bh, t, t_mask, seg_t, g_ptr, L, N, idx_tile, gate_tile,
                                         SPARSE, HAS_GATES)
        if count > 0:
            o = segment_output(x, w1_ptr, w2_ptr, bh, i, N, D_IN, D_OUT, F, BLOCK_T, BLOCK_I, BLOCK_O, BLOCK_F,
                               ACT, COMPUTE, PRECISION)
            if NORM:
                o = layer_norm_rows(o, D_OUT, BLOCK_O)[0]
            acc += w[:, None] * o
    store_rows(out_ptr, acc, bh, t, t_mask, L, D_OUT, BLOCK_O)


@triton.jit
def mlp_bwd_tokens_kernel(x_ptr, w1_ptr, w2_ptr, g_ptr, idx_ptr, seg_ptr, do_ptr, dx_ptr, dg_ptr, L, N, K,
                          D_IN: tl.constexpr, D_OUT: tl.constexpr, F: tl.constexpr, BLOCK_T: tl.constexpr,
                          BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_F: tl.constexpr,
                          BLOCK_K: tl.constexpr, SPARSE: tl.constexpr, HAS_GATES: tl.constexpr, ACT: tl.constexpr,
                          NORM: tl.constexpr, COMPUTE: tl.constexpr, PRECISION: tl.constexpr):
    """dx[t] = sum_i W1_i^T (scale W2_i^T e * act'(h)); dgates = <do, o_i> (or <do, LN(o_i)>)."""
    bh, t, t_mask, seg_t, n_hi, idx_tile, gate_tile = token_block(seg_ptr, idx_ptr, g_ptr, L, N, K, BLOCK_T,
                                                                  BLOCK_K, SPARSE)
    x = load_rows(x_ptr, bh, t, t_mask, L, D_IN, BLOCK_I)
    do = load_rows(do_ptr, bh, t, t_mask, L, D_OUT, BLOCK_O)
    dx = tl.zeros((BLOCK_T, BLOCK_I), dtype=tl.float32)
    dg_slots = tl.zeros((BLOCK_T, BLOCK_K), dtype=tl.float32)
    for i in range(0, n_hi):
        w, match, count = segment_weight(i, bh, t, t_mask, seg_t, g_ptr, L, N, idx_tile, gate_tile,
                                         SPARSE, HAS_GATES)
        if count > 0:
            e, scale, r = output_error(x, do, w, w1_ptr, w2_ptr, bh, i, N, D_IN, D_OUT, F, BLOCK_T, BLOCK_I,
                                       BLOCK_O, BLOCK_F, ACT, NORM, COMPUTE, PRECISION)
            for f0 in range(0, F, BLOCK_F):
                w1, w2 = load_slice(w1_ptr, w2_ptr, bh, i, f0 + tl.arange(0, BLOCK_F), N, D_IN, D_OUT, F,
                                    BLOCK_I, BLOCK_O)
                pre = mm(x, tl.trans(w1), COMPUTE, PRECISION)  # (T, BF)
                back = mm(e, w2, COMPUTE, PRECISION)  # W2^T e, (T, BF)
                if HAS_GATES and not NORM:
                    r += tl.sum(act_fwd(pre, ACT) * back, axis=1)
                dx += mm(scale[:, None] * back * act_grad(pre, ACT), w1, COMPUTE, PRECISION)
            if HAS_GATES:
                dg_slots = gate_grad(dg_ptr, dg_slots, r, match, i, bh, t, t_mask, seg_t, L, N, SPARSE)
    store_rows(dx_ptr, dx, bh, t, t_mask, L, D_IN, BLOCK_I)
    store_slot_grads(dg_ptr, dg_slots, bh, t, t_mask, L, K, BLOCK_K, SPARSE)


@triton.jit
def mlp_bwd_weights_kernel(x_ptr, w1_ptr, w2_ptr, g_ptr, idx_ptr, seg_ptr, bounds_ptr, do_ptr, dw1_ptr, dw2_ptr,
                           L, N, K, D_IN: tl.constexpr, D_OUT: tl.constexpr, F: tl.constexpr,
                           BLOCK_T: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr,
                           BLOCK_F: tl.constexpr, BLOCK_K: tl.constexpr, SPARSE: tl.constexpr,
                           HAS_GATES: tl.constexpr, ACT: tl.constexpr, NORM: tl.constexpr, COMPUTE: tl.constexpr,
                           PRECISION: tl.constexpr):
    """dW1_i[f] = sum_t dh[t, f] x_t^T and dW2_i[:, f] = sum_t scale e[t] act(h[t, f]).

    Both are sums over tokens, so they are accumulated transposed, as dW1^T = x^T dh and
    dW2^T = act(h)^T (scale e): x^T is the transpose of the loaded x tile and act(h)^T comes from
    its own product W1 x^T, and the accumulators are stored through transposed offsets. No dot
    result is ever transposed (the Hopper hazard of Triton 3.4-3.7.0; see `mm`). The price is one
    extra (T x D_IN x BLOCK_F) product per token block.
    With NORM each token block first recomputes o_i over every hidden slice (the norm needs all of
    it), so this program's work grows with F / BLOCK_F; it still owns its slice of dW (no atomics).
    """
    n_fb = tl.cdiv(F, BLOCK_F)
    i = tl.program_id(0) // n_fb
    rf = (tl.program_id(0) % n_fb) * BLOCK_F + tl.arange(0, BLOCK_F)
    bh = tl.program_id(1).to(tl.int64)
    w1, w2 = load_slice(w1_ptr, w2_ptr, bh, i, rf, N, D_IN, D_OUT, F, BLOCK_I, BLOCK_O)
    acc1 = tl.zeros((BLOCK_I, BLOCK_F), dtype=tl.float32)  # dW1_i[rf, :]^T
    acc2 = tl.zeros((BLOCK_F, BLOCK_O), dtype=tl.float32)  # dW2_i[:, rf]^T
    start = tl.load(bounds_ptr + i + 1)
    for t0 in range(start, L, BLOCK_T):
        t, t_mask, w, count = readers_block(t0, i, bh, seg_ptr, idx_ptr, g_ptr, L, N, K, BLOCK_T, BLOCK_K, SPARSE,
                                            HAS_GATES)
        if count > 0:
            x = load_rows(x_ptr, bh, t, t_mask, L, D_IN, BLOCK_I)
            x_t = tl.trans(x)  # (I, T): a loaded tile's transpose, not a dot result's
            do = load_rows(do_ptr, bh, t, t_mask, L, D_OUT, BLOCK_O)
            e, scale, r = output_error(x, do, w, w1_ptr, w2_ptr, bh, i, N, D_IN, D_OUT, F, BLOCK_T, BLOCK_I,
                                       BLOCK_O, BLOCK_F, ACT, NORM, COMPUTE, PRECISION)
            pre = mm(x, tl.trans(w1), COMPUTE, PRECISION)  # (T, BF)
            pre_t = mm(w1, x_t, COMPUTE, PRECISION)  # (BF, T): h^T as its own product
            back = mm(e, w2, COMPUTE, PRECISION)  # (T, BF)
            acc1 += mm(x_t, scale[:, None] * back * act_grad(pre, ACT), COMPUTE, PRECISION)
            acc2 += mm(act_fwd(pre_t, ACT), scale[:, None] * e, COMPUTE, PRECISION)
    ri = tl.arange(0, BLOCK_I)
    ro = tl.arange(0, BLOCK_O)
    base = (bh * N + i) * F
    tl.store(dw1_ptr + base * D_IN + rf[None, :] * D_IN + ri[:, None], acc1.to(dw1_ptr.dtype.element_ty),
             mask=(ri < D_IN)[:, None] & (rf < F)[None, :])
    tl.store(dw2_ptr + base * D_OUT + ro[None, :] * F + rf[:, None], acc2.to(dw2_ptr.dtype.element_ty),
             mask=(rf < F)[:, None] & (ro < D_OUT)[None, :])
