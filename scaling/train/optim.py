"""AdamW and its schedule: linear warmup, cosine decay to a floor."""

from __future__ import annotations

import math

import torch

from scaling.train.config import TrialConfig


def lr_at(step: int, total_steps: int, cfg: TrialConfig) -> float:
    """Linear warmup, then cosine decay to lr * min_lr_ratio at the last step."""
    warmup = max(1, int(round(cfg.warmup_fraction * total_steps))) if cfg.warmup_fraction > 0 else 0
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(model: torch.nn.Module, cfg: TrialConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not norms, biases, gate biases, memory inits).

    On CUDA the fused kernel (one launch for every parameter) replaces the per-tensor loop;
    its update is the same AdamW to rounding.
    """
    decay = [p for _, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for _, p in model.named_parameters() if p.dim() != 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=device.type == "cuda")
