"""Adapter from mcscale's matrix-memory scan to flash-linear-attention's `chunk_simple_gla`.

Why fla: its chunk kernels are the tested Triton implementation of exactly this recurrence
(gated linear attention with a per-head scalar decay), forward and backward, including the
gradient through a final state; writing and maintaining our own would repeat that work. The
PyTorch chunked scan in `scaling.models.memory` stays the reference on CPU and the meta device.

How the model's quantities map onto one fla call:

* Several write streams per token (SWLA writes the current and the previous token) are separate
  scans with the same queries and decays, because reads and states are linear in the writes:
  S = S_1 + S_2 and o = o_1 + o_2. The streams are stacked on the batch axis of one call.
* The write gate beta scales the values (beta v k^T), and fla's `scale` is 1 (q is unit-norm).
* Every segment is run as its own sequence from a zero state (equal segments as batch rows,
  unequal ones through `cu_seqlens`), so one call returns each segment's final state. For a
  memory that continues across segments the carried part is added back exactly:
  S_s = A_s S_{s-1} + U_s over the N segments (A_s the segment's total decay, U_s its local
  state) and o_t += exp(G_t) S_{s-1} q_t, G_t the decay from the segment start to t.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch

from kernels.common.dispatch import backend_for
from kernels.common.precision import autocast_inputs

ScanFn = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


@lru_cache(maxsize=1)
def _fla_chunk_simple_gla() -> ScanFn | None:
    try:
        from fla.ops.simple_gla import chunk_simple_gla  # imported on CUDA only: fla warns on CPU
    except ImportError as exc:  # pragma: no cover - fla-core is a dependency
        warnings.warn(f"flash-linear-attention (fla-core) is not importable ({exc}); the base scans run "
                      "the PyTorch chunked scan, which is slow on GPUs", stacklevel=3)
        return None
    return chunk_simple_gla


def scan_backend(device: torch.device) -> ScanFn | None:
    """fla's chunk kernel for CUDA tensors when the Triton backend is in use, else None (reference)."""
    if device.type != "cuda" or backend_for(device) != "triton":
        return None
    return _fla_chunk_simple_gla()


@lru_cache(maxsize=64)
def _cu_seqlens(bounds: tuple[int, ...], n_rows: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Start offsets of every (row, segment) sequence in the flattened batch, on the device and the
    host (fla takes the host copy to avoid a device sync); built once per layout."""
    length = bounds[-1]
    cuts = [row * length + b for row in range(n_rows) for b in bounds[:-1]] + [n_rows * length]
    with torch.inference_mode(False):
        host = torch.tensor(cuts, dtype=torch.long)
        return host.to(device), host


def segmented_scan(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, write_gate: torch.Tensor,
                   log_retention: torch.Tensor, bounds: tuple[int, ...], independent: bool,
                   fn: ScanFn) -> tuple[torch.Tensor, torch.Tensor]:
    """(reads (B, H, L, d_v), segment states (B, H, N, d_v, d_k)) of the matrix memory.

    q (B, H, L, d_k); k (B, H, L, W, d_k); v (B, H, L, W, d_v); write_gate (B, H, L, W);
    log_retention (B, H, L) <= 0. `fn` is fla's `chunk_simple_gla` (or its reference twin).
    """
    b, h, length, w, d_k = k.shape
    d_v = v.shape[-1]
    n_seg = len(bounds) - 1
    values = v * write_gate[..., None].to(v.dtype)
    # (W*B, L, H, d): streams stacked on the batch axis, fla's token-major layout.
    qs = q.transpose(1, 2).unsqueeze(0).expand(w, b, length, h, d_k).reshape(w * b, length, h, d_k)
    ks = k.permute(3, 0, 2, 1, 4).reshape(w * b, length, h, d_k)
    vs = values.permute(3, 0, 2, 1, 4).reshape(w * b, length, h, d_v)
    acc = torch.promote_types(q.dtype, torch.float32)  # fp32 sums (fp64 when the model runs in fp64)
    gs = log_retention.to(acc).transpose(1, 2).unsqueeze(0).expand(w, b, length, h).reshape(w * b, length, h)
    # In the autocast dtype, as the cached-read ops take theirs (fla accumulates in fp32 inside).
    qs, ks, vs = autocast_inputs(qs, ks, vs, device_type=q.device.type)
    lengths = {c - a for a, c in zip(bounds[:-1], bounds[1:])}
    kwargs: dict[str, Any] = dict(scale=1.0, output_final_state=True, state_v_first=True)
    if len(lengths) == 1:  # equal segments: each one a batch row
        seg_len = lengths.pop()
        rows = lambda x: x.reshape(w * b * n_seg, seg_len, *x.shape[2:])  # noqa: E731
        out, finals = fn(rows(qs), rows(ks), rows(vs), g=rows(gs), **kwargs)
    else:
        cu, cu_host = _cu_seqlens(bounds, w * b, q.device)
        flat = lambda x: x.reshape(1, w * b * length, *x.shape[2:])  # noqa: E731
        out, finals = fn(flat(qs), flat(ks), flat(vs), g=flat(gs), cu_seqlens=cu, cu_seqlens_cpu=cu_host, **kwargs)
    reads = out.reshape(w, b, length, h, d_v).sum(0).transpose(1, 2)  # (B, H, L, d_v)
    local = finals.reshape(w, b, n_seg, h, d_v, d_k).sum(0).transpose(1, 2).to(acc)  # (B, H, N, d_v, d_k)
    if independent or n_seg == 1:
        return reads.to(q.dtype), local
    return _carry_across_segments(reads, local, q, log_retention, bounds)


def _carry_across_segments(reads: torch.Tensor, local: torch.Tensor, q: torch.Tensor, log_retention: torch.Tensor,
                           bounds: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Add what the memory carries from earlier segments: S_s = A_s S_{s-1} + U_s and
    o_t += exp(G_t) S_{s-1} q_t.

    The N-step recurrence runs on (d_v x d_k) states, every input `unbind`/`split` once, so each
    step costs the same in backward (slicing a full tensor per step would allocate a full-size
    gradient per step: quadratic in N).
    """
    lengths = [c - a for a, c in zip(bounds[:-1], bounds[1:])]
    decay = [part.cumsum(-1) for part in log_retention.to(local.dtype).split(lengths, dim=2)]  # G_t per segment
    carried = torch.zeros_like(local[:, :, 0])
    before: list[torch.Tensor] = []  # S_{s-1} for every segment s
    states: list[torch.Tensor] = []
    for g_seg, u_seg in zip(decay, local.unbind(2)):
        before.append(carried)
        carried = g_seg[:, :, -1, None, None].exp() * carried + u_seg
        states.append(carried)
    if len(set(lengths)) == 1:  # equal segments: one batched matmul for every segment's carried read
        b, h, length, d_k = q.shape
        qs = q.reshape(b, h, len(lengths), lengths[0], d_k).to(carried.dtype)
        carry = torch.matmul(qs, torch.stack(before, dim=2).transpose(-1, -2))  # (B, H, N, C, d_v)
        carry = (torch.stack(decay, dim=2).exp()[..., None] * carry).flatten(2, 3)
    else:
        carry = torch.cat([g_seg.exp()[..., None] * torch.matmul(q_seg.to(prev.dtype), prev.transpose(-1, -2))
                           for g_seg, q_seg, prev in zip(decay, q.split(lengths, dim=2), before)], dim=2)
    return (reads.to(carry.dtype) + carry).to(q.dtype), torch.stack(states, dim=2)
