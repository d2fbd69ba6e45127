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
        # One draw from the global RNG seeds the whole initialisation, before any module is built:
        # construction consumes a different amount of randomness per architecture (MC adds gate_proj).
        init_seed = int(torch.randint(0, 2**62, (), device="cpu").item())
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.final_norm = RMSNorm(cfg.d_model)
        self.reset_parameters(init_seed)

    def reset_parameters(self, seed: int) -> None:
        """GPT-2 style: N(0, 0.02), residual output projections scaled by 1/sqrt(2 n_layers); the
        data-dependent gates keep nn.Linear's uniform init, an MLP memory's initial weights
        N(0, 1/fan_in).

        Paired by construction: the parameters a base memory shares with its Memory Caching variant
        are drawn first, in the same order, from one generator, and the MC-only ones (gate_proj)
        last - so swla and swla+grm built under the same seed start from identical shared weights,
        and a paired comparison measures the caching, not a different draw.
        """
        generator = torch.Generator(device="cpu").manual_seed(seed)
        named = list(self.named_parameters())
        ordered = [(n, p) for n, p in named if "gate_proj" not in n] + [(n, p) for n, p in named if "gate_proj" in n]
        for name, p in ordered:
            if p.device.type == "meta":
                continue
            with torch.no_grad():
                if "gates" in name:
                    if p.dim() == 2:
                        nn.init.kaiming_uniform_(p, a=math.sqrt(5), generator=generator)
                elif p.dim() == 2:
                    std = 0.02 / math.sqrt(2 * self.cfg.n_layers) if name.endswith(("out.weight", "w_down.weight")) else 0.02
                    nn.init.normal_(p, mean=0.0, std=std, generator=generator)
                elif name.endswith(("w1_init", "w2_init")):
                    nn.init.normal_(p, mean=0.0, std=p.shape[-1] ** -0.5, generator=generator)

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
