"""Dtypes at the ops' boundary: inputs in the autocast dtype, references free of autocast.

Under CUDA autocast, F.normalize, cumsum, exp and softmax return fp32, so q, the cached states
and the gates reach the ops as fp32 although the model trains in bf16; the Triton launcher would
then build the fp32 kernels (spilling on sm_90, issue 22). Autocast does not act on a custom
op's inputs, so the ops cast them here, as autocast casts a matmul's: fp32/fp16/bf16 floating
tensors go to the autocast dtype of their device when autocast is on there; float64 (gradcheck),
integers (SSC indices) and None pass unchanged. The cast is an autograd op, so each gradient
comes back in its input's original dtype; the kernels still accumulate in fp32.

The references choose their accumulation dtype themselves; autocast inside them would turn
their fp32 matmuls back into bf16 ones (and, where torch.compile traces the backward under the
forward's autocast state, hand `scatter_add_` a bf16 source for an fp32 buffer), so their
autograd.Functions run under `autocast_off`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import torch

CASTABLE = (torch.float32, torch.float16, torch.bfloat16)  # what torch.autocast itself casts


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast asks for on `device_type` now, or None when it is off (or the device has
    no autocast, e.g. the meta device the memory estimate runs on)."""
    if not torch.amp.is_autocast_available(device_type) or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def autocast_inputs(*tensors: torch.Tensor | None, device_type: str) -> tuple[torch.Tensor | None, ...]:
    """`tensors` with every fp32/fp16/bf16 one cast to the autocast dtype of `device_type` (unchanged
    when autocast is off there)."""
    dtype = autocast_dtype(device_type)
    if dtype is None:
        return tensors
    return tuple(t.to(dtype) if t is not None and t.dtype in CASTABLE else t for t in tensors)


def autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast disabled on `device_type` (a no-op where the device has no autocast)."""
    if not torch.amp.is_autocast_available(device_type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, enabled=False)


def without_autocast(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run an autograd.Function's forward(ctx, x, ...) or backward(ctx, grad, ...) with autocast off
    on the device of its first tensor argument (see the module docstring)."""

    @functools.wraps(method)
    def run(ctx: Any, first: torch.Tensor, *rest: Any) -> Any:
        with autocast_off(first.device.type):
            return method(ctx, first, *rest)

    return run
