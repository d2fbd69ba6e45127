"""The trainer's eager fallback covers a failing backward compile, not only a failing forward one.

torch.compile lowers the backward lazily, at the first .backward(), outside the trainer's
try/except; the trainer now lowers it with the forward. The failure is injected with a real
AOTAutograd backend whose backward compiler raises (inductor's own failures cannot be provoked
on purpose), given to the real torch.compile.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch._dynamo.backends.common import aot_autograd

from scaling.data.corpus import CorpusSpec
from scaling.models import ModelConfig
from scaling.models import LanguageModel
from scaling.train import TrialConfig
from scaling.train import loop
from scaling.train.distributed import WorkerGroup


def _fails_to_compile_backward(gm: torch.fx.GraphModule, example_inputs) -> None:
    raise RuntimeError("backward lowering failed (injected)")


FAILING_BACKWARD = aot_autograd(fw_compiler=lambda gm, example_inputs: gm, bw_compiler=_fails_to_compile_backward)


def test_a_backward_compile_failure_falls_back_to_eager(monkeypatch):
    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=FAILING_BACKWARD))
    cfg = ModelConfig(vocab_size=64, d_model=32, n_heads=2, n_layers=1, mixer="attention", seq_len=16)
    model = LanguageModel(cfg)
    config = TrialConfig(model=cfg, corpus=CorpusSpec(max_bytes=10_000), tokens=64, batch_tokens=32, compile=True)
    trainer = loop._Trainer(model, config, WorkerGroup(), torch.device("cpu"))
    tokens = torch.randint(0, 64, (2, 16))
    with pytest.warns(UserWarning, match="injected"):
        logits = trainer(tokens)
    assert trainer.compiled and trainer.compile_failed and trainer.forward is trainer.module
    logits.float().logsumexp(-1).mean().backward()  # eager: the graph that failed to compile is not used
    assert all(p.grad is not None for p in model.parameters())
    torch._dynamo.reset()
