"""Backend choice (MCSCALE_KERNELS and the device) and the errors bad input gets."""

from __future__ import annotations

import pytest
import torch

from kernels import gated_cached_read, kernel_backend, mlp_cached_read, ssc_cached_read
from scaling.errors import UserInputError

CPU = torch.device("cpu")


def test_cpu_defaults_to_reference_and_env_overrides(monkeypatch):
    monkeypatch.delenv("MCSCALE_KERNELS", raising=False)
    assert kernel_backend(CPU) == "reference"
    assert kernel_backend(torch.device("cuda")) == "triton"
    monkeypatch.setenv("MCSCALE_KERNELS", "reference")
    assert kernel_backend(torch.device("cuda")) == "reference"
    monkeypatch.setenv("MCSCALE_KERNELS", "triton")
    assert kernel_backend(CPU) == "triton"  # the interpreter runs it (TRITON_INTERPRET=1 in this folder)


def test_bad_backend_names_the_variable(monkeypatch):
    monkeypatch.setenv("MCSCALE_KERNELS", "cuda")
    with pytest.raises(UserInputError) as err:
        kernel_backend(CPU)
    assert err.value.field == "MCSCALE_KERNELS" and "reference" in err.value.fix


def test_triton_on_cpu_without_interpreter_explains(monkeypatch):
    monkeypatch.setenv("MCSCALE_KERNELS", "triton")
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(UserInputError) as err:
        kernel_backend(CPU)
    assert "TRITON_INTERPRET" in err.value.fix


def test_env_choice_reaches_the_op(monkeypatch):
    """MCSCALE_KERNELS=triton on CPU runs the interpreted kernel and gives the reference's answer."""
    q, s, g = torch.randn(1, 1, 16, 4), torch.randn(1, 1, 2, 4, 4), torch.rand(1, 1, 16, 2)
    monkeypatch.setenv("MCSCALE_KERNELS", "reference")
    want = gated_cached_read(q, s, g, [0, 8, 16])
    monkeypatch.setenv("MCSCALE_KERNELS", "triton")
    torch.testing.assert_close(gated_cached_read(q, s, g, [0, 8, 16], block_tokens=16), want)


@pytest.mark.parametrize("call,field", [
    (lambda q, s: gated_cached_read(q, s, None, [0, 4, 9]), "bounds"),
    (lambda q, s: gated_cached_read(q, s, None, [0, 8, 4, 16]), "bounds"),
    (lambda q, s: gated_cached_read(q, s[:, :, :, :, :3], None, [0, 8, 16]), "states"),
    (lambda q, s: gated_cached_read(q, s[:, :, :1], None, [0, 4, 8, 16]), "states"),
    (lambda q, s: gated_cached_read(q, s, torch.rand(1, 1, 16, 3), [0, 8, 16]), "gates"),
    (lambda q, s: ssc_cached_read(q, s, torch.rand(1, 1, 16, 2), torch.rand(1, 1, 16, 2), [0, 8, 16]), "indices"),
    (lambda q, s: mlp_cached_read(q, s, s, None, [0, 8, 16], activation="tanh"), "activation"),
    (lambda q, s: mlp_cached_read(q, s, s, None, [0, 8, 16], form="deep"), "form"),
])
def test_bad_shapes_and_settings_name_the_field(call, field):
    q, s = torch.randn(1, 1, 16, 4), torch.randn(1, 1, 2, 4, 4)
    with pytest.raises(UserInputError) as err:
        call(q, s)
    assert err.value.field == field and err.value.fix
