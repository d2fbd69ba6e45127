"""Evaluation on the trial's device: validation loss and bits per byte, MQAR, needle accuracy."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from scaling.data.batches import eval_windows
from scaling.data.corpus import TokenCorpus
from scaling.data.recall import mqar_accuracy, mqar_batch, needle_examples
from scaling.train.config import TrialConfig
from scaling.train.device import autocast

MQAR_EVAL_SEED = 1_000_003  # evaluation batches never overlap the training stream's seeds


@torch.no_grad()
def evaluate(model: torch.nn.Module, cfg: TrialConfig, corpus: TokenCorpus | None,
             device: torch.device) -> dict[str, float]:
    """Validation loss (nats/token) and bits per byte, MQAR accuracy, needle accuracy per length.

    Logits are scored in fp32 whatever the precision, so bf16 and fp32 runs are comparable.
    """
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}

    def logits_of(tokens: torch.Tensor) -> torch.Tensor:
        with autocast(device, cfg.precision):
            return model(tokens.to(device)).float()

    if corpus is not None and len(corpus.val) > cfg.model.seq_len:
        windows = eval_windows(corpus.val, cfg.model.seq_len, cfg.eval_windows)
        nats, n_tokens, n_bytes = 0.0, 0, 0
        for chunk in windows.split(max(1, cfg.micro_batch_size()), dim=0):
            logits = logits_of(chunk[:, :-1])
            targets = chunk[:, 1:]
            nats += F.cross_entropy(logits.flatten(0, 1), targets.flatten().to(device), reduction="sum").item()
            n_tokens += targets.numel()
            n_bytes += int(corpus.tokenizer.token_bytes[targets.numpy()].sum())
        out["val_loss"] = nats / n_tokens
        out["val_bpb"] = nats / math.log(2) / max(1, n_bytes)
    if cfg.mqar is not None:
        inputs, targets = mqar_batch(cfg.mqar, cfg.mqar_eval_batch, MQAR_EVAL_SEED + cfg.seed, cfg.model.vocab_size)
        out["mqar_acc"] = mqar_accuracy(logits_of(inputs).cpu(), targets)
    if cfg.needle_lengths and corpus is not None:
        examples = needle_examples(corpus.val, corpus.tokenizer, cfg.needle_lengths, cfg.needle_depths,
                                   seed=cfg.seed, kind=cfg.needle_kind, seq_len=cfg.model.seq_len)
        per_length: dict[int, list[float]] = {}
        for ex in examples:
            logits = logits_of(ex.tokens[None])[0].cpu()  # full length keeps segment/chunk alignment; causal
            answer = ex.tokens[ex.answer_start:]
            predicted = logits[ex.answer_start - 1: ex.tokens.numel() - 1].argmax(-1)
            per_length.setdefault(ex.length, []).append(float(torch.equal(predicted, answer)))
        for length, hits in sorted(per_length.items()):
            out[f"needle_acc_{length}"] = float(np.mean(hits))
    model.train(was_training)
    return out
