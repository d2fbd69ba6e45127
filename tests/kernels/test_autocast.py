"""The ops under autocast: inputs cast to the autocast dtype at the op boundary, outputs and
gradients in the caller's dtypes, references free of autocast, and torch.compile of a
swla+ssc model's forward and backward under bf16 autocast.

CUDA autocast hands the ops fp32 q, states and gates (F.normalize, cumsum, exp and softmax
return fp32 there); CPU autocast with fp32 inputs passed straight to the op is the same
situation, so these CPU tests simulate CUDA's policy that way.
"""

from __future__ import annotations

import pytest
import torch

from kernels import gated_cached_read, mlp_cached_read, ssc_cached_read
from kernels.common.precision import autocast_dtype, autocast_inputs
from tests.kernels.conftest import constant_bounds

BF16 = torch.bfloat16
BF16_TOL = dict(rtol=2e-2, atol=5e-2)  # as tests/kernels/test_triton_interpreter.py
BOUNDS = constant_bounds(32, 8)
B, H, L, D, N, K, F = 1, 2, 32, 16, 4, 2, 32


def bf16_autocast() -> torch.autocast:
    return torch.autocast("cpu", dtype=BF16)


def test_autocast_inputs_casts_floating_inputs_only_under_autocast():
    x32, x64 = torch.randn(3), torch.randn(3, dtype=torch.float64)
    idx, half = torch.arange(3), torch.randn(3, dtype=torch.float16)
    assert autocast_dtype("cpu") is None and autocast_inputs(x32, device_type="cpu")[0] is x32
    with bf16_autocast():
        assert autocast_dtype("cpu") == BF16 and autocast_dtype("meta") is None
        out = autocast_inputs(x32, None, idx, x64, half, device_type="cpu")
        assert [None if t is None else t.dtype for t in out] == [BF16, None, torch.int64, torch.float64, BF16]
        assert out[2] is idx and out[3] is x64  # integers (SSC indices) and float64 (gradcheck) pass through
        assert autocast_inputs(x32, device_type="meta")[0] is x32  # the meta device has no autocast


def matrix_inputs() -> list[torch.Tensor]:
    return [torch.randn(B, H, L, D), torch.randn(B, H, N, D, D) / D ** 0.5, torch.randn(B, H, L, N).softmax(-1)]


def ssc_inputs() -> tuple[list[torch.Tensor], torch.Tensor]:
    q, s, _ = matrix_inputs()
    return [q, s, torch.randn(B, H, L, K).softmax(-1)], torch.randint(0, N, (B, H, L, K))


def mlp_inputs() -> list[torch.Tensor]:
    return [torch.randn(B, H, L, D), torch.randn(B, H, N, F, D) / D ** 0.5, torch.randn(B, H, N, D, F) / F ** 0.5,
            torch.randn(B, H, L, N).softmax(-1)]


def op_cases():
    """(name, op taking the float inputs and a backend, the float inputs)."""
    ssc, idx = ssc_inputs()
    gain = 1 + 0.5 * torch.randn(1, H, 1, D)
    return [
        ("gated", lambda q, s, g, backend: gated_cached_read(q, s, g, BOUNDS, backend=backend, block_tokens=16),
         matrix_inputs()),
        ("ssc", lambda q, s, g, backend: ssc_cached_read(q, s, idx, g, BOUNDS, backend=backend, block_tokens=16),
         ssc),
        ("mlp-residual", lambda z, a, b, g, gain, backend: mlp_cached_read(
            z, a, b, g, BOUNDS, form="residual", activation="gelu", gain=gain, backend=backend, block_tokens=16,
            block_hidden=16), [*mlp_inputs(), gain]),
        ("mlp-ssc", lambda z, a, b, g, backend: mlp_cached_read(
            z, a, b, g, BOUNDS, indices=idx, backend=backend, block_tokens=16, block_hidden=16),
         [*mlp_inputs()[:3], ssc[2]]),
    ]


def kernel_function_node(out: torch.Tensor):
    """The op's autograd.Function node behind its output (the cast back to the caller's dtype and,
    for the residual MLP form, the gain and the `+ z` term sit between)."""
    stack, seen = [out.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if type(node).__name__.startswith(("MatrixRead", "MLPRead")):
            return node
        stack.extend(n for n, _ in node.next_functions)
    raise AssertionError("no cached-read Function in the graph")


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("case", range(4), ids=[c[0] for c in op_cases()])
def test_ops_receive_the_autocast_dtype_and_return_the_callers_dtypes(case, backend):
    """fp32 inputs under bf16 autocast: the kernel Function saves bf16 inputs (what it ran on), the
    output is fp32 as the caller passed, and every gradient comes back fp32, equal to running the op
    on bf16-rounded inputs without autocast."""
    name, op, tensors = op_cases()[case]
    leaves = [t.clone().requires_grad_() for t in tensors]
    with bf16_autocast():
        out = op(*leaves, backend=backend)
    saved = [t.dtype for t in kernel_function_node(out).saved_tensors if t is not None and t.is_floating_point()]
    kernel_inputs = len(tensors) - (name == "mlp-residual")  # the gain multiplies outside the kernels
    assert saved == [BF16] * kernel_inputs
    assert out.dtype == torch.float32
    seed = torch.randn(out.shape)
    out.backward(seed)
    assert all(t.grad is not None and t.grad.dtype == torch.float32 for t in leaves)

    rounded = [t.to(BF16).float().requires_grad_() for t in tensors]  # the same values, no autocast
    want = op(*rounded, backend=backend)
    want.backward(seed)
    torch.testing.assert_close(out, want, **BF16_TOL)  # the kernels' output and gradients are bf16-rounded
    for got, ref in zip(leaves, rounded):
        torch.testing.assert_close(got.grad, ref.grad, **BF16_TOL)


def test_references_accumulate_in_fp32_under_autocast():
    """Autocast must not reach inside the reference: its matmuls stay fp32 on the bf16 inputs, so the
    op under autocast equals the op on the same bf16 inputs with autocast off, bit for bit."""
    q, s, g = (t.to(BF16) for t in matrix_inputs())
    z, w1, w2, gm = (t.to(BF16) for t in mlp_inputs())
    calls = [lambda: gated_cached_read(q, s, g, BOUNDS, backend="reference"),
             lambda: mlp_cached_read(z, w1, w2, gm, BOUNDS, form="residual", activation="gelu", backend="reference")]
    for call in calls:
        plain = call()
        with bf16_autocast():
            assert torch.equal(call(), plain)


def test_swla_ssc_compiles_forward_and_backward_under_bf16_autocast():
    """torch.compile traces the backward under the forward's autocast state: the SSC reference's
    backward used to get a bf16 matmul for its fp32 `scatter_add_` buffer there and fail. The
    aot_eager backend runs the same Dynamo + AOTAutograd tracing as inductor, without inductor's
    C++ build (minutes on CPU); the compiled loss and gradients must equal eager's."""
    from scaling.models import LanguageModel
    from tests.models.conftest import small_config

    torch.manual_seed(0)
    model = LanguageModel(small_config("swla", "matrix", "ssc", n_layers=1, seq_len=32))
    tokens = torch.randint(0, 64, (2, 32))

    def loss_and_grads(module: torch.nn.Module) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        with bf16_autocast():
            logits = module(tokens)
        loss = logits.float().logsumexp(-1).mean()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    eager_loss, eager_grads = loss_and_grads(model)
    compiled_loss, compiled_grads = loss_and_grads(torch.compile(model, backend="aot_eager", fullgraph=False))
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-3, atol=1e-3)
    for got, want in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-3)
