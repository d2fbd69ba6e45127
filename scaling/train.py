"""Run one trial: build a model, train it on a corpus (or a recall task), evaluate, checkpoint.

`run_trial(config, reporter)` is the unit a study schedules thousands of times, so it is built
to be interrupted: every checkpoint is written atomically (temp file, then rename) and holds
the model, the optimiser, the step, the elapsed time and the metric history. Batches are a pure
function of (seed, step), so a resumed run sees exactly the batches the uninterrupted run
would have, and ends with the same final metrics.

The reporter is a plain callable `reporter(metrics, checkpoint_dir)` so a trial runs without
Ray; the Ray Tune adapter wraps it. A non-finite loss marks the trial `diverged` with its step,
reports that, and returns; it never raises into the caller.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from scaling.data.batches import eval_windows, sample_batch
from scaling.data.corpus import CorpusSpec, TokenCorpus, load_corpus
from scaling.data.recall import MQARSpec, mqar_accuracy, mqar_batch, needle_examples
from scaling.errors import UserInputError
from scaling.models import LanguageModel, ModelConfig
from scaling.models.flops import training_flops_per_token

Reporter = Callable[[dict[str, Any], Optional[str]], None]
StepCallback = Callable[[dict[str, float]], None]
CHECKPOINT_FILE = "trial.pt"
STATUS_RUNNING, STATUS_COMPLETED, STATUS_DIVERGED = "running", "completed", "diverged"
MQAR_EVAL_SEED = 1_000_003  # evaluation batches never overlap the training stream's seeds


@dataclass(frozen=True)
class TrialConfig:
    """Everything one training run needs; plain data so it can be hashed, logged and shipped."""

    model: ModelConfig
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    task: str = "lm"  # lm: next-token prediction on the corpus; mqar: train on the recall task
    tokens: int | None = None  # training token budget ...
    tokens_per_param: float | None = None  # ... or tokens per non-embedding parameter
    batch_tokens: int = 8192  # tokens per optimiser step (batch size = batch_tokens // seq_len)
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_fraction: float = 0.05
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0
    eval_every_steps: int = 50
    eval_windows: int = 16
    mqar: MQARSpec | None = None
    mqar_eval_batch: int = 64
    needle_lengths: tuple[int, ...] = ()
    needle_depths: tuple[float, ...] = (0.1, 0.5, 0.9)
    needle_kind: str = "passkey"
    checkpoint_dir: str | None = None
    threads: int | None = None  # torch threads; None -> the CPUs this process may use

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.task not in ("lm", "mqar"):
            raise UserInputError("task", f"unknown task {self.task!r}", "use lm or mqar")
        if self.task == "mqar" and self.mqar is None:
            raise UserInputError("mqar", "task mqar needs an MQAR spec", "give mqar settings (n_pairs, ...)")
        if (self.tokens is None) == (self.tokens_per_param is None):
            raise UserInputError("tokens", "give exactly one of tokens and tokens_per_param",
                                 "set e.g. tokens: 5000000 or tokens_per_param: 20")
        if self.tokens is not None and self.tokens <= 0:
            raise UserInputError("tokens", f"token budget must be positive, got {self.tokens}", "use e.g. 5M")
        if self.tokens_per_param is not None and self.tokens_per_param <= 0:
            raise UserInputError("tokens_per_param", "must be positive", "use e.g. 20")
        if self.batch_tokens < self.model.seq_len:
            raise UserInputError("batch_tokens", f"{self.batch_tokens} is less than one sequence "
                                 f"({self.model.seq_len} tokens)", "use a multiple of seq_len")
        for name in ("lr", "eval_every_steps", "eval_windows", "grad_clip"):
            if getattr(self, name) <= 0:
                raise UserInputError(name, f"must be positive, got {getattr(self, name)}", f"set {name} > 0")
        if not 0 <= self.warmup_fraction < 1 or not 0 <= self.min_lr_ratio <= 1:
            raise UserInputError("warmup_fraction", "warmup_fraction must be in [0, 1) and min_lr_ratio in [0, 1]",
                                 "use e.g. 0.05 and 0.1")
        for length in self.needle_lengths:
            if length > self.model.seq_len:
                raise UserInputError("needle_lengths", f"needle length {length} exceeds seq_len {self.model.seq_len}: "
                                     "the needle task cannot fit", f"use lengths <= {self.model.seq_len}")
            self._check_length(length, "needle_lengths")
        if self.mqar is not None:
            self._check_length(self.mqar.seq_len, "mqar.seq_len")

    def _check_length(self, length: int, field_name: str) -> None:
        cfg = self.model
        step = math.lcm(cfg.scan_chunk_len, cfg.segment_len_tokens if cfg.segmentation == "constant" and
                        cfg.caching != "none" else 1) if cfg.is_recurrent else 1
        if length % step:
            raise UserInputError(field_name, f"length {length} is not a multiple of {step} (segment length / "
                                 "scan chunk)", f"use a multiple of {step}")

    def batch_size(self) -> int:
        return self.batch_tokens // self.model.seq_len

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrialResult:
    status: str
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    checkpoint_dir: str | None


# ----------------------------------------------------------------------------- helpers
# --- issue 14 (live metrics; port into scaling/train/): dense bf16 peak per GPU, MFU's denominator (0: unknown/CPU)
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}


def device_peak_stats() -> tuple[float, int]:
    """(peak FLOP/s of this device, peak memory bytes: CUDA allocator, else peak RSS - ru_maxrss is KiB)."""
    import resource
    if not torch.cuda.is_available():
        return 0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    name = torch.cuda.get_device_name()
    return next((p for k, p in PEAK_BF16_FLOPS.items() if k in name), 0.0), int(torch.cuda.max_memory_allocated())


def trial_threads(requested: int | None) -> int:
    """Torch threads for this trial: what was asked for, else the CPUs this process may use."""
    if requested:
        return requested
    env = os.environ.get("MCSCALE_TRIAL_CPUS")
    if env:
        return max(1, int(float(env)))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def lr_at(step: int, total_steps: int, cfg: TrialConfig) -> float:
    """Linear warmup, then cosine decay to lr * min_lr_ratio at the last step."""
    warmup = max(1, int(round(cfg.warmup_fraction * total_steps))) if cfg.warmup_fraction > 0 else 0
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(model: torch.nn.Module, cfg: TrialConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not norms, biases, gate biases, memory inits)."""
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() != 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def _save_checkpoint(directory: Path, payload: dict[str, Any]) -> None:
    """Write then rename, so a crash mid-write never leaves a torn checkpoint behind."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".trial-", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, directory / CHECKPOINT_FILE)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    summary = {k: v for k, v in payload["metrics"].items() if isinstance(v, (int, float, str))}
    (directory / "summary.json.tmp").write_text(json.dumps(summary, indent=2, sort_keys=True))
    os.replace(directory / "summary.json.tmp", directory / "summary.json")


def load_checkpoint(directory: str | Path) -> dict[str, Any] | None:
    path = Path(directory) / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a corrupt checkpoint is bad input, not a crash
        raise UserInputError("checkpoint_dir", f"cannot read checkpoint {path}: {exc}",
                             "delete the damaged checkpoint to start over") from None


@torch.no_grad()
def evaluate(model: LanguageModel, cfg: TrialConfig, corpus: TokenCorpus | None) -> dict[str, float]:
    """Validation loss and bits per byte, MQAR accuracy, needle accuracy per length."""
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    if corpus is not None and len(corpus.val) > cfg.model.seq_len:
        windows = eval_windows(corpus.val, cfg.model.seq_len, cfg.eval_windows)
        nats, n_tokens, n_bytes = 0.0, 0, 0
        for chunk in windows.split(max(1, cfg.batch_size()), dim=0):
            logits = model(chunk[:, :-1])
            targets = chunk[:, 1:]
            nats += F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum").item()
            n_tokens += targets.numel()
            n_bytes += int(corpus.tokenizer.token_bytes[targets.numpy()].sum())
        out["val_loss"] = nats / n_tokens
        out["val_bpb"] = nats / math.log(2) / max(1, n_bytes)
    if cfg.mqar is not None:
        inputs, targets = mqar_batch(cfg.mqar, cfg.mqar_eval_batch, MQAR_EVAL_SEED + cfg.seed, cfg.model.vocab_size)
        out["mqar_acc"] = mqar_accuracy(model(inputs), targets)
    if cfg.needle_lengths and corpus is not None:
        examples = needle_examples(corpus.val, corpus.tokenizer, cfg.needle_lengths, cfg.needle_depths,
                                   seed=cfg.seed, kind=cfg.needle_kind, seq_len=cfg.model.seq_len)
        per_length: dict[int, list[float]] = {}
        for ex in examples:
            logits = model(ex.tokens[None])[0]  # full length keeps segment/chunk alignment; causal anyway
            answer = ex.tokens[ex.answer_start:]
            predicted = logits[ex.answer_start - 1: ex.tokens.numel() - 1].argmax(-1)
            per_length.setdefault(ex.length, []).append(float(torch.equal(predicted, answer)))
        for length, hits in sorted(per_length.items()):
            out[f"needle_acc_{length}"] = float(np.mean(hits))
    model.train(was_training)
    return out


def _trial_corpus(config: TrialConfig) -> TokenCorpus | None:
    """The corpus the trial trains or evaluates on (None for a pure recall-task run)."""
    if config.task != "lm" and not config.needle_lengths:
        return None
    corpus = load_corpus(config.corpus, min_tokens=config.model.seq_len + 1)
    if corpus.tokenizer.vocab_size > config.model.vocab_size:
        raise UserInputError("model.vocab_size", f"tokenizer {corpus.tokenizer.name} has "
                             f"{corpus.tokenizer.vocab_size} tokens but the model only {config.model.vocab_size}",
                             f"set vocab_size >= {corpus.tokenizer.vocab_size}")
    return corpus


def check_inputs(config: TrialConfig) -> None:
    """Load the corpus and build every evaluation once, so bad data fails before any training.

    A study runs this in its driver before scheduling hundreds of trials: a corpus that is
    missing or too short, a needle that cannot fit, an MQAR vocabulary the model lacks all
    surface as one `UserInputError` instead of as every trial failing on a worker.
    """
    cfg = config.model
    corpus = _trial_corpus(config)
    if corpus is not None:
        if config.needle_lengths:
            needle_examples(corpus.val, corpus.tokenizer, config.needle_lengths, config.needle_depths,
                            seed=config.seed, kind=config.needle_kind, seq_len=cfg.seq_len)
    if config.mqar is not None:
        mqar_batch(config.mqar, 1, 0, cfg.vocab_size)


# ----------------------------------------------------------------------------- the trial
def run_trial(config: TrialConfig, reporter: Reporter | None = None, on_step: StepCallback | None = None,
              stop_after_steps: int | None = None) -> TrialResult:
    """Train one model to its token budget, resuming from `config.checkpoint_dir` if it holds a checkpoint.

    `stop_after_steps` ends the run early (after checkpointing) at that step, as an interruption would;
    it exists so resume can be exercised without killing processes.
    """
    torch.set_num_threads(trial_threads(config.threads))
    cfg = config.model
    corpus = _trial_corpus(config)
    torch.manual_seed(config.seed)
    model = LanguageModel(cfg)
    optimizer = build_optimizer(model, config)
    params_nonembed = model.param_counts()["params_nonembed"]
    budget = config.tokens if config.tokens is not None else int(config.tokens_per_param * params_nonembed)
    tokens_per_step = config.batch_size() * cfg.seq_len
    total_steps = max(1, math.ceil(budget / tokens_per_step))
    flops_per_token = training_flops_per_token(cfg)

    step, train_seconds, wall_offset = 0, 0.0, 0.0
    history: list[dict[str, Any]] = []
    pending_losses: list[tuple[int, float]] = []
    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    if ckpt_dir is not None:
        state = load_checkpoint(ckpt_dir)
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            step, train_seconds, wall_offset = state["step"], state["train_seconds"], state["wall_seconds"]
            history = state["history"]
            if state["metrics"].get("status") in (STATUS_COMPLETED, STATUS_DIVERGED):
                # Re-report the final result: a scheduler that lost it (its driver died after the
                # checkpoint) learns the outcome; reporters are idempotent per step.
                if reporter is not None:
                    reporter(dict(state["metrics"], train_loss_steps=[]), str(ckpt_dir))
                return TrialResult(state["metrics"]["status"], state["metrics"], history, str(ckpt_dir))
    wall_start = time.perf_counter()
    base = {"params_nonembed": params_nonembed, "params_total": model.param_counts()["params_total"],
            "total_steps": total_steps, "flops_per_token": flops_per_token}

    def snapshot(status: str, extra: dict[str, Any]) -> dict[str, Any]:
        tokens_done = step * tokens_per_step
        metrics = dict(base, step=step, tokens=tokens_done, flops=tokens_done * flops_per_token,
                       train_seconds=train_seconds, wall_seconds=wall_offset + time.perf_counter() - wall_start,
                       tokens_per_second=tokens_done / train_seconds if train_seconds else 0.0,
                       flops_per_second=tokens_done * flops_per_token / train_seconds if train_seconds else 0.0,
                       status=status)
        peak, memory = device_peak_stats()  # issue 14: the three live-metrics fields
        metrics.update(mfu=metrics["flops_per_second"] / peak if peak else 0.0, device_memory_peak_bytes=memory,
                       checkpoint_seconds=checkpoint_seconds[0])
        metrics.update(extra)
        return metrics

    checkpoint_seconds = [0.0]  # issue 14: time spent in the last checkpoint save

    def save_state(metrics: dict[str, Any]) -> None:
        assert ckpt_dir is not None
        started = time.perf_counter()
        _save_checkpoint(ckpt_dir, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                    "step": step, "train_seconds": train_seconds,
                                    "wall_seconds": metrics["wall_seconds"], "history": history,
                                    "metrics": metrics, "config": config.to_dict()})
        checkpoint_seconds[0] = time.perf_counter() - started

    def checkpoint_and_report(metrics: dict[str, Any]) -> None:
        metrics["train_loss_steps"] = list(pending_losses)
        history.append({k: v for k, v in metrics.items() if k != "train_loss_steps"})
        if ckpt_dir is not None:
            save_state(metrics)
        if reporter is not None:
            reporter(metrics, str(ckpt_dir) if ckpt_dir is not None else None)
        pending_losses.clear()

    model.train()
    last_loss = float("nan")
    while step < total_steps:
        t0 = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total_steps, config)
        if config.task == "mqar":
            inputs, targets = mqar_batch(config.mqar, config.batch_size(), config.seed * 1_000_003 + step,
                                         cfg.vocab_size)
        else:
            assert corpus is not None
            batch = sample_batch(corpus.train, cfg.seq_len, config.batch_size(), config.seed, step)
            inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
        if not torch.isfinite(loss):
            metrics = snapshot(STATUS_DIVERGED, {"diverged_step": step, "train_loss": float("nan")})
            checkpoint_and_report(metrics)
            return TrialResult(STATUS_DIVERGED, metrics, history, str(ckpt_dir) if ckpt_dir else None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        if not torch.isfinite(grad_norm):
            metrics = snapshot(STATUS_DIVERGED, {"diverged_step": step, "train_loss": loss.item()})
            checkpoint_and_report(metrics)
            return TrialResult(STATUS_DIVERGED, metrics, history, str(ckpt_dir) if ckpt_dir else None)
        optimizer.step()
        step += 1
        train_seconds += time.perf_counter() - t0
        last_loss = loss.item()
        pending_losses.append((step, last_loss))
        if on_step is not None:
            on_step({"step": step, "total_steps": total_steps, "tokens": step * tokens_per_step,
                     "loss": last_loss, "tokens_per_second": step * tokens_per_step / max(train_seconds, 1e-9)})
        if step % config.eval_every_steps == 0 or step == total_steps:
            status = STATUS_COMPLETED if step == total_steps else STATUS_RUNNING
            metrics = snapshot(status, {"train_loss": last_loss, "lr": lr_at(step - 1, total_steps, config),
                                        **evaluate(model, config, corpus)})
            checkpoint_and_report(metrics)
            if status == STATUS_COMPLETED:
                return TrialResult(status, metrics, history, str(ckpt_dir) if ckpt_dir else None)
        if stop_after_steps is not None and step >= stop_after_steps:
            metrics = snapshot(STATUS_RUNNING, {"train_loss": last_loss})
            if ckpt_dir is not None:  # as if interrupted right after a checkpoint at this step
                save_state(metrics)
            return TrialResult(STATUS_RUNNING, metrics, history, str(ckpt_dir) if ckpt_dir else None)
    metrics = snapshot(STATUS_COMPLETED, {"train_loss": last_loss, **evaluate(model, config, corpus)})
    checkpoint_and_report(metrics)
    return TrialResult(STATUS_COMPLETED, metrics, history, str(ckpt_dir) if ckpt_dir else None)
