"""What a study will cost before it runs: tokens, training FLOPs, device-hours, memory per GPU.

Tokens are what the trial will actually train (whole optimiser steps, so the budget rounded up
to a step), and FLOPs are the exact per-token training FLOPs of `scaling.models.flops` times
those tokens: the same numbers the trials then report as `tokens` and `flops`. Device-hours
assume an MFU (the spec's `trainer.assumed_mfu`, or `--mfu`) against the dense peak of the
trial's accelerator; a trial whose memory estimate exceeds its GPU is reported with the fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scaling.errors import UserInputError
from scaling.models.flops import training_flops_per_token
from scaling.models.ladder import count_params
from scaling.spec import StudySpec
from scaling.study.plan import PlannedTrial
from scaling.train.memory import MEMORY_HEADROOM, estimate_memory
from scaling.train.throughput import ACCELERATOR_TYPES, GPU_PEAKS

ASSUMED_ACCELERATOR = "H100"  # device-hours of GPU trials that name no accelerator assume this one


@dataclass(frozen=True)
class TrialCost:
    trial: PlannedTrial
    params_nonembed: int
    tokens: int
    training_flops: float
    memory_per_worker_bytes: float | None  # None when the memory was not estimated
    gpu_memory_bytes: float | None  # None for CPU trials or an unknown GPU
    device_hours: float | None  # GPU-hours at the assumed MFU; None for CPU trials
    count: int = 1  # how many such trials run (a tune template runs `tune.samples` times)

    @property
    def fits(self) -> bool | None:
        if self.memory_per_worker_bytes is None or self.gpu_memory_bytes is None:
            return None
        return self.memory_per_worker_bytes <= MEMORY_HEADROOM * self.gpu_memory_bytes

    @property
    def gpus(self) -> float:
        return self.trial.resources.gpus if self.trial.resources else 0.0


def trial_tokens(trial: PlannedTrial) -> int:
    """Tokens the trial trains: its budget rounded up to whole optimiser steps."""
    cfg = trial.config
    params = count_params(cfg.model)["params_nonembed"]
    budget = cfg.tokens if cfg.tokens is not None else int(cfg.tokens_per_param * params)
    tokens_per_step = cfg.batch_size() * cfg.model.seq_len
    return max(1, math.ceil(budget / tokens_per_step)) * tokens_per_step


def device_peak(spec: StudySpec, accelerator_type: str | None) -> tuple[float, str]:
    """(peak FLOP/s of one device at the spec's precision, the accelerator it assumes)."""
    name = ACCELERATOR_TYPES.get(accelerator_type or "", ASSUMED_ACCELERATOR)
    if spec.trainer.peak_tflops:
        return spec.trainer.peak_tflops * 1e12, name
    row = GPU_PEAKS[name]
    return (row["bf16"] if spec.trainer.precision == "bf16" else row["tf32"] or row["fp32"]), name


def trial_cost(spec: StudySpec, trial: PlannedTrial, mfu: float, with_memory: bool = True) -> TrialCost:
    cfg = trial.config
    tokens = trial_tokens(trial)
    flops = tokens * training_flops_per_token(cfg.model)
    res = trial.resources
    memory = None
    if with_memory:
        memory = estimate_memory(cfg.model, cfg.micro_batch_size(), cfg.precision, cfg.workers, cfg.parallelism,
                                 cfg.activation_checkpointing).total_bytes
    hours = None
    if res is not None and res.gpus:
        peak, _ = device_peak(spec, res.accelerator_type)
        hours = flops / (mfu * peak) / 3600.0
    count = spec.tune.samples if trial.phase == "tune" and spec.tune is not None else 1
    return TrialCost(trial, count_params(cfg.model)["params_nonembed"], tokens, flops, memory,
                     res.gpu_memory_bytes if res else None, hours, count)


def study_costs(spec: StudySpec, trials: list[PlannedTrial], mfu: float | None = None,
                with_memory: bool = True) -> list[TrialCost]:
    return [trial_cost(spec, t, mfu or spec.trainer.assumed_mfu, with_memory) for t in trials]


def total_line(spec: StudySpec, costs: list[TrialCost], mfu: float | None = None) -> str:
    """One sentence: trials, tokens, FLOPs and device-hours of the whole study."""
    from scaling.formatting import sci

    gpu = [c for c in costs if c.device_hours is not None]
    text = (f"{sum(c.count for c in costs)} trials, {sci(sum(c.count * c.tokens for c in costs))} tokens, "
            f"{sci(sum(c.count * c.training_flops for c in costs))} training FLOPs")
    if gpu:
        _, accelerator = device_peak(spec, gpu[0].trial.resources.accelerator_type if gpu[0].trial.resources else None)
        text += (f", {sum(c.count * c.device_hours for c in gpu):,.1f} GPU-hours at {100 * (mfu or spec.trainer.assumed_mfu):.0f}% "
                 f"MFU ({spec.trainer.precision} peak of {accelerator})")
    else:
        text += " on CPUs"
    return text


def check_fits(costs: list[TrialCost]) -> None:
    """Raise the exit-2 error for trials whose memory estimate exceeds their GPUs, naming the first and the fix."""
    from scaling.formatting import byte_size

    bad = [c for c in costs if c.fits is False]
    if not bad:
        return
    first, cfg = bad[0], bad[0].trial.config
    raise UserInputError(
        "resources", f"{len(bad)} trial(s) cannot fit their GPUs; the first, {first.trial.trial_id}, needs about "
        f"{byte_size(first.memory_per_worker_bytes)} per GPU against {MEMORY_HEADROOM:.0%} of "
        f"{byte_size(first.gpu_memory_bytes)} (micro-batch {cfg.micro_batch_size()} sequences, "
        f"{cfg.workers} worker(s), {cfg.parallelism}, activation checkpointing "
        f"{'on' if cfg.activation_checkpointing else 'off'})",
        "set trainer.micro_batch_tokens: auto and trainer.activation_checkpointing: auto, or give that rung more "
        "GPUs with parallelism: fsdp (resources.by_size), or a GPU with more memory")


def preflight(spec: StudySpec) -> str:
    """Plan the whole study, refuse trials that cannot fit their GPUs, and return its total cost line.

    `mcscale run` and `mcscale submit` call this before anything starts; memory is estimated for
    GPU trials only (CPU trials have the machine's RAM, which the plan does not model).
    """
    from scaling.study.plan import plan_ladder, plan_tune, tune_series

    from scaling.study.recall import plan_recall

    trials = plan_recall(spec) + plan_ladder(spec)
    if spec.tune is not None:
        trials = [plan_tune(spec, a, s) for a, s in tune_series(spec)] + trials
    costs = [trial_cost(spec, t, spec.trainer.assumed_mfu, with_memory=bool(t.resources and t.resources.gpus))
             for t in trials]
    check_fits(costs)
    return total_line(spec, costs)
