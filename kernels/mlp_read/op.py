"""Public entry point of the MLP-memory cached read: validate, pick a backend, apply the form."""

from __future__ import annotations

import torch

from kernels.common.activations import check_activation
from kernels.common.checks import expect_shape, expect_slots
from kernels.common.dispatch import backend_for
from kernels.common.precision import autocast_inputs
from kernels.common.segments import Bounds, SegmentTable, segment_table, slot_mask, visible_mask
from kernels.mlp_read.reference import MLPReadReference
from scaling.errors import UserInputError

FORMS = ("plain", "residual")


def gate_mass(table: SegmentTable, gates: torch.Tensor | None, indices: torch.Tensor | None, n_states: int,
              like: torch.Tensor) -> torch.Tensor:
    """(B, H, L): the summed weight of the cached reads of each token (what multiplies z)."""
    if gates is None:
        return table.seg_of_token_i32.to(like.dtype).expand(*like.shape[:3])
    mask = visible_mask(table, n_states) if indices is None else slot_mask(table, indices)
    return (gates * mask).sum(-1)


def mlp_cached_read(z: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, gates: torch.Tensor | None,
                    bounds: Bounds, *, indices: torch.Tensor | None = None, activation: str = "silu",
                    form: str = "plain", gain: torch.Tensor | None = None,
                    backend: str | None = None, block_tokens: int | None = None,
                    block_hidden: int | None = None) -> torch.Tensor:
    """sum over cached segments of w_i[t] M_i(z_t), M_i(z) = W2_i act(W1_i z) ("plain") or the
    paper's deep memory z + gain * LN(W2_i act(W1_i z)) ("residual"; LN without affine part).

    The LayerNorm acts on each segment's own output, so it runs inside the per-segment read (the
    kernels normalise every segment's output before weighting it); `gain` (e.g. 1 + gamma, any
    tensor broadcastable to the (B, H, L, d) output; default 1) is shared by the segments, so it
    multiplies the weighted sum once, outside the op, and receives its gradient from autograd.

    Under autocast z, w1, w2 and gates enter the kernels in the autocast dtype (`autocast_inputs`);
    the kernels' output comes back in z's dtype as passed, and the gain and the `+ z` term, which
    are elementwise and outside the kernels, stay in the caller's dtypes.
    """
    check_activation(activation)
    if form not in FORMS:
        raise UserInputError("form", f"unknown MLP memory form {form!r}", f"use one of {', '.join(FORMS)}")
    expect_shape("z", z, (None, None, None, None), "(B, H, L, d_in)")
    b, h, length, d_in = z.shape
    expect_shape("w1", w1, (b, h, None, None, d_in), "(B, H, N, F, d_in): first-layer weights per segment")
    n_states, hidden = w1.shape[2], w1.shape[3]
    expect_shape("w2", w2, (b, h, n_states, None, hidden), "(B, H, N, d_out, F): second-layer weights per segment")
    if form == "plain" and gain is not None:
        raise UserInputError("gain", "the plain form has no gain", "drop gain or use form='residual'")
    if form == "residual" and w2.shape[3] != d_in:
        raise UserInputError("form", f"the residual form needs d_out == d_in, got {w2.shape[3]} and {d_in}",
                             "use form='plain' or square memories")
    table = segment_table(bounds, length, n_states, z.device)
    if indices is not None:
        if gates is None:
            raise UserInputError("gates", "SSC slots need gates", "pass the (B, H, L, K) gates of the slots")
        expect_slots(indices, gates, z)
    elif gates is not None:
        expect_shape("gates", gates, (b, h, length, n_states), "(B, H, L, N): the gate of each cached segment")
    normed = form == "residual"
    chosen = backend or backend_for(z.device)
    zc, w1c, w2c, gc = autocast_inputs(z, w1, w2, gates, device_type=z.device.type)
    if chosen == "reference":
        out = MLPReadReference.apply(zc, w1c, w2c, gc, indices, table, activation, normed)
    else:
        from kernels.mlp_read.function import MLPReadTriton

        out = MLPReadTriton.apply(zc, w1c, w2c, gc, indices, table, activation, normed, block_tokens,
                                  block_hidden)
    out = out.to(z.dtype)
    if not normed:
        return out
    if gain is not None:
        out = gain * out
    return out + gate_mass(table, gates, indices, n_states, z)[..., None].to(z.dtype) * z
