"""Where a trial runs and in which precision: device choice, autocast, peak memory.

`device: auto` follows what the scheduler gave the process: Ray sets CUDA_VISIBLE_DEVICES for
a trial (or Train worker) that holds a GPU, so `torch.cuda.is_available()` is true exactly
then. Forcing `cuda` without a GPU is a clear error, not a silent CPU run.

bf16 is autocast with fp32 master weights: parameters, gradients and optimiser state stay
fp32, matmuls run in bf16, and the loss (log-softmax over the vocabulary) is computed in fp32
by the loop. The model keeps its norms, gate softmaxes and Memory Caching descriptors in fp32
where the models package says so.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import torch

from scaling.errors import UserInputError


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """The torch device for `requested` (auto | cpu | cuda) in this process."""
    if requested == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise UserInputError("device", "cuda was requested but this process has no GPU (torch sees none)",
                             "ask the scheduler for GPUs (resources.gpus_per_trial) or use device: auto or cpu")
    if not available:
        return torch.device("cpu")
    index = local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device`, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def use_compile(requested: bool | None, device: torch.device) -> bool:
    """torch.compile by default on CUDA (where it pays for itself) and off on CPU (where a
    tiny trial would spend longer compiling than training)."""
    return device.type == "cuda" if requested is None else bool(requested)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak device memory of this process: CUDA's allocator peak, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores)"


def trial_threads(requested: int | None) -> int:
    """Torch threads for this trial: what was asked for, else the CPUs this process may use
    (two trials on two cores must not each take both)."""
    if requested:
        return requested
    env = os.environ.get("MCSCALE_TRIAL_CPUS")
    if env:
        return max(1, int(float(env)))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
