"""Evaluation on the trial's device: validation loss and bits per byte, MQAR, needle accuracy.

Besides the headline loss, the validation windows give two diagnostics in the same forward passes
(issue 21, "where Memory Caching helps"):

- `val_loss_pos{i}`: the loss (nats/token) of the input positions in equal bucket i of the window
  (position p falls in bucket p * buckets // seq_len, `TrialConfig.eval_position_buckets`). Every
  architecture gets the same buckets, so an MC model minus its base reads bucket by bucket: before
  the first segment ends MC reads only its online memory, so a gap there comes from the weights
  the two share, not from the caches.
- for a gated MC model (GRM, Soup, SSC), the mean gate weight on the online memory:
  `online_gate_l{l}` per gated layer l (0-based among the gated mixers, which is the block index
  in a stack of one mixer kind; mean over every token, batch and head), `online_gate_l{l}_seg{s}`
  per layer and segment index s, and `online_gate_seg{s}` the mean over layers per segment. The
  gates are recorded only inside `evaluate` (`record_online_gates`), never in a training step.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from scaling.data.batches import eval_windows
from scaling.data.corpus import TokenCorpus
from scaling.data.recall import mqar_accuracy, mqar_batch, needle_examples
from scaling.models.diagnostics import online_gate_mass, record_online_gates
from scaling.train.config import TrialConfig
from scaling.train.device import autocast

MQAR_EVAL_SEED = 1_000_003  # evaluation batches never overlap the training stream's seeds
POSITION_LOSS_PREFIX = "val_loss_pos"
ONLINE_GATE_PREFIX = "online_gate_"


def position_buckets(seq_len: int, buckets: int) -> torch.Tensor:
    """(seq_len,) bucket index of each input position: p * buckets // seq_len (equal buckets; when
    seq_len is not a multiple of buckets their sizes differ by one, e.g. 10 positions in 4: 3, 2, 3, 2)."""
    return torch.arange(seq_len) * buckets // seq_len


def _position_losses(nats_per_position: torch.Tensor, windows: int, buckets: int) -> dict[str, float]:
    """`val_loss_pos{i}` from the summed nats of each input position over `windows` windows."""
    seq_len = nats_per_position.numel()
    index = position_buckets(seq_len, buckets).to(nats_per_position.device)
    nats = torch.zeros(buckets, dtype=torch.float64, device=nats_per_position.device).index_add_(
        0, index, nats_per_position)
    counts = torch.bincount(index, minlength=buckets).to(torch.float64) * windows
    return {f"{POSITION_LOSS_PREFIX}{i}": float(v) for i, v in enumerate((nats / counts).tolist())}


def _gate_metrics(mass_sums: dict[int, list[float]], windows: int, bounds: list[int]) -> dict[str, float]:
    """The online-gate metrics from per-layer, per-segment window-weighted sums of mean gate mass."""
    out: dict[str, float] = {}
    lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    per_layer = {layer: [v / windows for v in sums] for layer, sums in sorted(mass_sums.items())}
    for layer, segments in per_layer.items():
        out[f"{ONLINE_GATE_PREFIX}l{layer}"] = sum(m * n for m, n in zip(segments, lengths)) / sum(lengths)
        for s, m in enumerate(segments):
            out[f"{ONLINE_GATE_PREFIX}l{layer}_seg{s}"] = m
    for s in range(len(lengths)):
        out[f"{ONLINE_GATE_PREFIX}seg{s}"] = sum(seg[s] for seg in per_layer.values()) / len(per_layer)
    return out


@torch.no_grad()
def evaluate(model: torch.nn.Module, cfg: TrialConfig, corpus: TokenCorpus | None,
             device: torch.device) -> dict[str, float]:
    """Validation loss (nats/token) and bits per byte, its position buckets and (gated MC) the online
    gate mass (see the module docstring), MQAR accuracy, needle accuracy per length.

    Logits are scored in fp32 whatever the precision, so bf16 and fp32 runs are comparable. `model`
    is the module itself or any wrapper that registers it as a submodule (DDP, torch.compile,
    checkpoint wrappers): the gated mixers are found through `model.modules()`.
    """
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}

    def logits_of(tokens: torch.Tensor) -> torch.Tensor:
        with autocast(device, cfg.precision):
            return model(tokens.to(device)).float()

    if corpus is not None and len(corpus.val) > cfg.model.seq_len:
        out.update(_validation(model, cfg, corpus, device, logits_of))
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


def _validation(model: torch.nn.Module, cfg: TrialConfig, corpus: TokenCorpus, device: torch.device,
                logits_of: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
    """val_loss, val_bpb, the loss per position bucket and (gated MC) the online gate mass, all
    from one forward pass per chunk of validation windows."""
    seq_len = cfg.model.seq_len
    windows = eval_windows(corpus.val, seq_len, cfg.eval_windows)
    bounds = cfg.model.segment_bounds(seq_len)
    nats_per_position = torch.zeros(seq_len, dtype=torch.float64, device=device)
    n_windows, n_bytes = 0, 0
    mass_sums: dict[int, list[float]] = {}
    with record_online_gates(model) as gates:
        for chunk in windows.split(max(1, cfg.micro_batch_size()), dim=0):
            logits = logits_of(chunk[:, :-1])
            targets = chunk[:, 1:]
            nats = F.cross_entropy(logits.flatten(0, 1), targets.flatten().to(device), reduction="none")
            nats_per_position += nats.view(targets.shape).to(torch.float64).sum(0)
            n_windows += targets.shape[0]
            n_bytes += int(corpus.tokenizer.token_bytes[targets.numpy()].sum())
            # per chunk, so the recorded (B, H, L) gates never pile up over the windows
            for layer, segments in online_gate_mass(gates, bounds, seq_len).items():
                sums = mass_sums.setdefault(layer, [0.0] * len(segments))
                mass_sums[layer] = [a + m * targets.shape[0] for a, m in zip(sums, segments)]
            for tensors in gates.values():
                tensors.clear()
    total_nats = float(nats_per_position.sum())
    out = {"val_loss": total_nats / (n_windows * seq_len),
           "val_bpb": total_nats / math.log(2) / max(1, n_bytes)}
    out.update(_position_losses(nats_per_position, n_windows, min(cfg.eval_position_buckets, seq_len)))
    if mass_sums:
        out.update(_gate_metrics(mass_sums, n_windows, bounds))
    return out
