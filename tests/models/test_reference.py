"""The chunk-parallel model equals the slow token-by-token reference, for every mixer and mode."""

import pytest
import torch

from scaling.models import LanguageModel

from .conftest import RECURRENT, STRATEGIES, small_config, spread_mixer

CASES = [(m, mem, s, mode, seg) for m, mem in RECURRENT for s in STRATEGIES
         for mode in ("checkpoint", "independent") for seg in ("constant", "log")
         if s != "none" or seg == "constant"]


@pytest.mark.parametrize("mixer, memory, caching, mode, segmentation", CASES)
def test_chunk_parallel_equals_token_by_token(mixer, memory, caching, mode, segmentation):
    cfg = small_config(mixer, memory, caching, segment_mode=mode, segmentation=segmentation)
    mixer_module = spread_mixer(cfg)
    x = torch.randn(2, cfg.seq_len, cfg.d_model, dtype=torch.float64)
    fast = mixer_module(x)
    slow = mixer_module.reference_forward(x)
    assert fast.abs().mean() > 1e-3
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-9)


def test_attention_equals_token_by_token_softmax():
    cfg = small_config("attention")
    model = LanguageModel(cfg).double()
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))
    torch.testing.assert_close(model(tokens), model(tokens, reference=True), rtol=1e-9, atol=1e-9)


def test_whole_model_reference_path_with_chunk_not_dividing_segment_count():
    """Several chunks per segment and a chunk as long as the segment give the same model."""
    for chunk in (2, 8):
        cfg = small_config("titans", "mlp", "grm", chunk_len=chunk)
        model = LanguageModel(cfg).double()
        tokens = torch.randint(0, cfg.vocab_size, (1, cfg.seq_len))
        torch.testing.assert_close(model(tokens), model(tokens, reference=True), rtol=1e-9, atol=1e-9)
