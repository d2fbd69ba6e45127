"""Every Triton kernel, run by the CPU interpreter, against its PyTorch reference.

Forward and the gradient of every input; ragged segment and block edges, zero cached
segments, top_k above the number of segments, log bounds, non-square states, hidden-width
tiling, bf16. Small shapes with blocks of 16-32 tokens keep the interpreter to seconds per case.
"""

from __future__ import annotations

import pytest
import torch

from kernels import gated_cached_read, mlp_cached_read, ssc_cached_read
from tests.kernels.conftest import constant_bounds, forward_backward, log_bounds

pytestmark = pytest.mark.usefixtures("interpreted_kernels")

B, H = 1, 2
RAGGED = [0, 5, 7, 19, 24, 40, 45]  # uneven segments; 45 tokens cut 16-token blocks unevenly
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.bfloat16: dict(rtol=2e-2, atol=5e-2)}


def compare(fn, tensors, dtype=torch.float32):
    """Triton (interpreter) vs reference, both given the same inputs in `dtype`."""
    cast = [t if t is None or not t.is_floating_point() else t.to(dtype) for t in tensors]
    want = forward_backward(lambda *xs: fn(*xs, backend="reference"), cast)
    got = forward_backward(lambda *xs: fn(*xs, backend="triton"), cast)
    assert got[0].dtype == dtype and all(g.dtype == dtype for g in got[1])
    assert len(got[1]) == len(want[1]) > 0
    for g, w in zip([got[0], *got[1]], [want[0], *want[1]]):
        assert w.abs().max() > 0  # every compared tensor carries signal
        torch.testing.assert_close(g.float(), w.float(), **TOL[dtype])


def matrix_inputs(bounds, d_in=8, d_out=12, n_extra=0):
    length, n = bounds[-1], len(bounds) - 1 + n_extra
    return (torch.randn(B, H, length, d_in), torch.randn(B, H, n, d_out, d_in) / d_in ** 0.5,
            torch.randn(B, H, length, n).softmax(-1))


def slots(bounds, k, n, empty_fraction=0.2):
    """Random top-k style slots: distinct readable segments where there are enough, else -1 / future ones."""
    length = bounds[-1]
    idx = torch.stack([torch.randperm(max(n, k))[:k] for _ in range(B * H * length)]).view(B, H, length, k)
    idx = idx.masked_fill(torch.rand(idx.shape) < empty_fraction, -1)
    return idx, torch.randn(B, H, length, k).softmax(-1)


@pytest.mark.parametrize("bounds", [RAGGED, log_bounds(40, 4)], ids=["ragged", "log"])
def test_gated_read(bounds):
    q, s, g = matrix_inputs(bounds)
    compare(lambda q, s, g, backend: gated_cached_read(q, s, g, bounds, backend=backend, block_tokens=16), [q, s, g])


def test_residual_read_has_no_gates():
    bounds = constant_bounds(40, 8)
    q, s, _ = matrix_inputs(bounds, d_in=16, d_out=16)
    compare(lambda q, s, backend: gated_cached_read(q, s, None, bounds, backend=backend, block_tokens=32), [q, s])


def test_zero_cached_segments_read_nothing():
    q, s, g = matrix_inputs([0, 24])
    out = gated_cached_read(q, s, g, [0, 24], backend="triton", block_tokens=16)
    assert out.shape == (B, H, 24, 12) and out.abs().max() == 0
    mlp = mlp_cached_read(q, torch.randn(B, H, 1, 16, 8), torch.randn(B, H, 1, 8, 16), g, [0, 24],
                          backend="triton", block_tokens=16)
    assert mlp.abs().max() == 0
    no_slots = torch.zeros(B, H, 24, 0, dtype=torch.long)
    ssc = ssc_cached_read(q, s, no_slots, torch.zeros(B, H, 24, 0), [0, 8, 24], backend="triton", block_tokens=16)
    assert ssc.shape == (B, H, 24, 12) and ssc.abs().max() == 0


@pytest.mark.parametrize("bounds,k", [(RAGGED, 2), (log_bounds(40, 4), 6)], ids=["ragged-k2", "log-k-above-n"])
def test_ssc_read(bounds, k):
    q, s, _ = matrix_inputs(bounds)
    idx, gates = slots(bounds, k, s.shape[2])
    compare(lambda q, s, g, backend: ssc_cached_read(q, s, idx, g, bounds, backend=backend, block_tokens=16),
            [q, s, gates])


