"""The trial's data: its corpus, the batch of every step, and a prefetcher that overlaps them.

A step's global batch is a pure function of (seed, step) (`scaling.data.batches`), so worker r
of W takes rows [r B/W, (r+1) B/W) of the same batch: W workers see exactly the sequences one
worker would, and a resumed run sees exactly the batches the uninterrupted run saw.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import torch

from scaling.data.batches import sample_batch
from scaling.data.corpus import TokenCorpus, load_corpus
from scaling.data.recall import mqar_batch, needle_examples
from scaling.errors import UserInputError
from scaling.train.config import TrialConfig

Batch = tuple[torch.Tensor, torch.Tensor]  # (inputs, targets), each (sequences, seq_len) int64
MQAR_TRAIN_SEED_STRIDE = 1_000_003


def trial_corpus(config: TrialConfig) -> TokenCorpus | None:
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
    corpus = trial_corpus(config)
    if corpus is not None and config.needle_lengths:
        needle_examples(corpus.val, corpus.tokenizer, config.needle_lengths, config.needle_depths,
                        seed=config.seed, kind=config.needle_kind, seq_len=cfg.seq_len)
    if config.mqar is not None:
        mqar_batch(config.mqar, 1, 0, cfg.vocab_size)


def worker_batch(config: TrialConfig, corpus: TokenCorpus | None, step: int, rank: int = 0) -> Batch:
    """This worker's share of step `step`'s global batch, on the CPU."""
    sequences = config.batch_size()
    if config.task == "mqar":
        assert config.mqar is not None
        inputs, targets = mqar_batch(config.mqar, sequences, config.seed * MQAR_TRAIN_SEED_STRIDE + step,
                                     config.model.vocab_size)
    else:
        assert corpus is not None
        batch = sample_batch(corpus.train, config.model.seq_len, sequences, config.seed, step)
        inputs, targets = batch[:, :-1], batch[:, 1:]
    share = sequences // config.workers
    rows = slice(rank * share, (rank + 1) * share)
    return inputs[rows].contiguous(), targets[rows].contiguous()


class BatchPrefetcher:
    """Prepares step s+1's batch on a background thread while step s trains.

    On CUDA the batch is gathered into pinned host memory and copied with `non_blocking=True`,
    so the copy overlaps compute; on the CPU the batch is used where it is made. Batches depend
    only on the step, so prefetching never changes what a step sees.
    """

    def __init__(self, make: Callable[[int], Batch], device: torch.device, total_steps: int) -> None:
        self.make, self.device, self.total_steps = make, device, total_steps
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mcscale-batches")
        self.pending: dict[int, Future[Batch]] = {}

    def _host(self, step: int) -> Batch:
        inputs, targets = self.make(step)
        if self.device.type == "cuda":
            inputs, targets = inputs.pin_memory(), targets.pin_memory()
        return inputs, targets

    def get(self, step: int) -> Batch:
        future = self.pending.pop(step, None)
        inputs, targets = future.result() if future is not None else self._host(step)
        if step + 1 < self.total_steps:
            self.pending[step + 1] = self.pool.submit(self._host, step + 1)
        if self.device.type != "cpu":
            inputs = inputs.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
        return inputs, targets

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
