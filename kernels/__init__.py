"""Memory Caching read-path ops: a PyTorch reference and Triton kernels per op.

Three ops, each `out (B, H, L, d_out)` for queries of a sequence of L tokens cut into segments
by `bounds = [0, b1, ..., L]` (a list, tuple or 1-D integer tensor; constant and log
segmentation alike). seg(t) is the segment of token t; a token reads the cached (finished)
segments i < seg(t), never its own. States are indexed by segment, N >= n_segments - 1 of them
(today's `MatrixMemory.scan` returns one per segment, N = n_segments; the last is never read).

gated_cached_read(q, states, gates, bounds) -> (B, H, L, d_out)
    out[t] = sum_{i < seg(t)} gates[t, i] * (S_i q_t)
    q:      (B, H, L, d_in)              read keys
    states: (B, H, N, d_out, d_in)       S_i, the matrix memory at the end of segment i
    gates:  (B, H, L, N) or None         entries with i >= seg(t) are ignored (any value, -inf
                                         is fine); None means residual (every gate 1)
    grm and (matrix) soup pass the softmax gates of the cached segments, gates[..., 1:] of
    today's caching.py; soup on an MLP memory is two of these reads, one per layer.

ssc_cached_read(q, states, indices, gates, bounds) -> (B, H, L, d_out)
    out[t] = sum_j gates[t, j] * (S_{indices[t, j]} q_t), over slots j < seg(t) with
             0 <= indices[t, j] < seg(t)
    indices: (B, H, L, K) integer         the selected segments (torch.topk's indices); a slot
                                          with -1, an index >= seg(t), or a position j >= seg(t)
                                          contributes nothing and gets a zero gradient (a token
                                          has only seg(t) readable segments, and topk over logits
                                          with the unreadable ones at -inf puts them first)
    gates:   (B, H, L, K)                 the gate of each slot

mlp_cached_read(z, w1, w2, gates, bounds, *, indices=None, activation="silu", form="plain",
                gain=None) -> (B, H, L, d_out)
    out[t] = sum_{i < seg(t)} w_i[t] * M_i(z_t), with w_i[t] = gates[t, i] (dense, or 1 when gates
    is None) or the gates of the slots choosing i (indices given, SSC);
    M_i(z) = W2_i act(W1_i z)                  form="plain" (today's MLPMemory)
    M_i(z) = z + gain * LN(W2_i act(W1_i z))   form="residual" (the paper's deep memory, as
                                               scaling.models.memory.MLPMemory: LN without affine
                                               part on each segment's output; gain = 1 + gamma,
                                               broadcastable to the output, default 1)
    z:  (B, H, L, d_in);  w1: (B, H, N, F, d_in);  w2: (B, H, N, d_out, F);  activation: silu | gelu

Every op: fp32, bf16 (or fp16) inputs with fp32 accumulation, output in the input dtype, and
gradients for q/z, the states/weights and the gates (not for indices). Under autocast the float
inputs enter the kernels in the autocast dtype, the output keeps q's (z's) dtype and each gradient
its input's (INTEGRATION.md, "Dtype policy"). Keyword arguments
`backend="reference"|"triton"` force a backend (default: `MCSCALE_KERNELS`, else Triton on
CUDA and the reference elsewhere); `block_tokens` (and `block_hidden` for the MLP) tune the
Triton tiles. `kernel_backend(device)` tells which backend a device gets.

The matrix memories' base scan itself (linear, SWLA, dla-matrix: reads and each segment's final
state) runs on flash-linear-attention's `chunk_simple_gla` on CUDA through `matrix_scan/` (an
adapter, with a token-by-token twin of fla's function for the CPU tests); elsewhere
`scaling.models.memory` runs its PyTorch chunked scan.

Layout (flash-linear-attention style): `matrix_read/` and `mlp_read/` each hold
`reference.py` (PyTorch, a loop over segments - for SSC over blocks of the static (token, slot)
pairs - with bounded memory, recomputing in backward),
`kernel.py` (Triton forward and backward), `function.py` (the autograd.Function) and `op.py`
(validation and dispatch); `common/` holds what they share. See INTEGRATION.md.
"""

from kernels.common.dispatch import backend_for as kernel_backend
from kernels.matrix_read.op import gated_cached_read, ssc_cached_read
from kernels.mlp_read.op import mlp_cached_read

__all__ = ["gated_cached_read", "ssc_cached_read", "mlp_cached_read", "kernel_backend"]
