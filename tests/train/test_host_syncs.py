"""No host-device round trip inside a training step (issue: ~7 blocking copies per layer per forward).

On CUDA each counted op stalls the host until the GPU drains its queue; `HostSyncCounter` sees the
same ops on the CPU, so the step can be held to zero here. The counter itself is tested first:
a counter that never counts would pass the step test vacuously.
"""

from __future__ import annotations

import math

import pytest
import torch

from scaling.data.corpus import CorpusSpec
from scaling.models import LanguageModel
from scaling.train import TrialConfig, run_trial
from scaling.train.distributed import WorkerGroup
from scaling.train.loop import HOST_SYNC_EVERY_STEPS, _Trainer, train_step
from scaling.train.optim import build_optimizer
from scaling.train.host_syncs import HostSyncCounter
from tests.train.test_trial import tiny

CORPUS = CorpusSpec(max_bytes=2_000_000)


def test_the_counter_sees_each_kind_of_blocking_op():
    x = torch.randn(4, 3)
    with HostSyncCounter() as syncs:
        torch.tensor([1, 2, 3])  # host data -> tensor
        x.sum().item()
        x[x > 0]  # data-dependent size
        x[[0, 2]]  # a Python-list index is a host tensor first
        torch.repeat_interleave(torch.arange(3), torch.arange(3))
        x.to(torch.float64)  # same device: not a transfer
        x[:, 1:] * 2  # plain device work: nothing
    assert syncs.ops["aten::lift_fresh"] == 2
    assert syncs.ops["aten::_local_scalar_dense"] == 1
    assert syncs.ops["aten::index"] == 1
    assert syncs.ops["aten::repeat_interleave"] == 1
    assert syncs.count == 5


@pytest.mark.parametrize("arch", [("attention", "", "none"), ("swla", "matrix", "grm"), ("swla", "matrix", "ssc"),
                                  ("swla", "matrix", "residual"), ("titans", "mlp", "soup"), ("dla", "mlp", "ssc")],
                         ids=lambda a: "+".join(p for p in (a[0], a[2]) if p != "none"))
def test_a_training_step_makes_no_host_round_trip(arch):
    cfg = TrialConfig(model=tiny(*arch), corpus=CORPUS, tokens=4 * 512, batch_tokens=512, threads=1)
    device = torch.device("cpu")
    model = LanguageModel(cfg.model)
    trainer = _Trainer(model, cfg, WorkerGroup(), device)
    optimizer = build_optimizer(model, cfg, device)
    for group in optimizer.param_groups:  # the fused AdamW the trainer uses on CUDA (CPU's loop reads step.item())
        group["fused"] = True
    inputs = torch.randint(0, cfg.model.vocab_size, (cfg.batch_size(), cfg.model.seq_len))
    targets = torch.randint(0, cfg.model.vocab_size, (cfg.batch_size(), cfg.model.seq_len))
    train_step(trainer, optimizer, cfg, inputs, targets, device, 1e-3)  # layouts are built (and cached) once
    with HostSyncCounter() as syncs:
        loss, grad_norm = train_step(trainer, optimizer, cfg, inputs, targets, device, 1e-3)
    assert syncs.count == 0, dict(syncs.ops)
    assert loss.dim() == 0 and grad_norm.dim() == 0 and math.isfinite(float(loss))


def test_losses_read_in_batches_still_report_every_step():
    steps = 2 * HOST_SYNC_EVERY_STEPS + 3
    seen: list[int] = []
    cfg = TrialConfig(model=tiny("attention"), corpus=CORPUS, tokens=steps * 512, batch_tokens=512, threads=1,
                      eval_windows=1, eval_every_steps=1000)
    result = run_trial(cfg, on_step=lambda m: seen.append(m["step"]))
    assert seen == list(range(1, steps + 1))
    assert result.metrics["step"] == steps and result.metrics["train_seconds"] > 0
