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

from kernels.common.triton_helpers import load_slots, mm, segment_weight


@triton.jit
def matrix_fwd_kernel(q_ptr, s_ptr, g_ptr, idx_ptr, seg_ptr, out_ptr, L, N, K,
                      D_IN: tl.constexpr, D_OUT: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_I: tl.constexpr,
                      BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr, SPARSE: tl.constexpr,
                      HAS_GATES: tl.constexpr, COMPUTE: tl.constexpr, PRECISION: tl.constexpr):
    bh = tl.program_id(1).to(tl.int64)
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    t_mask = t < L
    ri = tl.arange(0, BLOCK_I)
    ro = tl.arange(0, BLOCK_O)
    q = tl.load(q_ptr + bh * L * D_IN + t[:, None] * D_IN + ri[None, :],
                mask=t_mask[:, None] & (ri < D_IN)[None, :], other=0.0)
    seg_t = tl.load(seg_ptr + t, mask=t_mask, other=0)
    n_hi = tl.minimum(tl.max(seg_t, axis=0), N)
    idx_tile, gate_tile = load_slots(idx_ptr, g_ptr, bh, t, t_mask, L, K, BLOCK_T, BLOCK_K, SPARSE)
    st_offs = ri[:, None] + ro[None, :] * D_IN  # S_i^T as a (D_IN, D_OUT) tile
    st_mask = (ri < D_IN)[:, None] & (ro < D_OUT)[None, :]
    acc = tl.zeros((BLOCK_T, BLOCK_O), dtype=tl.float32)
    for i in range(0, n_hi):
        w, match, count = segment_weight(i, bh, t, t_mask, seg_t, g_ptr, L, N, idx_tile, gate_tile,
                                         SPARSE, HAS_GATES)
        if count > 0:
            st = tl.load(s_ptr + (bh * N + i) * D_OUT * D_IN + st_offs, mask=st_mask, other=0.0)
            acc += w[:, None] * mm(q, st, COMPUTE, PRECISION)
    tl.store(out_ptr + bh * L * D_OUT + t[:, None] * D_OUT + ro[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=t_mask[:, None] & (ro < D_OUT)[None, :])


@triton.jit
def matrix_bwd_tokens_kernel(q_ptr, s_ptr, g_ptr, idx_ptr, seg_ptr, do_ptr, dq_ptr, dg_ptr, L, N, K,
                             D_IN: tl.constexpr, D_OUT: tl.constexpr, BLOCK_T: tl.constexpr,
                             BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr,
                             SPARSE: tl.constexpr, HAS_GATES: tl.constexpr, COMPUTE: tl.constexpr,
                             PRECISION: tl.constexpr):
    """dq[t] = sum_i w_i[t] S_i^T do[t]; dgates from <do[t], S_i q_t>."""
    bh = tl.program_id(1).to(tl.int64)
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    t_mask = t < L
    ri = tl.arange(0, BLOCK_I)
    ro = tl.arange(0, BLOCK_O)
    i_mask = t_mask[:, None] & (ri < D_IN)[None, :]
    o_mask = t_mask[:, None] & (ro < D_OUT)[None, :]
    q = tl.load(q_ptr + bh * L * D_IN + t[:, None] * D_IN + ri[None, :], mask=i_mask, other=0.0)
    do = tl.load(do_ptr + bh * L * D_OUT + t[:, None] * D_OUT + ro[None, :], mask=o_mask, other=0.0)
    seg_t = tl.load(seg_ptr + t, mask=t_mask, other=0)
    n_hi = tl.minimum(tl.max(seg_t, axis=0), N)
    idx_tile, gate_tile = load_slots(idx_ptr, g_ptr, bh, t, t_mask, L, K, BLOCK_T, BLOCK_K, SPARSE)
    s_offs = ro[:, None] * D_IN + ri[None, :]  # S_i as a (D_OUT, D_IN) tile
    s_mask = (ro < D_OUT)[:, None] & (ri < D_IN)[None, :]
    dq = tl.zeros((BLOCK_T, BLOCK_I), dtype=tl.float32)
    dg_slots = tl.zeros((BLOCK_T, BLOCK_K), dtype=tl.float32)
    for i in range(0, n_hi):
        w, match, count = segment_weight(i, bh, t, t_mask, seg_t, g_ptr, L, N, idx_tile, gate_tile,
                                         SPARSE, HAS_GATES)
        if count > 0:
            s = tl.load(s_ptr + (bh * N + i) * D_OUT * D_IN + s_offs, mask=s_mask, other=0.0)
            dq += w[:, None] * mm(do, s, COMPUTE, PRECISION)
            if HAS_GATES:
                read = mm(q, tl.trans(s), COMPUTE, PRECISION)
                r = tl.sum(read * do.to(tl.float32), axis=1)
                if SPARSE:
                    dg_slots += tl.where(match, r[:, None], 0.0)
                else:
                    tl.store(dg_ptr + bh * L * N + t * N + i, r.to(dg_ptr.dtype.element_ty),
                             mask=t_mask & (seg_t > i))
    tl.store(dq_ptr + bh * L * D_IN + t[:, None] * D_IN + ri[None, :], dq.to(dq_ptr.dtype.element_ty), mask=i_mask)
    if SPARSE:
        rk = tl.arange(0, BLOCK_K)
        tl.store(dg_ptr + bh * L * K + t[:, None] * K + rk[None, :], dg_slots.to(dg_ptr.dtype.element_ty),
                 mask=t_mask[:, None] & (rk < K)[None, :])


@triton.jit
def matrix_bwd_states_kernel(q_ptr, g_ptr, idx_ptr, seg_ptr, bounds_ptr, do_ptr, ds_ptr, L, N, K,
                             D_IN: tl.constexpr, D_OUT: tl.constexpr, BLOCK_T: tl.constexpr,
                             BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr,
                             SPARSE: tl.constexpr, HAS_GATES: tl.constexpr, COMPUTE: tl.constexpr,
                             PRECISION: tl.constexpr):
    """dS_i = sum_{t >= bounds[i+1]} w_i[t] do[t] q_t^T, one program per (segment, bh)."""
    i = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    ri = tl.arange(0, BLOCK_I)
    ro = tl.arange(0, BLOCK_O)
    start = tl.load(bounds_ptr + i + 1)
    acc = tl.zeros((BLOCK_O, BLOCK_I), dtype=tl.float32)
    for t0 in range(start, L, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        t_mask = t < L
        seg_t = tl.load(seg_ptr + t, mask=t_mask, other=0)
        idx_tile, gate_tile = load_slots(idx_ptr, g_ptr, bh, t, t_mask, L, K, BLOCK_T, BLOCK_K, SPARSE)
        w, match, count = segment_weight(i, bh, t, t_mask, seg_t, g_ptr, L, N, idx_tile, gate_tile,
                                         SPARSE, HAS_GATES)
        if count > 0:
            q = tl.load(q_ptr + bh * L * D_IN + t[:, None] * D_IN + ri[None, :],
                        mask=t_mask[:, None] & (ri < D_IN)[None, :], other=0.0)
            do = tl.load(do_ptr + bh * L * D_OUT + t[:, None] * D_OUT + ro[None, :],
                         mask=t_mask[:, None] & (ro < D_OUT)[None, :], other=0.0)
            acc += mm(tl.trans(w[:, None] * do.to(tl.float32)), q, COMPUTE, PRECISION)
    tl.store(ds_ptr + (bh * N + i) * D_OUT * D_IN + ro[:, None] * D_IN + ri[None, :], acc.to(ds_ptr.dtype.element_ty),
             mask=(ro < D_OUT)[:, None] & (ri < D_IN)[None, :])
