"""A token-by-token PyTorch twin of fla's `chunk_simple_gla`, for testing the adapter on CPU.

fla's Triton kernels do not run in Triton's CPU interpreter (their loops index with Python
ints), so the CPU tests drive `op.segmented_scan` through this function instead: the same
signature subset, layout ([B, T, H, K], states [N, H, V, K] with `state_v_first`) and
`cu_seqlens` semantics. It is the definition, one token at a time, so it is only for small shapes.
"""

from __future__ import annotations

import torch


def simple_gla(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, scale: float | None = None,
               initial_state: torch.Tensor | None = None, output_final_state: bool = False,
               state_v_first: bool = False, cu_seqlens: torch.Tensor | None = None,
               **_: object) -> tuple[torch.Tensor, torch.Tensor | None]:
    """o_t = scale * S_t q_t, S_t = exp(g_t) S_{t-1} + v_t k_t^T, per sequence (fla's definition)."""
    assert state_v_first, "the adapter always asks for [V, K] states"
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    batch, length = q.shape[:2]
    if cu_seqlens is None:
        spans = [(b, 0, length) for b in range(batch)]
    else:
        assert batch == 1
        cuts = [int(c) for c in cu_seqlens]
        spans = [(0, a, b) for a, b in zip(cuts[:-1], cuts[1:])]
    acc = torch.promote_types(q.dtype, torch.float32)  # fla accumulates in fp32 (fp64 for fp64 tests)
    out = torch.zeros_like(v)
    finals = []
    for n, (b, start, end) in enumerate(spans):
        state = q.new_zeros(q.shape[2], v.shape[-1], k.shape[-1], dtype=acc)
        if initial_state is not None:
            state = initial_state[n].to(acc)
        for t in range(start, end):
            write = v[b, t].to(acc)[:, :, None] * k[b, t].to(acc)[:, None, :]
            state = g[b, t].to(acc).exp()[:, None, None] * state + write
            out[b, t] = (scale * torch.einsum("hvk,hk->hv", state, q[b, t].to(acc))).to(out.dtype)
        finals.append(state)
    return out, (torch.stack(finals) if output_final_state else None)
