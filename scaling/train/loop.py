"""Run one trial: build a model, train it on a corpus (or a recall task), evaluate, checkpoint.

`run_trial(config, reporter)` is the unit a study schedules thousands of times, so it is built
to be interrupted: every checkpoint is written atomically and holds the model, the optimiser,
the step, the elapsed time and the metric history. Batches are a pure function of (seed,
step), so a resumed run sees exactly the batches the uninterrupted run would have.

One optimiser step = `batch_tokens` tokens, split over `workers` data-parallel workers and, on
each, into micro-batches of `micro_batch_tokens`. The loss is a sum over target tokens divided
by the step's global count of targets, so any split gives the full-batch gradient (exactly, up
to rounding), including MQAR batches whose ignored positions differ between micro-batches.

The reporter is a plain callable `reporter(metrics, checkpoint_dir)` so a trial runs without
Ray; the Ray Tune adapter and the Ray Train worker wrap it. A non-finite loss marks the trial
`diverged` with its step, reports that, and returns; it never raises into the caller.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from scaling.models import LanguageModel
from scaling.models.flops import training_flops_per_token
from scaling.train import device as dev
from scaling.train.batches import BatchPrefetcher, trial_corpus, worker_batch
from scaling.train.checkpoint import load_checkpoint, save_checkpoint
from scaling.train.config import STATUS_COMPLETED, STATUS_DIVERGED, STATUS_RUNNING, TrialConfig, TrialResult
from scaling.train.distributed import WorkerGroup
from scaling.train.evaluate import evaluate
from scaling.train.learned import not_learned_reason
from scaling.train.optim import build_optimizer, lr_at
from scaling.train.throughput import mfu, peak_flops

Reporter = Callable[[dict[str, Any], Optional[str]], None]
StepCallback = Callable[[dict[str, float]], None]
IGNORE_INDEX = -100
#: Steps between host reads of the losses (each read waits for the GPU to drain its queue).
HOST_SYNC_EVERY_STEPS = 10


class _Trainer:
    """The model as the step loop drives it: maybe data-parallel, maybe compiled; eval uses the raw model."""

    def __init__(self, model: LanguageModel, config: TrialConfig, group: WorkerGroup, device: torch.device):
        self.model, self.group = model, group
        if config.activation_checkpointing:
            _checkpoint_blocks(model)
        self.module: torch.nn.Module = group.wrap(model, config.parallelism, device)
        self.compiled = dev.use_compile(config.compile, device)
        self.forward: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(self.module) if self.compiled else self.module)
        self.compile_failed = False

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        try:
            with _backward_compiled_with_forward() if self.compiled else contextlib.nullcontext():
                return self.forward(inputs)
        except Exception as exc:  # noqa: BLE001 - a compiler failure must not cost the trial
            if not self.compiled or self.compile_failed:
                raise
            warnings.warn(f"torch.compile failed ({type(exc).__name__}: {exc}); training eagerly", stacklevel=2)
            self.compile_failed, self.forward = True, self.module
            return self.forward(inputs)

    def sync_context(self, last_micro_batch: bool) -> contextlib.AbstractContextManager:
        return self.group.gradient_sync(self.module, enabled=last_micro_batch)


def _backward_compiled_with_forward() -> contextlib.AbstractContextManager:
    """torch.compile lowers a graph's backward lazily, at its first .backward(), which the eager
    fallback in `_Trainer.__call__` does not wrap; lowering it with the forward makes a backward
    compile failure raise in the forward call, before any gradient is accumulated, where the
    fallback catches it. (A private torch setting; without it, the lazy default.)"""
    try:
        from torch._functorch import config
    except ImportError:
        return contextlib.nullcontext()
    if not hasattr(config, "force_non_lazy_backward_lowering"):
        return contextlib.nullcontext()
    return config.patch(force_non_lazy_backward_lowering=True)


def _checkpoint_blocks(model: LanguageModel) -> None:
    """Recompute each block in backward (torch's checkpoint wrapper, as torchtitan uses it; its
    state-dict hooks keep parameter names unchanged, so checkpoints stay interchangeable)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    for i, block in enumerate(model.blocks):
        model.blocks[i] = checkpoint_wrapper(block)


def _step_loss(trainer: _Trainer, config: TrialConfig, inputs: torch.Tensor, targets: torch.Tensor,
               device: torch.device) -> torch.Tensor:
    """Forward and backward of one optimiser step's share on this worker; returns the global mean loss."""
    group = trainer.group
    valid = group.all_reduce_sum((targets != IGNORE_INDEX).sum().to(torch.float64))
    scale = group.world_size / valid.clamp_min(1.0)  # data-parallel averaging divides by the world size
    micro = config.micro_batch_size()
    n_micro = inputs.shape[0] // micro
    total = torch.zeros((), dtype=torch.float64, device=device)
    for j in range(n_micro):
        rows = slice(j * micro, (j + 1) * micro)
        with trainer.sync_context(j == n_micro - 1):
            with dev.autocast(device, config.precision):
                logits = trainer(inputs[rows])
            loss_sum = F.cross_entropy(logits.float().flatten(0, 1), targets[rows].flatten(),
                                       ignore_index=IGNORE_INDEX, reduction="sum")
            (loss_sum * scale.to(loss_sum.dtype)).backward()
        total += loss_sum.detach().to(torch.float64)
    return group.all_reduce_sum(total) / valid.clamp_min(1.0)


