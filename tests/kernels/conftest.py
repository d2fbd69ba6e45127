"""Kernel tests run Triton in its CPU interpreter: TRITON_INTERPRET=1 is set here, at import.

Triton decides interpreter vs compiler when a kernel is decorated, i.e. when a kernel module is
first imported. `kernels` imports its Triton modules only when the Triton backend is used, so
setting the variable before any test of this folder runs is enough; `interpreted_kernels`
checks it really took effect and fails with an explanation otherwise.
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from kernels.common.segments import as_bounds  # noqa: E402


@pytest.fixture(scope="session")
def interpreted_kernels() -> None:
    from kernels.matrix_read.kernel import matrix_fwd_kernel

    if type(matrix_fwd_kernel).__name__ != "InterpretedFunction":
        pytest.fail("the Triton kernels were decorated before TRITON_INTERPRET=1 was set (something imported "
                    "kernels.*.kernel earlier in this process); run tests/kernels on its own")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def constant_bounds(length: int, segment: int) -> list[int]:
    return list(range(0, length, segment)) + [length]


def log_bounds(length: int, first: int) -> list[int]:
    """The paper's log segmentation as ModelConfig builds it: 0, C, 2C, 4C, ..., L."""
    bounds, end = [0], first
    while end < length:
        bounds.append(end)
        end *= 2
    return list(as_bounds(bounds + [length]))


def clone_leaves(tensors: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """Fresh leaves (float tensors require grad; integer ones, e.g. indices, do not)."""
    return [None if t is None else t.detach().clone().requires_grad_(t.is_floating_point()) for t in tensors]


def forward_backward(fn, tensors: list[torch.Tensor | None], grad_seed: int = 1):
    """(output, grads of the float inputs) of fn(*tensors) for a fixed random output gradient."""
    leaves = clone_leaves(tensors)
    out = fn(*leaves)
    gen = torch.Generator().manual_seed(grad_seed)
    out.backward(torch.randn(out.shape, generator=gen).to(out.dtype))
    return out.detach(), [t.grad for t in leaves if t is not None and t.is_floating_point()]
