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
def load_slots(idx_ptr, gate_ptr, bh, t, t_mask, L, K, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr,
               SPARSE: tl.constexpr):
    """SSC slot indices (int32, -1 where empty) and gates (fp32) of a token block; zeros if dense."""
    if SPARSE:
        rk = tl.arange(0, BLOCK_K)
        mask = t_mask[:, None] & (rk < K)[None, :]
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
    """a @ b with operands in COMPUTE (the input dtype on GPUs) and fp32 accumulation."""
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
