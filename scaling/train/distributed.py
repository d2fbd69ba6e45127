"""Data parallelism inside one trial: DDP or FSDP (`fully_shard`) over a torch process group.

`WorkerGroup()` with no arguments is the single-process trial, where every method is the
identity; with a process group (set up by Ray Train's TorchTrainer) it wraps the model, keeps
micro-batches from synchronising gradients until the last one, sums counts and losses across
workers, and gathers / scatters full state dicts so that checkpoints are one file in one
format whatever the worker count (a trial may resume on a different number of workers).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict


@dataclass(frozen=True)
class WorkerGroup:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_process_group(cls) -> "WorkerGroup":
        """This process's place in the initialised default process group (Ray Train sets it up)."""
        if not dist.is_available() or not dist.is_initialized():
            return cls()
        import os

        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    # -- the model ----------------------------------------------------------------------------
    def wrap(self, model: torch.nn.Module, parallelism: str, device: torch.device) -> torch.nn.Module:
        """The module the step loop calls: the model, DDP around it, or the model fully sharded."""
        if not self.distributed:
            return model
        if parallelism == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for block in getattr(model, "blocks", []):  # one all-gather per block, as torchtitan does
                fully_shard(block)
            return fully_shard(model)
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def gradient_sync(self, module: torch.nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce on all but the last micro-batch of a step."""
        if not self.distributed or enabled:
            if hasattr(module, "set_requires_gradient_sync"):
                module.set_requires_gradient_sync(True)
            return contextlib.nullcontext()
        if hasattr(module, "no_sync"):  # DDP
            return module.no_sync()
        module.set_requires_gradient_sync(False)  # FSDP2
        return contextlib.nullcontext()

    # -- numbers ------------------------------------------------------------------------------
    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        if not self.distributed:
            return value
        out = value.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def clip_grad_norm(self, model: torch.nn.Module, max_norm: float) -> torch.Tensor:
        """Clip to `max_norm` over the whole (possibly sharded) model; returns the norm before
        clipping as a device tensor (reading it on the host would wait for the GPU every step)."""
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        if hasattr(norm, "full_tensor"):  # a DTensor under FSDP
            norm = norm.full_tensor()
        return norm

    # -- checkpoints --------------------------------------------------------------------------
    def full_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
        """Full (unsharded) model and optimiser state on the CPU, keyed by parameter name."""
        return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_state: dict,
                   optim_state: dict) -> None:
        set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state,
                       options=StateDictOptions(full_state_dict=True))
