"""The PyTorch references: gradcheck in float64 and agreement with an explicit formula."""

from __future__ import annotations

import pytest
import torch

from kernels import gated_cached_read, mlp_cached_read, ssc_cached_read
from kernels.common.activations import activate
from kernels.common.segments import segment_table
from tests.kernels.conftest import constant_bounds, log_bounds

B, H = 1, 2


def explicit_weights(bounds: list[int], gates: torch.Tensor | None, indices: torch.Tensor | None,
                     n_states: int, length: int) -> torch.Tensor:
    """(B, H, L, N) weight of segment i at token t, written out element by element."""
    table = segment_table(bounds, length, n_states, torch.device("cpu"))
    seg = table.seg_of_token_i32.tolist()
    w = torch.zeros(B, H, length, n_states, dtype=torch.float64)
    for t in range(length):
        for i in range(min(seg[t], n_states)):
            if indices is None:
                w[:, :, t, i] = 1.0 if gates is None else gates[:, :, t, i]
            else:  # only slots j < seg(t) can hold a readable segment (topk puts them first)
                live = slice(0, seg[t])
                w[:, :, t, i] = (gates[:, :, t, live] * (indices[:, :, t, live] == i)).sum(-1)
    return w


@pytest.mark.parametrize("bounds", [constant_bounds(24, 4), log_bounds(24, 3), [0, 5, 7, 19, 24]])
def test_matrix_reference_matches_explicit_sum(bounds):
    length, n, d = 24, len(bounds) - 1, 5
    q, s = torch.randn(B, H, length, d, dtype=torch.float64), torch.randn(B, H, n, 3, d, dtype=torch.float64)
    g = torch.randn(B, H, length, n, dtype=torch.float64)
    idx = torch.randint(-1, n, (B, H, length, 2))
    gs = torch.randn(B, H, length, 2, dtype=torch.float64)
    reads = torch.einsum("bhnod,bhtd->bhtno", s, q)
    for gates, indices, got in ((g, None, gated_cached_read(q, s, g, bounds, backend="reference")),
                                (None, None, gated_cached_read(q, s, None, bounds, backend="reference")),
                                (gs, idx, ssc_cached_read(q, s, idx, gs, bounds, backend="reference"))):
        w = explicit_weights(bounds, gates, indices, n, length)
        torch.testing.assert_close(got, (w[..., None] * reads).sum(3))


@pytest.mark.parametrize("activation", ["silu", "gelu"])
def test_mlp_reference_matches_explicit_sum(activation):
    bounds, length, d, f = log_bounds(20, 2), 20, 4, 6
    n = len(bounds) - 1
    z = torch.randn(B, H, length, d, dtype=torch.float64)
    w1, w2 = torch.randn(B, H, n, f, d, dtype=torch.float64), torch.randn(B, H, n, d, f, dtype=torch.float64)
    g = torch.randn(B, H, length, n, dtype=torch.float64)
    hidden = activate(activation, torch.einsum("bhnfd,bhtd->bhtnf", w1, z))
    reads = torch.einsum("bhnof,bhtnf->bhtno", w2, hidden)
    w = explicit_weights(bounds, g, None, n, length)
    torch.testing.assert_close(mlp_cached_read(z, w1, w2, g, bounds, activation=activation, backend="reference"),
                               (w[..., None] * reads).sum(3))
    # the paper's form: each cached memory is z + gain * LN(W2 act(W1 z)), LN over each segment's output
    gain = 1 + torch.randn(1, H, 1, d, dtype=torch.float64)
    reads = z[:, :, :, None] + gain[:, :, :, None] * torch.nn.functional.layer_norm(reads, (d,))
    torch.testing.assert_close(mlp_cached_read(z, w1, w2, g, bounds, activation=activation, form="residual",
                                               gain=gain, backend="reference"), (w[..., None] * reads).sum(3))
    idx = torch.randint(-1, n, (B, H, length, 3))
    gs = torch.randn(B, H, length, 3, dtype=torch.float64)
    w = explicit_weights(bounds, gs, idx, n, length)
    torch.testing.assert_close(mlp_cached_read(z, w1, w2, gs, bounds, indices=idx, activation=activation,
                                               form="residual", gain=gain, backend="reference"),
                               (w[..., None] * reads).sum(3))


def _gradcheck(fn, *inputs):
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    assert torch.autograd.gradcheck(lambda *xs: fn(*xs), leaves, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("bounds", [constant_bounds(9, 3), log_bounds(10, 2)])
def test_reference_gradcheck_float64(bounds):
    length, n, d = bounds[-1], len(bounds) - 1, 3
    b, h = 1, 1  # gradcheck perturbs every input element: keep them few
    q, s = torch.randn(b, h, length, d, dtype=torch.float64), torch.randn(b, h, n, 2, d, dtype=torch.float64)
    g = torch.randn(b, h, length, n, dtype=torch.float64)
    idx = torch.randint(-1, n, (b, h, length, 2))
    gs = torch.randn(b, h, length, 2, dtype=torch.float64)
    _gradcheck(lambda q, s, g: gated_cached_read(q, s, g, bounds, backend="reference"), q, s, g)
    _gradcheck(lambda q, s: gated_cached_read(q, s, None, bounds, backend="reference"), q, s)
    _gradcheck(lambda q, s, g: ssc_cached_read(q, s, idx, g, bounds, backend="reference"), q, s, gs)
    w1, w2 = torch.randn(b, h, n, 4, d, dtype=torch.float64), torch.randn(b, h, n, d, 4, dtype=torch.float64)
    for activation in ("silu", "gelu"):
        _gradcheck(lambda z, a, b, g: mlp_cached_read(z, a, b, g, bounds, activation=activation, backend="reference"),
                   q, w1, w2, g)
    gain = 1 + torch.randn(1, h, 1, d, dtype=torch.float64)
    _gradcheck(lambda z, a, b, g, gain: mlp_cached_read(z, a, b, g, bounds, indices=idx, form="residual", gain=gain,
                                                        activation="gelu", backend="reference"), q, w1, w2, gs, gain)
    _gradcheck(lambda z, a, b, g: mlp_cached_read(z, a, b, g, bounds, form="residual", backend="reference"),
               q, w1, w2, g)


def test_reference_reads_nothing_without_cached_segments():
    q = torch.randn(B, H, 8, 4, requires_grad=True)
    s = torch.randn(B, H, 1, 4, 4, requires_grad=True)
    out = gated_cached_read(q, s, torch.randn(B, H, 8, 1), [0, 8], backend="reference")
    out.sum().backward()
    assert out.abs().max() == 0 and q.grad.abs().max() == 0 and s.grad.abs().max() == 0