def test_matrix_reads_bf16():
    bounds = constant_bounds(48, 8)
    q, s, g = matrix_inputs(bounds, d_in=16, d_out=16)
    compare(lambda q, s, g, backend: gated_cached_read(q, s, g, bounds, backend=backend, block_tokens=16),
            [q, s, g], torch.bfloat16)
    idx, gates = slots(bounds, 3, s.shape[2])
    compare(lambda q, s, g, backend: ssc_cached_read(q, s, idx, g, bounds, backend=backend, block_tokens=32),
            [q, s, gates], torch.bfloat16)


def mlp_inputs(bounds, d=8, hidden=24):
    length, n = bounds[-1], len(bounds) - 1
    return (torch.randn(B, H, length, d), torch.randn(B, H, n, hidden, d) / d ** 0.5,
            torch.randn(B, H, n, d, hidden) / hidden ** 0.5, torch.randn(B, H, length, n).softmax(-1))


@pytest.mark.parametrize("form,activation", [("plain", "silu"), ("residual", "gelu")])
def test_mlp_gated_read(form, activation):
    bounds = RAGGED
    z, w1, w2, g = mlp_inputs(bounds)
    compare(lambda z, a, b, g, backend: mlp_cached_read(z, a, b, g, bounds, activation=activation, form=form,
                                                        backend=backend, block_tokens=16, block_hidden=16),
            [z, w1, w2, g])


def test_mlp_plain_read_non_square():
    """d_in != d_out: the dW kernel stores its transposed accumulators through dW1's and dW2's own
    shapes (a swapped stride would only show with unequal widths)."""
    bounds = [0, 7, 16, 24]
    z, w1, _, g = mlp_inputs(bounds, d=8, hidden=24)
    w2 = torch.randn(B, H, len(bounds) - 1, 12, 24) / 24 ** 0.5
    compare(lambda z, a, b, g, backend: mlp_cached_read(z, a, b, g, bounds, backend=backend, block_tokens=16,
                                                        block_hidden=16), [z, w1, w2, g])


@pytest.mark.parametrize("form", ["plain", "residual"])
def test_mlp_residual_strategy_without_gates(form):
    bounds = log_bounds(36, 4)
    z, w1, w2, _ = mlp_inputs(bounds, hidden=16)
    compare(lambda z, a, b, backend: mlp_cached_read(z, a, b, None, bounds, form=form, activation="gelu",
                                                     backend=backend, block_tokens=32), [z, w1, w2])


@pytest.mark.parametrize("form", ["plain", "residual"])
def test_mlp_ssc_read(form):
    bounds = log_bounds(40, 4)
    z, w1, w2, _ = mlp_inputs(bounds)
    idx, gates = slots(bounds, 5, w1.shape[2])
    compare(lambda z, a, b, g, backend: mlp_cached_read(z, a, b, g, bounds, indices=idx, form=form, backend=backend,
                                                        block_tokens=16, block_hidden=16), [z, w1, w2, gates])


@pytest.mark.parametrize("form", ["plain", "residual"])
def test_mlp_read_bf16(form):
    bounds = constant_bounds(32, 8)
    z, w1, w2, g = mlp_inputs(bounds, d=16, hidden=32)
    compare(lambda z, a, b, g, backend: mlp_cached_read(z, a, b, g, bounds, form=form, backend=backend,
                                                        block_tokens=16, block_hidden=16), [z, w1, w2, g],
            torch.bfloat16)


def test_frozen_states_skip_their_gradient_only():
    """States that need no gradient (e.g. detached) leave the kernels computing dq and dgates alone."""
    bounds = constant_bounds(32, 8)
    q, s, g = matrix_inputs(bounds)
    grads = []
    for backend in ("reference", "triton"):
        q_leaf, g_leaf = q.clone().requires_grad_(), g.clone().requires_grad_()
        gated_cached_read(q_leaf, s, g_leaf, bounds, backend=backend, block_tokens=16).square().sum().backward()
        grads.append((q_leaf.grad, g_leaf.grad))
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want, **TOL[torch.float32])
    assert s.grad is None
