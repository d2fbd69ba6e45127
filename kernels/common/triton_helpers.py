"""Triton building blocks shared by the cached-read kernels (imported only for the Triton backend).

Every kernel walks cached segments i for a block of tokens (or token blocks for one segment)
and needs the weight w_i[t] each token gives segment i:

* dense (grm, soup, residual): g[t, i] (or 1 without gates) where i < seg(t), else 0;
* sparse (ssc): sum_j g[t, j] [idx[t, j] == i] over the token's K slots, where i < seg(t).

`segment_weight` returns (w, match, count); `count` is how many (token, slot) pairs of the
block select segment i, so SSC kernels skip segments no token of the block chose, and a state
is loaded at most once per token block.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def load_slots(idx_ptr, gate_ptr, bh, t, t_mask, seg_t, L, K, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr,
               SPARSE: tl.constexpr):
    """SSC slot indices (int32, -1 where empty) and gates (fp32) of a token block; zeros if dense.

    Slots j >= seg(t) are empty by the op's contract (a token has only seg(t) readable segments,
    and topk puts them first), so they are not even loaded.
    """
    if SPARSE:
        rk = tl.arange(0, BLOCK_K)
        mask = t_mask[:, None] & (rk < K)[None, :] & (rk[None, :] < seg_t[:, None])
        offs = bh * L * K + t[:, None] * K + rk[None, :]
        idx = tl.load(idx_ptr + offs, mask=mask, other=-1)
        gate = tl.load(gate_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        idx = tl.zeros((BLOCK_T, BLOCK_K), dtype=tl.int32)
        gate = tl.zeros((BLOCK_T, BLOCK_K), dtype=tl.float32)
    return idx, gate


@triton.jit
def segment_weight(i, bh, t, t_mask, seg_t, gate_ptr, L, N, idx_tile, gate_tile,
                   SPARSE: tl.constexpr, HAS_GATES: tl.constexpr):
    """(w (T,) fp32, match (T, K) bool, count) of segment i for the token block `t`."""
    live = t_mask & (seg_t > i)
    if SPARSE:
        match = (idx_tile == i) & live[:, None]
        w = tl.sum(tl.where(match, gate_tile, 0.0), axis=1)
    else:
        match = (idx_tile == 0) & live[:, None]  # unused by dense callers; keeps one return type
        if HAS_GATES:
            w = tl.load(gate_ptr + bh * L * N + t * N + i, mask=live, other=0.0).to(tl.float32)
        else:
            w = live.to(tl.float32)
    count = tl.sum(tl.sum(match.to(tl.int32), axis=1), axis=0)
    return w, match, count


@triton.jit
def mm(a, b, COMPUTE: tl.constexpr, PRECISION: tl.constexpr):
    """a @ b with operands in COMPUTE (the input dtype on GPUs) and fp32 accumulation.

    Rule for every caller: tl.trans applies only to a tile exactly as it was loaded, never to a
    computed one. tl.trans of a dot result (or anything derived from one) fed to another dot is
    the pattern behind wrong Hopper gradients with Triton 3.4-3.7.0 (flash-linear-attention issue
    640, fixed in Triton 3.7.1); a needed transpose of a product is computed as its own product
    from the transposed loaded operands ((AB)^T = B^T A^T). tests/kernels/test_transpose_rule.py
    checks this on the kernels' source. (A transposed view of a loaded tile costs nothing; a second
    load with swapped strides costs shared memory: measured offline for sm_90, it took the fp32
    d = 128 MLP dW kernel over the 227 KiB limit.)
    """
    return tl.dot(a.to(COMPUTE), b.to(COMPUTE), input_precision=PRECISION, out_dtype=tl.float32)


@triton.jit
def act_fwd(h, ACT: tl.constexpr):
    if ACT == "silu":
        out = h * tl.sigmoid(h)
    else:  # gelu (erf form, as torch.nn.functional.gelu)
        out = 0.5 * h * (1.0 + tl.erf(h * 0.7071067811865476))
    return out


@triton.jit
def act_grad(h, ACT: tl.constexpr):
    if ACT == "silu":
        s = tl.sigmoid(h)
        out = s * (1.0 + h * (1.0 - s))
    else:
        out = 0.5 * (1.0 + tl.erf(h * 0.7071067811865476)) + h * tl.exp(-0.5 * h * h) * 0.3989422804014327
    return out


@triton.jit
def token_block(seg_ptr, idx_ptr, gate_ptr, L, N, K, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr,
                SPARSE: tl.constexpr):
    """This program's token block: (bh, t, mask, seg(t), segments any token reads, slot indices, slot gates)."""
    bh = tl.program_id(1).to(tl.int64)
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    t_mask = t < L
    seg_t = tl.load(seg_ptr + t, mask=t_mask, other=0)
    idx_tile, gate_tile = load_slots(idx_ptr, gate_ptr, bh, t, t_mask, seg_t, L, K, BLOCK_T, BLOCK_K, SPARSE)
    return bh, t, t_mask, seg_t, tl.minimum(tl.max(seg_t, axis=0), N), idx_tile, gate_tile


