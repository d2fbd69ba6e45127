"""The language model: embedding, pre-norm blocks (mixer + SwiGLU), final norm, tied LM head."""

from __future__ import annotations

import math

import torch
from torch import nn

from scaling.models.config import ModelConfig
from scaling.models.layers import RMSNorm, SwiGLU
from scaling.models.mixers.attention import AttentionMixer
from scaling.models.mixers.recurrent import RecurrentMixer


def build_mixer(cfg: ModelConfig) -> nn.Module:
    return AttentionMixer(cfg) if cfg.mixer == "attention" else RecurrentMixer(cfg)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.mixer_norm = RMSNorm(cfg.d_model)
        self.mixer = build_mixer(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model)
        self.mlp = SwiGLU(cfg.d_model, cfg.mlp_hidden)

    def forward(self, x: torch.Tensor, reference: bool = False) -> torch.Tensor:
        h = self.mixer_norm(x)
        x = x + (self.mixer.reference_forward(h) if reference else self.mixer(h))
        return x + self.mlp(self.mlp_norm(x))


class LanguageModel(nn.Module):
    """Decoder-only LM. The LM head shares the embedding matrix, so `embedding` parameters are
    vocab_size x d_model and everything else is non-embedding."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.final_norm = RMSNorm(cfg.d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 style: N(0, 0.02), residual output projections scaled by 1/sqrt(2 n_layers)."""
        for name, p in self.named_parameters():
            if p.dim() == 2 and "gates" not in name:
                std = 0.02 / math.sqrt(2 * self.cfg.n_layers) if name.endswith(("out.weight", "w_down.weight")) else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, tokens: torch.Tensor, reference: bool = False) -> torch.Tensor:
        """tokens (B, L) -> logits (B, L, vocab). `reference=True` uses the token-by-token mixers."""
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, reference=reference)
        return torch.nn.functional.linear(self.final_norm(x), self.embed.weight)

    def param_counts(self) -> dict[str, int]:
        embedding = self.embed.weight.numel()
        total = sum(p.numel() for p in self.parameters())
        return {"params_total": total, "params_embedding": embedding, "params_nonembed": total - embedding}
