"""Causal multi-head softmax attention with RoPE (the Transformer++ baseline mixer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scaling.models.config import ModelConfig
from scaling.models.layers import apply_rotary, rotary_tables


class AttentionMixer(nn.Module):
    """Fused QKV projection, rotary positions, causal scaled-dot-product attention, output projection."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.head_dim
        self.rope_theta = cfg.rope_theta
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, L, D) -> rotated q, k and v, each (B, H, L, d_h)."""
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        cos, sin = rotary_tables(length, self.head_dim, self.rope_theta, x.device, x.dtype)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.heads(x)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(x.shape))

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Token-by-token softmax attention (explicit loop over query positions) for tests."""
        q, k, v = self.heads(x)
        outputs = []
        for t in range(x.shape[1]):
            scores = torch.einsum("bhd,bhsd->bhs", q[:, :, t], k[:, :, : t + 1]) / self.head_dim ** 0.5
            outputs.append(torch.einsum("bhs,bhsd->bhd", scores.softmax(-1), v[:, :, : t + 1]))
        y = torch.stack(outputs, dim=2)
        return self.out(y.transpose(1, 2).reshape(x.shape))