@triton.jit
def readers_block(t0, i, bh, seg_ptr, idx_ptr, gate_ptr, L, N, K, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr,
                  SPARSE: tl.constexpr, HAS_GATES: tl.constexpr):
    """Tokens t0.. of a per-segment program: (t, mask, w_i[t], how many of them read segment i)."""
    t = t0 + tl.arange(0, BLOCK_T)
    t_mask = t < L
    seg_t = tl.load(seg_ptr + t, mask=t_mask, other=0)
    idx_tile, gate_tile = load_slots(idx_ptr, gate_ptr, bh, t, t_mask, seg_t, L, K, BLOCK_T, BLOCK_K, SPARSE)
    w, match, count = segment_weight(i, bh, t, t_mask, seg_t, gate_ptr, L, N, idx_tile, gate_tile, SPARSE, HAS_GATES)
    return t, t_mask, w, count


@triton.jit
def load_rows(ptr, bh, t, t_mask, L, D: tl.constexpr, BLOCK_D: tl.constexpr):
    """The (BLOCK_T, BLOCK_D) rows t of a contiguous (B*H, L, D) tensor, zero-padded."""
    rd = tl.arange(0, BLOCK_D)
    return tl.load(ptr + bh * L * D + t[:, None] * D + rd[None, :], mask=t_mask[:, None] & (rd < D)[None, :],
                   other=0.0)


@triton.jit
def store_rows(ptr, value, bh, t, t_mask, L, D: tl.constexpr, BLOCK_D: tl.constexpr):
    rd = tl.arange(0, BLOCK_D)
    tl.store(ptr + bh * L * D + t[:, None] * D + rd[None, :], value.to(ptr.dtype.element_ty),
             mask=t_mask[:, None] & (rd < D)[None, :])


@triton.jit
def gate_grad(dg_ptr, dg_slots, r, match, i, bh, t, t_mask, seg_t, L, N, SPARSE: tl.constexpr):
    """Record d loss / d w_i[t] = r: dense gates are stored at (t, i) now, SSC slots accumulate."""
    if SPARSE:
        dg_slots += tl.where(match, r[:, None], 0.0)
    else:
        tl.store(dg_ptr + bh * L * N + t * N + i, r.to(dg_ptr.dtype.element_ty), mask=t_mask & (seg_t > i))
    return dg_slots


@triton.jit
def store_slot_grads(dg_ptr, dg_slots, bh, t, t_mask, L, K, BLOCK_K: tl.constexpr, SPARSE: tl.constexpr):
    """Write the accumulated SSC slot-gate gradients of a token block (nothing for dense gates)."""
    if SPARSE:
        rk = tl.arange(0, BLOCK_K)
        tl.store(dg_ptr + bh * L * K + t[:, None] * K + rk[None, :], dg_slots.to(dg_ptr.dtype.element_ty),
                 mask=t_mask[:, None] & (rk < K)[None, :])


@triton.jit
def layer_norm_rows(o, D: tl.constexpr, BLOCK_D: tl.constexpr):
    """(LN(o) over the first D columns without affine part, 1 / std) of rows o (T, BLOCK_D) fp32;
    padded columns of o are zero and stay zero in LN(o)."""
    cols = (tl.arange(0, BLOCK_D) < D)[None, :]
    mean = tl.sum(o, axis=1) / D
    centred = tl.where(cols, o - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / D + 1e-5)
    return centred * rstd[:, None], rstd


@triton.jit
def layer_norm_rows_grad(n, rstd, grad_n, D: tl.constexpr, BLOCK_D: tl.constexpr):
    """d loss / d o from d loss / d LN(o) (rows, fp32), zero on the padded columns."""
    cols = (tl.arange(0, BLOCK_D) < D)[None, :]
    mean_g = tl.sum(grad_n, axis=1) / D
    mean_gn = tl.sum(grad_n * n, axis=1) / D
    return tl.where(cols, rstd[:, None] * (grad_n - mean_g[:, None] - n * mean_gn[:, None]), 0.0)
