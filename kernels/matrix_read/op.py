"""Public entry points of the matrix-memory cached read: validate, pick a backend, apply."""

from __future__ import annotations

import torch

from kernels.common.checks import expect_shape, expect_slots
from kernels.common.dispatch import backend_for
from kernels.common.precision import autocast_inputs
from kernels.common.segments import Bounds, segment_table
from kernels.matrix_read.reference import MatrixReadReference


def matrix_read(q: torch.Tensor, states: torch.Tensor, gates: torch.Tensor | None, indices: torch.Tensor | None,
                bounds: Bounds, backend: str | None = None, block_tokens: int | None = None) -> torch.Tensor:
    """Shared body of `gated_cached_read` (indices None) and `ssc_cached_read`.

    Under autocast q, states and gates enter the kernels in the autocast dtype (`autocast_inputs`);
    the output keeps q's dtype as passed, and the gradients their inputs' dtypes.
    """
    expect_shape("q", q, (None, None, None, None), "(B, H, L, d_in)")
    b, h, length, d_in = q.shape
    expect_shape("states", states, (b, h, None, None, d_in), "(B, H, N, d_out, d_in): one state per segment")
    table = segment_table(bounds, length, states.shape[2], q.device)
    if indices is not None:
        assert gates is not None
        expect_slots(indices, gates, q)
    elif gates is not None:
        expect_shape("gates", gates, (b, h, length, states.shape[2]), "(B, H, L, N): the gate of each cached segment")
    chosen = backend or backend_for(q.device)
    out_dtype = q.dtype
    q, states, gates = autocast_inputs(q, states, gates, device_type=q.device.type)
    if chosen == "reference":
        return MatrixReadReference.apply(q, states, gates, indices, table).to(out_dtype)
    from kernels.matrix_read.function import MatrixReadTriton

    return MatrixReadTriton.apply(q, states, gates, indices, table, block_tokens).to(out_dtype)


def gated_cached_read(q: torch.Tensor, states: torch.Tensor, gates: torch.Tensor | None, bounds: Bounds, *,
                      backend: str | None = None, block_tokens: int | None = None) -> torch.Tensor:
    """out[t] = sum_{i < seg(t)} gates[t, i] * S_i q_t (gates None: residual, all ones)."""
    return matrix_read(q, states, gates, None, bounds, backend, block_tokens)


def ssc_cached_read(q: torch.Tensor, states: torch.Tensor, indices: torch.Tensor, gates: torch.Tensor,
                    bounds: Bounds, *, backend: str | None = None, block_tokens: int | None = None) -> torch.Tensor:
    """out[t] = sum_j gates[t, j] * S_{indices[t, j]} q_t over slots with 0 <= index < seg(t)."""
    return matrix_read(q, states, gates, indices, bounds, backend, block_tokens)
