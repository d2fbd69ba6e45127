"""Shared fixtures: every (mixer, memory) pair and strategy, small shapes for fast CPU tests."""

from __future__ import annotations

import pytest
import torch

from scaling.models import ModelConfig
from scaling.models.model import build_mixer

RECURRENT = [("linear", "matrix"), ("swla", "matrix"), ("dla", "matrix"), ("dla", "mlp"), ("titans", "mlp")]
STRATEGIES = ["none", "residual", "grm", "soup", "ssc"]


def small_config(mixer: str, memory: str = "", caching: str = "none", **overrides) -> ModelConfig:
    fields = dict(vocab_size=64, d_model=32, n_heads=2, n_layers=2, mixer=mixer, memory=memory, caching=caching,
                  segment_len=8 if caching != "none" else None, seq_len=64, chunk_len=4, top_k=2)
    fields.update(overrides)
    return ModelConfig(**fields)


def spread_mixer(cfg: ModelConfig, seed: int = 0) -> torch.nn.Module:
    """A mixer with large random projections, so every path contributes visibly to the output."""
    torch.manual_seed(seed)
    mixer = build_mixer(cfg).double()
    with torch.no_grad():
        for name, p in mixer.named_parameters():
            if p.dim() == 2 and "gates" not in name:
                torch.nn.init.normal_(p, std=0.3)
    return mixer


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
