"""Changing tokens after position t must leave every output at positions <= t unchanged."""

import pytest
import torch

from scaling.models import LanguageModel

from .conftest import RECURRENT, STRATEGIES, small_config

CASES = [("attention", "kv", "none", "checkpoint", "constant")] + [
    (m, mem, s, mode, seg) for m, mem in RECURRENT for s in STRATEGIES
    for mode in ("checkpoint", "independent") for seg in ("constant", "log")
    if s != "none" or (mode, seg) == ("checkpoint", "constant")]


@pytest.mark.parametrize("mixer, memory, caching, mode, segmentation", CASES)
def test_outputs_up_to_t_ignore_the_future(mixer, memory, caching, mode, segmentation):
    cfg = small_config(mixer, memory, caching, segment_mode=mode, segmentation=segmentation)
    model = LanguageModel(cfg).double()
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))
    for t in (0, 13, 37, cfg.seq_len - 2):  # inside chunks and segments, and at the edges
        changed = tokens.clone()
        changed[:, t + 1:] = torch.randint(0, cfg.vocab_size, changed[:, t + 1:].shape)
        assert not torch.equal(changed, tokens)
        with torch.no_grad():
            a, b = model(tokens), model(changed)
        torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-10)
        assert (a[:, t + 1:] - b[:, t + 1:]).abs().max() > 1e-6  # the future does change later outputs
