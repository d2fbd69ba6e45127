"""The evaluation's diagnostics of where Memory Caching helps: the validation loss per position
bucket and, for gated MC models, the gate weight on the online memory per layer and segment.

Real tiny models on the real built-in corpus. At initialisation the gate projection is close to
zero, so a token in segment s (reading s caches) gives its online memory the rule's share
e^b / (e^b + s), b = the online-gate bias: the recorded mass must show that value.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from scaling.data.corpus import CorpusSpec
from scaling.models import LanguageModel, ModelConfig
from scaling.models.diagnostics import gated_mixers
from scaling.train import TrialConfig, run_trial
from scaling.train.batches import trial_corpus
from scaling.train.evaluate import evaluate, position_buckets

CORPUS = CorpusSpec(max_bytes=400_000)
CPU = torch.device("cpu")
SEQ_LEN, SEGMENT, WINDOWS = 64, 16, 5  # 4 segments; 5 windows split unevenly by 2-window micro-batches
# gate_proj starts at a small random init, so the cached logits are near, not at, zero (measured
# deviation from the rule: < 0.005 at these sizes)
INIT_TOLERANCE = 0.02


def _model(mixer: str = "swla", caching: str = "grm", **extra) -> ModelConfig:
    fields = dict(vocab_size=256, d_model=64, n_heads=2, n_layers=2, mixer=mixer, caching=caching, seq_len=SEQ_LEN,
                  chunk_len=16)
    if caching != "none":
        fields["segment_len"] = SEGMENT
    fields.update(extra)
    return ModelConfig(**fields)


def _config(model: ModelConfig, **extra) -> TrialConfig:
    fields = dict(model=model, corpus=CORPUS, tokens=4 * 256, batch_tokens=4 * SEQ_LEN, eval_windows=WINDOWS,
                  threads=1, seed=2)
    fields.update(extra)
    return TrialConfig(**fields)


def _evaluate(cfg: TrialConfig, wrap=None) -> dict[str, float]:  # noqa: ANN001 - a module wrapper
    torch.manual_seed(cfg.seed)
    model = LanguageModel(cfg.model)
    return evaluate(wrap(model) if wrap else model, cfg, trial_corpus(cfg), CPU)


@pytest.fixture(scope="module")
def grm() -> tuple[TrialConfig, dict[str, float]]:
    cfg = _config(_model())
    return cfg, _evaluate(cfg)


def _gate_keys(metrics: dict[str, float]) -> set[str]:
    return {k for k in metrics if k.startswith("online_gate_")}


def test_gate_mass_is_recorded_per_layer_and_segment_at_the_rule_value(grm):
    cfg, metrics = grm
    n_seg, layers = cfg.model.n_segments(), cfg.model.n_layers
    expected = ({f"online_gate_l{l}" for l in range(layers)} | {f"online_gate_seg{s}" for s in range(n_seg)}
                | {f"online_gate_l{l}_seg{s}" for l in range(layers) for s in range(n_seg)})
    assert _gate_keys(metrics) == expected
    assert all(0.0 <= metrics[k] <= 1.0 for k in expected)
    share = math.exp(cfg.model.online_gate_bias)
    for s in range(n_seg):
        rule = share / (share + s)  # segment s reads s caches
        assert metrics[f"online_gate_seg{s}"] == pytest.approx(rule, abs=INIT_TOLERANCE), s
        for layer in range(layers):
            assert metrics[f"online_gate_l{layer}_seg{s}"] == pytest.approx(rule, abs=INIT_TOLERANCE), (layer, s)
    assert metrics["online_gate_seg0"] == pytest.approx(1.0, abs=1e-6)  # nothing cached yet: all online
    # a layer's mass is its mean over every token: equal segments weigh equally
    for layer in range(layers):
        mean = sum(metrics[f"online_gate_l{layer}_seg{s}"] for s in range(n_seg)) / n_seg
        assert metrics[f"online_gate_l{layer}"] == pytest.approx(mean, rel=1e-9)


def test_the_plain_softmax_gives_the_online_memory_one_share_in_s_plus_one(grm):
    cfg, _ = grm
    metrics = _evaluate(dataclasses.replace(cfg, model=cfg.model.replace(online_gate_init=0.0)))
    for s in range(cfg.model.n_segments()):
        assert metrics[f"online_gate_seg{s}"] == pytest.approx(1.0 / (s + 1), abs=INIT_TOLERANCE), s


def test_bucket_losses_average_to_the_validation_loss(grm):
    cfg, metrics = grm
    buckets = [metrics[f"val_loss_pos{i}"] for i in range(cfg.eval_position_buckets)]
    assert f"val_loss_pos{cfg.eval_position_buckets}" not in metrics
    assert SEQ_LEN % cfg.eval_position_buckets == 0  # equal buckets
    assert sum(buckets) / len(buckets) == pytest.approx(metrics["val_loss"], rel=1e-9)
    assert len(set(buckets)) == len(buckets)  # each bucket is its own measurement


def test_unequal_buckets_follow_the_documented_rule():
    index = position_buckets(10, 4)
    assert index.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]  # p * 4 // 10
    cfg = _config(_model("attention", "none"), eval_position_buckets=3)  # 64 = 21 + 21 + 22 positions
    metrics = _evaluate(cfg)
    sizes = torch.bincount(position_buckets(SEQ_LEN, 3)).tolist()
    weighted = sum(metrics[f"val_loss_pos{i}"] * n for i, n in enumerate(sizes)) / SEQ_LEN
    assert weighted == pytest.approx(metrics["val_loss"], rel=1e-9)


def test_a_transformer_gets_bucket_losses_and_no_gate_metrics():
    metrics = _evaluate(_config(_model("attention", "none")))
    assert {f"val_loss_pos{i}" for i in range(8)} <= set(metrics)
    assert not _gate_keys(metrics)


def test_ungated_caching_records_no_gates():
    metrics = _evaluate(_config(_model("swla", "residual")))
    assert "val_loss_pos0" in metrics and not _gate_keys(metrics)


def test_micro_batches_of_unequal_size_give_the_same_numbers(grm):
    cfg, whole = grm
    split = _evaluate(dataclasses.replace(cfg, micro_batch_tokens=2 * SEQ_LEN))  # chunks of 2, 2 and 1 windows
    assert set(split) == set(whole)
    for key, value in whole.items():
        assert split[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_bf16_gates_are_read_as_floats_and_agree_with_fp32(grm):
    cfg, fp32 = grm
    bf16 = _evaluate(dataclasses.replace(cfg, precision="bf16"))
    assert set(bf16) == set(fp32)
    for key in _gate_keys(fp32):
        assert isinstance(bf16[key], float) and 0.0 <= bf16[key] <= 1.0
        assert bf16[key] == pytest.approx(fp32[key], abs=0.01), key  # bf16 keeps ~3 significant digits
    for i in range(cfg.eval_position_buckets):
        assert bf16[f"val_loss_pos{i}"] == pytest.approx(fp32[f"val_loss_pos{i}"], rel=0.01)


def _checkpointed(model: LanguageModel) -> LanguageModel:
    from scaling.train.loop import _checkpoint_blocks

    _checkpoint_blocks(model)
    return model


def test_gates_are_found_through_the_wrappers_training_puts_around_the_model(grm, tmp_path):
    """Activation checkpointing wraps each block, DDP and torch.compile wrap the whole model: each
    registers the inner module as a submodule, so the evaluation finds every gated mixer."""
    cfg, plain = grm
    assert _evaluate(cfg, _checkpointed) == pytest.approx(plain, rel=1e-6)
    torch.manual_seed(cfg.seed)
    model = LanguageModel(cfg.model)
    assert gated_mixers(torch.compile(model)) == gated_mixers(model) and len(gated_mixers(model)) == 2
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        assert _evaluate(cfg, DistributedDataParallel) == pytest.approx(plain, rel=1e-6)
    finally:
        dist.destroy_process_group()


def test_gates_are_recorded_only_during_evaluation_and_every_eval_reports_them():
    cfg = _config(_model(), tokens=6 * 256, eval_every_steps=3)
    torch.manual_seed(cfg.seed)
    model = LanguageModel(cfg.model)
    evaluate(model, cfg, trial_corpus(cfg), CPU)
    assert all(m.online_gate_sink is None for m in gated_mixers(model))  # training steps record nothing
    result = run_trial(cfg)
    assert [h["step"] for h in result.history] == [3, 6]
    for report in result.history:
        assert {"val_loss_pos0", "val_loss_pos7", "online_gate_seg3", "online_gate_l1_seg2"} <= set(report)
    assert result.history[-1]["online_gate_seg3"] != result.history[0]["online_gate_seg3"]  # it trains


def test_a_sequence_shorter_than_the_buckets_gets_one_bucket_per_position():
    cfg = _config(_model("attention", "none", seq_len=4, chunk_len=4), batch_tokens=16, tokens=64)
    metrics = _evaluate(cfg)
    buckets = sorted(k for k in metrics if k.startswith("val_loss_pos"))
    assert buckets == [f"val_loss_pos{i}" for i in range(4)]
    assert sum(metrics[k] for k in buckets) / 4 == pytest.approx(metrics["val_loss"], rel=1e-9)
