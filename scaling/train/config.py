"""`TrialConfig`: everything one training run needs, as plain, hashable, shippable data.

The config says *what* to train (model, data, budget, optimiser) and *how* (device, precision,
micro-batches, compile, workers). Where the trial runs is resolved at run time, not stored:
`device: auto` becomes `cuda` when the trial holds a GPU and `cpu` otherwise, so the same
planned trial (and its config hash) can be checkpointed on a GPU and resumed on a CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from scaling.data.corpus import CorpusSpec
from scaling.data.recall import MQARSpec
from scaling.errors import UserInputError
from scaling.models import ModelConfig

STATUS_RUNNING, STATUS_COMPLETED, STATUS_DIVERGED = "running", "completed", "diverged"
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
PARALLELISMS = ("ddp", "fsdp")


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
    # Validation loss per position: the windows' seq_len input positions cut into this many equal
    # buckets (position p in bucket p * buckets // seq_len), the same for every architecture, so an MC
    # model and its base compare bucket by bucket (`val_loss_pos{i}`, scaling.train.evaluate).
    eval_position_buckets: int = 8  # at most seq_len are used (one position each below 8 tokens)
    mqar: MQARSpec | None = None
    mqar_eval_batch: int = 64
    needle_lengths: tuple[int, ...] = ()
    needle_depths: tuple[float, ...] = (0.1, 0.5, 0.9)
    needle_kind: str = "passkey"
    checkpoint_dir: str | None = None
    threads: int | None = None  # torch threads; None -> the CPUs this process may use
    # -- how the trial runs (resolved on the worker) -----------------------------------------
    device: str = "auto"  # auto: cuda when this process holds a GPU, else cpu
    precision: str = "fp32"  # bf16: autocast with fp32 master weights, fp32 loss
    micro_batch_tokens: int | None = None  # tokens per forward/backward per worker; None: the whole share
    compile: bool | None = None  # torch.compile; None: on for cuda, off for cpu
    activation_checkpointing: bool = False  # recompute each block in backward instead of saving it
    workers: int = 1  # data-parallel workers (Ray Train) sharing each optimiser step
    parallelism: str = "ddp"  # ddp (replicated) or fsdp (fully_shard) across the workers
    peak_flops_per_second: float | None = None  # MFU denominator per device; None: the device table

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
        for name in ("lr", "eval_every_steps", "eval_windows", "eval_position_buckets", "grad_clip"):
            if getattr(self, name) <= 0:
                raise UserInputError(name, f"must be positive, got {getattr(self, name)}", f"set {name} > 0")
        if not 0 <= self.warmup_fraction < 1 or not 0 <= self.min_lr_ratio <= 1:
            raise UserInputError("warmup_fraction", "warmup_fraction must be in [0, 1) and min_lr_ratio in [0, 1]",
                                 "use e.g. 0.05 and 0.1")
        self._validate_execution()
        for length in self.needle_lengths:
            if length > self.model.seq_len:
                raise UserInputError("needle_lengths", f"needle length {length} exceeds seq_len {self.model.seq_len}: "
                                     "the needle task cannot fit", f"use lengths <= {self.model.seq_len}")
        if self.mqar is not None and self.mqar.seq_len > self.model.seq_len:
            raise UserInputError("mqar.seq_len", f"{self.mqar.seq_len} exceeds the model's seq_len "
                                 f"{self.model.seq_len}", f"use at most {self.model.seq_len}")

    def _validate_execution(self) -> None:
        if self.device not in DEVICES:
            raise UserInputError("device", f"unknown device {self.device!r}", f"use one of {', '.join(DEVICES)}")
        if self.precision not in PRECISIONS:
            raise UserInputError("precision", f"unknown precision {self.precision!r}",
                                 f"use one of {', '.join(PRECISIONS)}")
        if self.parallelism not in PARALLELISMS:
            raise UserInputError("parallelism", f"unknown parallelism {self.parallelism!r}",
                                 f"use one of {', '.join(PARALLELISMS)}")
        if self.workers < 1:
            raise UserInputError("workers", f"must be at least 1, got {self.workers}", "use 1 or more workers")
        sequences = self.batch_size()
        if sequences % self.workers:
            raise UserInputError("workers", f"{sequences} sequences per step do not split evenly over "
                                 f"{self.workers} workers", "make batch_tokens / seq_len a multiple of the workers")
        if self.micro_batch_tokens is not None:
            per_worker = sequences // self.workers
            micro = self.micro_batch_tokens // self.model.seq_len
            if micro < 1 or self.micro_batch_tokens % self.model.seq_len:
                raise UserInputError("micro_batch_tokens", f"{self.micro_batch_tokens} is not a positive multiple "
                                     f"of seq_len {self.model.seq_len}", "use whole sequences per micro-batch")
            if per_worker % micro:
                raise UserInputError("micro_batch_tokens", f"{micro} sequences per micro-batch do not divide the "
                                     f"{per_worker} sequences each worker takes per step",
                                     f"use a divisor of {per_worker} sequences ({per_worker * self.model.seq_len} "
                                     "tokens)")
        if self.peak_flops_per_second is not None and self.peak_flops_per_second <= 0:
            raise UserInputError("peak_flops_per_second", "must be positive", "give the device's peak, e.g. 989e12")

    def batch_size(self) -> int:
        """Sequences per optimiser step, over all workers."""
        return self.batch_tokens // self.model.seq_len

    def micro_batch_size(self) -> int:
        """Sequences per forward/backward on one worker."""
        share = self.batch_size() // self.workers
        return share if self.micro_batch_tokens is None else self.micro_batch_tokens // self.model.seq_len

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrialResult:
    status: str
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    checkpoint_dir: str | None
