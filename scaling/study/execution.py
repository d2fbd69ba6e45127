"""How each planned trial runs: its resources (per rung), workers, micro-batch and precision.

The spec's `trainer:` block says how every trial trains and `resources:` (with `by_size`
overrides) what each rung holds; this module turns both into the execution fields of one
`TrialConfig` and the Ray resources of its Tune trial. `micro_batch_tokens: auto` and
`activation_checkpointing: auto` are settled here, from the memory estimate against the GPU's
memory, so the plan a user reads is exactly what the trials run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scaling.errors import UserInputError
from scaling.models.config import ModelConfig
from scaling.models.ladder import count_params
from scaling.spec import ResourceShape, StudySpec
from scaling.train.throughput import ACCELERATOR_TYPES, GPU_PEAKS


DRIVER_MEMORY_BYTES = 1_000_000  # what a multi-worker trial's Tune driver reserves


@dataclass(frozen=True)
class TrialResources:
    """What the Tune trial (and, for several workers, each Ray Train worker) asks Ray for."""

    cpus: float  # per worker
    gpus: float  # per trial, in total
    workers: int
    accelerator_type: str | None
    gpu_memory_bytes: float | None  # memory of the share of a GPU one worker holds

    @property
    def gpus_per_worker(self) -> float:
        return self.gpus / self.workers if self.gpus else 0.0

    def tune_request(self) -> dict[str, float]:
        """Resources of the Tune trial itself: everything for one worker, a light driver for several
        (the Train workers then hold the CPUs and GPUs). The driver holds no CPU (a sliver would
        keep two 1-CPU workers from both fitting on a 2-core machine) and 1 MB of Ray's memory
        resource, since Ray refuses an empty request."""
        if self.workers > 1:
            return {"cpu": 0, "memory": DRIVER_MEMORY_BYTES}
        request = {"cpu": self.cpus}
        if self.gpus:
            request["gpu"] = self.gpus
        if self.accelerator_type and self.gpus:
            request[f"accelerator_type:{self.accelerator_type}"] = 0.001
        return request


def gpu_memory_bytes(shape: ResourceShape) -> float | None:
    """Memory of one worker's GPU (share): the spec's gpu_memory_gb, else the accelerator's table row."""
    if not shape.gpus_per_trial:
        return None
    share = min(1.0, shape.gpus_per_trial)
    if shape.gpu_memory_gb is not None:
        return shape.gpu_memory_gb * 1e9 * share
    key = ACCELERATOR_TYPES.get(shape.accelerator_type or "")
    return GPU_PEAKS[key]["memory_bytes"] * share if key else None


def trial_resources(spec: StudySpec, model: ModelConfig) -> TrialResources:
    shape = spec.resources.for_params(count_params(model)["params_nonembed"])
    if shape.accelerator_type is not None and shape.accelerator_type not in ACCELERATOR_TYPES:
        raise UserInputError("resources.accelerator_type", f"unknown accelerator type {shape.accelerator_type!r}",
                             f"use one of {', '.join(ACCELERATOR_TYPES)} (Ray's names), or leave it out and set "
                             "gpu_memory_gb")
    return TrialResources(shape.cpus_per_trial, shape.gpus_per_trial, shape.workers, shape.accelerator_type,
                          gpu_memory_bytes(shape))


def execution_fields(spec: StudySpec, model: ModelConfig, resources: TrialResources) -> dict[str, Any]:
    """The TrialConfig fields that say how `model` trains under `spec` with `resources`."""
    from scaling.train.memory import fitting_micro_batch

    trainer = spec.trainer
    sequences = spec.optimizer.batch_tokens // spec.data.seq_len
    share = sequences // resources.workers
    micro: int | None = trainer.micro_batch_tokens if isinstance(trainer.micro_batch_tokens, int) else None
    checkpointing = trainer.activation_checkpointing is True
    auto_micro = trainer.micro_batch_tokens == "auto"
    auto_ckpt = trainer.activation_checkpointing == "auto"
    if (auto_micro or auto_ckpt) and resources.gpus:
        if resources.gpu_memory_bytes is None:
            raise UserInputError("resources.accelerator_type", "trainer settings `auto` need the GPU's memory",
                                 "set resources.accelerator_type (e.g. H100, A100-80G) or resources.gpu_memory_gb")
        args = (model, share, trainer.precision, resources.gpu_memory_bytes, resources.workers, trainer.parallelism)
        fitted = fitting_micro_batch(*args, activation_checkpointing=checkpointing)
        if fitted is None and auto_ckpt:
            checkpointing = True
            fitted = fitting_micro_batch(*args, activation_checkpointing=True)
        if auto_micro and fitted is not None:
            micro = fitted * spec.data.seq_len
    if micro is not None and micro >= share * spec.data.seq_len:
        micro = None  # one micro-batch is the whole share
    peak = trainer.peak_tflops * 1e12 if trainer.peak_tflops else None
    return dict(device=trainer.device, precision=trainer.precision, micro_batch_tokens=micro, compile=trainer.compile,
                workers=resources.workers, parallelism=trainer.parallelism, activation_checkpointing=checkpointing,
                peak_flops_per_second=peak)
