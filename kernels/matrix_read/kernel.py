"""Triton kernels of the matrix-memory cached read (forward, dq/dgates, dstates).

Grids and ownership, per (batch x head) bh:
* forward and dq/dg: one program per block of BLOCK_T tokens; it walks the cached segments
  i < max seg(t) in the block and loads each state S_i once (SSC: only if a token of the
  block selected it), so no (tile, segment) or (token, slot) copy of a state exists.
* dS: one program per cached segment, which owns dS_i and walks the token blocks that read
  it (t >= bounds[i + 1]): the state gradient is accumulated without atomics.
States are (B, H, N, D_OUT, D_IN); a read is S_i q_t (q @ S_i^T for a block of tokens).
"""

from __future__ import annotations

import triton
import triton.language as tl

from kernels.common.triton_helpers import (gate_grad, load_rows, mm, readers_block, segment_weight,
                                           store_rows, store_slot_grads, token_block)


@triton.jit
def load_state(s_ptr, bh, i, N, D_IN: tl.constexpr, D_OUT: tl.constexpr, BLOCK_I: tl.constexpr,
               BLOCK_O: tl.constexpr):
    """S_i of bh as a zero-padded (BLOCK_O, BLOCK_I) tile."""
    ri = tl.arange(0, BLOCK_I)
    ro = tl.arange(0, BLOCK_O)
    return tl.load(s_ptr + (bh * N + i) * D_OUT * D_IN + ro[:, None] * D_IN + ri[None, :],
                   mask=(ro < D_OUT)[:, None] & (ri < D_IN)[None, :], other=0.0)


@triton.jit
def matrix_fwd_kernel(q_ptr, s_ptr, g_ptr, idx_ptr, seg_ptr, out_ptr, L, N, K,
                      D_IN: tl.constexpr, D_OUT: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_I: tl.constexpr,
                      BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr, SPARSE: tl.constexpr,
                      HAS_GATES: tl.constexpr, COMPUTE: tl.constexpr, PRECISION: tl.constexpr):
    bh, t, t_mask, seg_t, n_hi, idx_tile, gate_tile = token_block(seg_ptr, idx_ptr, g_ptr, L, N, K, BLOCK_T,
                                                                  BLOCK_K, SPARSE)
    q = load_rows(q_ptr, bh, t, t_mask, L, D_IN, BLOCK_I)
    acc = tl.zeros((BLOCK_T, BLOCK_O), dtype=tl.float32)
    for i in range(0, n_hi):
        w, match, count = segment_weight(i, bh, t, t_mask, seg_t, g_ptr, L, N, idx_tile, gate_tile,
                                         SPARSE, HAS_GATES)
        if count > 0:
            s = load_state(s_ptr, bh, i, N, D_IN, D_OUT, BLOCK_I, BLOCK_O)
            acc += w[:, None] * mm(q, tl.trans(s), COMPUTE, PRECISION)
    store_rows(out_ptr, acc, bh, t, t_mask, L, D_OUT, BLOCK_O)


@triton.jit
def matrix_bwd_tokens_kernel(q_ptr, s_ptr, g_ptr, idx_ptr, seg_ptr, do_ptr, dq_ptr, dg_ptr, L, N, K,
                             D_IN: tl.constexpr, D_OUT: tl.constexpr, BLOCK_T: tl.constexpr,
                             BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr,
                             SPARSE: tl.constexpr, HAS_GATES: tl.constexpr, COMPUTE: tl.constexpr,
                             PRECISION: tl.constexpr):
    """dq[t] = sum_i w_i[t] S_i^T do[t]; dgates from <do[t], S_i q_t>."""
    bh, t, t_mask, seg_t, n_hi, idx_tile, gate_tile = token_block(seg_ptr, idx_ptr, g_ptr, L, N, K, BLOCK_T,
                                                                  BLOCK_K, SPARSE)
    q = load_rows(q_ptr, bh, t, t_mask, L, D_IN, BLOCK_I)
    do = load_rows(do_ptr, bh, t, t_mask, L, D_OUT, BLOCK_O)
    dq = tl.zeros((BLOCK_T, BLOCK_I), dtype=tl.float32)
    dg_slots = tl.zeros((BLOCK_T, BLOCK_K), dtype=tl.float32)
    for i in range(0, n_hi):
        w, match, count = segment_weight(i, bh, t, t_mask, seg_t, g_ptr, L, N, idx_tile, gate_tile,
                                         SPARSE, HAS_GATES)
        if count > 0:
            s = load_state(s_ptr, bh, i, N, D_IN, D_OUT, BLOCK_I, BLOCK_O)
            dq += w[:, None] * mm(do, s, COMPUTE, PRECISION)
            if HAS_GATES:
                r = tl.sum(mm(q, tl.trans(s), COMPUTE, PRECISION) * do.to(tl.float32), axis=1)
                dg_slots = gate_grad(dg_ptr, dg_slots, r, match, i, bh, t, t_mask, seg_t, L, N, SPARSE)
    store_rows(dq_ptr, dq, bh, t, t_mask, L, D_IN, BLOCK_I)
    store_slot_grads(dg_ptr, dg_slots, bh, t, t_mask, L, K, BLOCK_K, SPARSE)


@triton.jit
def matrix_bwd_states_kernel(q_ptr, g_ptr, idx_ptr, seg_ptr, bounds_ptr, do_ptr, ds_ptr, L, N, K,
                             D_IN: tl.constexpr, D_OUT: tl.constexpr, BLOCK_T: tl.constexpr,
                             BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr,
                             SPARSE: tl.constexpr, HAS_GATES: tl.constexpr, COMPUTE: tl.constexpr,
                             PRECISION: tl.constexpr):
    """dS_i = sum_{t >= bounds[i+1]} w_i[t] do[t] q_t^T, one program per (segment, bh)."""
    i = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    start = tl.load(bounds_ptr + i + 1)
    acc = tl.zeros((BLOCK_O, BLOCK_I), dtype=tl.float32)
    for t0 in range(start, L, BLOCK_T):
        t, t_mask, w, count = readers_block(t0, i, bh, seg_ptr, idx_ptr, g_ptr, L, N, K, BLOCK_T, BLOCK_K, SPARSE,
                                            HAS_GATES)
        if count > 0:
            q = load_rows(q_ptr, bh, t, t_mask, L, D_IN, BLOCK_I)
            do = load_rows(do_ptr, bh, t, t_mask, L, D_OUT, BLOCK_O)
            acc += mm(w[None, :] * tl.trans(do).to(tl.float32), q, COMPUTE, PRECISION)  # (w do)^T q
    ri = tl.arange(0, BLOCK_I)
    ro = tl.arange(0, BLOCK_O)
    tl.store(ds_ptr + (bh * N + i) * D_OUT * D_IN + ro[:, None] * D_IN + ri[None, :], acc.to(ds_ptr.dtype.element_ty),
             mask=(ro < D_OUT)[:, None] & (ri < D_IN)[None, :])