def train_step(trainer: _Trainer, optimizer: torch.optim.Optimizer, config: TrialConfig, inputs: torch.Tensor,
               targets: torch.Tensor, device: torch.device, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step; returns (global mean loss, gradient norm before clipping) as device tensors.

    Nothing here reads a value back to the host (`scaling.train.host_syncs` holds it to zero ops
    that would block on CUDA): the loop reads the losses of several steps at once, every
    `HOST_SYNC_EVERY_STEPS` and at evaluations. A non-finite step is therefore found up to that
    many steps late; the trial still ends as diverged at the first non-finite step.
    """
    for param_group in optimizer.param_groups:
        param_group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss = _step_loss(trainer, config, inputs, targets, device)
    grad_norm = trainer.group.clip_grad_norm(trainer.model, config.grad_clip)
    optimizer.step()
    return loss, grad_norm


def run_trial(config: TrialConfig, reporter: Reporter | None = None, on_step: StepCallback | None = None,
              stop_after_steps: int | None = None, group: WorkerGroup | None = None) -> TrialResult:
    """Train one model to its token budget, resuming from `config.checkpoint_dir` if it holds a checkpoint.

    `group` is this process's place among the trial's data-parallel workers (None: the only
    one). Every worker runs this function; the main worker writes checkpoints, and every worker
    calls the reporter (Ray Train's report is collective) with the same metrics.
    `stop_after_steps` ends the run early (after checkpointing) at that step, as an
    interruption would; it exists so resume can be exercised without killing processes.
    """
    group = group or WorkerGroup()
    torch.set_num_threads(dev.trial_threads(config.threads))
    device = dev.resolve_device(config.device, group.local_rank)
    cfg = config.model
    corpus = trial_corpus(config)
    torch.manual_seed(config.seed)
    model = LanguageModel(cfg).to(device)
    counts = model.param_counts()
    params_nonembed = counts["params_nonembed"]
    budget = config.tokens if config.tokens is not None else int(config.tokens_per_param * params_nonembed)
    tokens_per_step = config.batch_size() * cfg.seq_len
    total_steps = max(1, math.ceil(budget / tokens_per_step))
    flops_per_token = training_flops_per_token(cfg)
    name = dev.device_name(device)
    peak = (config.peak_flops_per_second or peak_flops(name, config.precision)) * group.world_size

    step, train_seconds, wall_offset = 0, 0.0, 0.0
    history: list[dict[str, Any]] = []
    pending_losses: list[tuple[int, float]] = []
    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    state = load_checkpoint(ckpt_dir) if ckpt_dir is not None else None
    if state is not None and state["metrics"].get("status") in (STATUS_COMPLETED, STATUS_DIVERGED):
        # Re-report the final result: a scheduler that lost it (its driver died after the
        # checkpoint) learns the outcome; reporters are idempotent per step.
        if reporter is not None:
            reporter(dict(state["metrics"], train_loss_steps=[]), str(ckpt_dir))
        return TrialResult(state["metrics"]["status"], state["metrics"], state["history"], str(ckpt_dir))
    trainer = _Trainer(model, config, group, device)  # before the optimiser: FSDP replaces the parameters
    optimizer = build_optimizer(model, config, device)
    if state is not None:
        group.load_state(model, optimizer, state["model"], state["optimizer"])
        for param_group in optimizer.param_groups:  # a checkpoint from another device keeps this device's kernel
            param_group["fused"] = device.type == "cuda"
        step, train_seconds, wall_offset = state["step"], state["train_seconds"], state["wall_seconds"]
        history = state["history"]
    wall_start = time.perf_counter()
    dev.reset_peak_memory(device)
    base = {"params_nonembed": params_nonembed, "params_total": counts["params_total"],
            "total_steps": total_steps, "flops_per_token": flops_per_token, "workers": group.world_size,
            "device": name, "precision": config.precision, "compiled": int(trainer.compiled),
            "resumed_from_step": step}
    checkpoint_seconds = 0.0

    def snapshot(status: str, extra: dict[str, Any]) -> dict[str, Any]:
        tokens_done = step * tokens_per_step
        flops_per_second = tokens_done * flops_per_token / train_seconds if train_seconds else 0.0
        metrics = dict(base, step=step, tokens=tokens_done, flops=tokens_done * flops_per_token,
                       train_seconds=train_seconds, wall_seconds=wall_offset + time.perf_counter() - wall_start,
                       tokens_per_second=tokens_done / train_seconds if train_seconds else 0.0,
                       flops_per_second=flops_per_second, mfu=mfu(flops_per_second, peak),
                       device_memory_peak_bytes=dev.peak_memory_bytes(device),
                       checkpoint_seconds=checkpoint_seconds, status=status)
        metrics["compile_failed"] = int(trainer.compile_failed)
        metrics.update(extra)
        if status == STATUS_COMPLETED and "val_loss" in metrics:  # finished: did it learn? (scaling.train.learned)
            metrics["learned"] = int(not_learned_reason(metrics["val_loss"], cfg.vocab_size) is None)
        return metrics

    def save_state(metrics: dict[str, Any]) -> None:
        nonlocal checkpoint_seconds
        started = time.perf_counter()
        model_state, optim_state = group.full_state(model, optimizer)  # collective under FSDP
        if ckpt_dir is not None and group.is_main:
            save_checkpoint(ckpt_dir, {"model": model_state, "optimizer": optim_state, "step": step,
                                       "train_seconds": train_seconds, "wall_seconds": metrics["wall_seconds"],
                                       "history": history, "metrics": metrics, "config": config.to_dict()})
        checkpoint_seconds = time.perf_counter() - started
        metrics["checkpoint_seconds"] = checkpoint_seconds

    def checkpoint_and_report(metrics: dict[str, Any]) -> None:
        metrics["train_loss_steps"] = list(pending_losses)
        history.append({k: v for k, v in metrics.items() if k != "train_loss_steps"})
        if ckpt_dir is not None:
            save_state(metrics)
            history[-1]["checkpoint_seconds"] = metrics["checkpoint_seconds"]
        if reporter is not None:
            reporter(metrics, str(ckpt_dir) if ckpt_dir is not None else None)
        pending_losses.clear()

    def finish(status: str, metrics: dict[str, Any]) -> TrialResult:
        prefetch.close()
        return TrialResult(status, metrics, history, str(ckpt_dir) if ckpt_dir else None)

    model.train()
    last_loss = float("nan")
    prefetch = BatchPrefetcher(lambda s: worker_batch(config, corpus, s, group.rank), device, total_steps)
    unread: list[tuple[int, torch.Tensor]] = []  # (step, [loss, grad norm] on the device) not yet read
    interval_start = time.perf_counter()
    while step < total_steps:
        inputs, targets = prefetch.get(step)
        loss, grad_norm = train_step(trainer, optimizer, config, inputs, targets, device, lr_at(step, total_steps, config))
        step += 1
        unread.append((step, torch.stack([loss.detach().double(), grad_norm.detach().double()])))
        at_eval = step % config.eval_every_steps == 0 or step == total_steps
        stopping = stop_after_steps is not None and step >= stop_after_steps
        if not (at_eval or stopping or step % HOST_SYNC_EVERY_STEPS == 0):
            continue
        # The one host read of this interval: it also waits for the device, so train_seconds is real.
        values = torch.stack([v for _, v in unread]).tolist()
        train_seconds += time.perf_counter() - interval_start
        read, unread = [(s, lv[0], lv[1]) for (s, _), lv in zip(unread, values)], []
        bad = next(((s, lv, gn) for s, lv, gn in read if not (math.isfinite(lv) and math.isfinite(gn))), None)
        if bad is not None:  # the first non-finite step; the steps after it are not counted
            step = bad[0] - 1
            pending_losses.extend((s, lv) for s, lv, _ in read if s <= step)
            loss_value = bad[1] if math.isfinite(bad[1]) else float("nan")
            metrics = snapshot(STATUS_DIVERGED, {"diverged_step": step, "train_loss": loss_value})
            checkpoint_and_report(metrics)
            return finish(STATUS_DIVERGED, metrics)
        for s, loss_value, _ in read:
            pending_losses.append((s, loss_value))
            if on_step is not None:
                on_step({"step": s, "total_steps": total_steps, "tokens": s * tokens_per_step, "loss": loss_value,
                         "tokens_per_second": step * tokens_per_step / max(train_seconds, 1e-9)})
        last_loss = read[-1][1]
        if at_eval:
            status = STATUS_COMPLETED if step == total_steps else STATUS_RUNNING
            metrics = snapshot(status, {"train_loss": last_loss, "lr": lr_at(step - 1, total_steps, config),
                                        **evaluate(trainer.model, config, corpus, device)})
            checkpoint_and_report(metrics)
            if status == STATUS_COMPLETED:
                return finish(status, metrics)
        if stopping:
            metrics = snapshot(STATUS_RUNNING, {"train_loss": last_loss})
            if ckpt_dir is not None:  # as if interrupted right after a checkpoint at this step
                save_state(metrics)
            return finish(STATUS_RUNNING, metrics)
        interval_start = time.perf_counter()
    metrics = snapshot(STATUS_COMPLETED, {"train_loss": last_loss, **evaluate(trainer.model, config, corpus, device)})
    checkpoint_and_report(metrics)
    return finish(STATUS_COMPLETED, metrics)
