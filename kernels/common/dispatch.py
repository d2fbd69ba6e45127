"""Backend choice for every op: Triton on CUDA, the PyTorch reference elsewhere.

`MCSCALE_KERNELS=reference|triton` overrides the device rule (unset or `auto` keeps it). The
Triton modules are imported only when the Triton backend is chosen, so importing `kernels`
never compiles anything, and `TRITON_INTERPRET=1` set by a test before its first Triton call is
honoured (Triton reads it when a kernel is decorated).
"""

from __future__ import annotations

import os

import torch

from scaling.errors import UserInputError

ENV_VAR = "MCSCALE_KERNELS"
BACKENDS = ("reference", "triton")


def interpreting() -> bool:
    """Triton kernels run in the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def backend_for(device: torch.device) -> str:
    """'triton' or 'reference' for tensors on `device`.

    The meta device (shapes only: the trainer's activation-memory estimate) always gets the
    reference, whose autograd.Function saves the same inputs as the Triton one.
    """
    if device.type == "meta":
        return "reference"
    choice = os.environ.get(ENV_VAR, "auto").strip().lower()
    if choice in ("", "auto"):
        return "triton" if device.type == "cuda" else "reference"
    if choice not in BACKENDS:
        raise UserInputError(ENV_VAR, f"unknown kernel backend {choice!r}",
                             "set MCSCALE_KERNELS to 'reference', 'triton' or leave it unset (auto)")
    if choice == "triton" and device.type != "cuda" and not interpreting():
        raise UserInputError(ENV_VAR, f"the Triton backend needs CUDA tensors, got {device.type} tensors",
                             "move the model to a GPU, set TRITON_INTERPRET=1 to run Triton on the CPU "
                             "(slow; for tests), or set MCSCALE_KERNELS=reference")
    return choice
