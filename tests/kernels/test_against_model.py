"""The references against today's model: scaling.models.caching's gather path, used read-only.

A real mixer produces queries, cached states and gates; the ops must give the same cached reads
(forward and gradients) as `cached_reads`, `ssc_reads` and `soup_read` for constant and log
segments, checkpoint and independent modes, matrix and MLP memories.
"""

from __future__ import annotations

import pytest
import torch

from kernels import gated_cached_read, mlp_cached_read, ssc_cached_read
from scaling.models import ModelConfig
from scaling.models import caching
from scaling.models.mixers.recurrent import segment_plan
from scaling.models.model import build_mixer

LENGTH = 48


def mixer_inputs(mixer_name: str, memory: str, strategy: str, segmentation: str, mode: str):
    cfg = ModelConfig(vocab_size=64, d_model=32, n_heads=2, n_layers=1, mixer=mixer_name, memory=memory,
                      caching=strategy, segment_len=8, segmentation=segmentation, segment_mode=mode,
                      seq_len=LENGTH, chunk_len=4, top_k=2)
    mixer = build_mixer(cfg).double()
    with torch.no_grad():
        for name, p in mixer.named_parameters():
            if p.dim() == 2 and "gates" not in name:
                torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, LENGTH, cfg.d_model, dtype=torch.float64)
    plan = segment_plan(cfg, LENGTH)
    with torch.no_grad():  # the reads are compared as functions of these tensors, not of the mixer
        inputs, keys, u = mixer.features(x)
        states, ctx = mixer.memory.scan(inputs, plan)
        cached_summary, online_summary = caching.segment_summaries(keys, plan.bounds)
        online_logit, cached_logits = caching.gate_logits(u, cached_summary, online_summary, plan.bounds)
    return mixer, inputs.q, states, ctx, online_logit, cached_logits, plan.bounds


def assert_same_reads(model_fn, op_fn, tensors):
    """Forward and the gradient of every input agree between the model path and the op."""
    results = []
    for fn in (model_fn, op_fn):
        leaves = [t.detach().clone().requires_grad_() for t in tensors]
        out = fn(*leaves)
        out.backward(torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(3)))
        results.append([out.detach()] + [t.grad for t in leaves])
    for want, got in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


SETTINGS = [("constant", "checkpoint"), ("log", "checkpoint"), ("constant", "independent"), ("log", "independent")]


@pytest.mark.parametrize("segmentation,mode", SETTINGS)
@pytest.mark.parametrize("mixer_name,memory", [("swla", "matrix"), ("titans", "mlp")])
def test_grm_and_residual_reads_match_the_model(mixer_name, memory, segmentation, mode):
    mixer, q, states, _, online_logit, cached_logits, bounds = mixer_inputs(mixer_name, memory, "grm",
                                                                            segmentation, mode)
    gates = torch.cat([online_logit[..., None], cached_logits], dim=-1).softmax(-1)[..., 1:]
    if memory == "matrix":
        assert_same_reads(lambda q, s, g: caching.cached_reads(mixer.memory, (s,), q, g, bounds),
                          lambda q, s, g: gated_cached_read(q, s, g, bounds, backend="reference"),
                          [q, states[0], gates])
        assert_same_reads(lambda q, s: caching.cached_reads(mixer.memory, (s,), q, None, bounds),
                          lambda q, s: gated_cached_read(q, s, None, bounds, backend="reference"), [q, states[0]])
    else:
        assert_same_reads(lambda q, a, b, g: caching.cached_reads(mixer.memory, (a, b), q, g, bounds),
                          lambda q, a, b, g: mlp_cached_read(q, a, b, g, bounds, activation="silu",
                                                             backend="reference"),
                          [q, states[0], states[1], gates])


@pytest.mark.parametrize("segmentation", ["constant", "log"])
@pytest.mark.parametrize("top_k", [2, 9])
@pytest.mark.parametrize("mixer_name,memory", [("dla", "matrix"), ("titans", "mlp")])
def test_ssc_reads_match_the_model(mixer_name, memory, segmentation, top_k):
    mixer, q, states, _, online_logit, cached_logits, bounds = mixer_inputs(mixer_name, memory, "ssc",
                                                                            segmentation, "checkpoint")
    k_eff = min(top_k, len(bounds) - 2)

    def model(q, online, cached, *weights):
        return caching.ssc_reads(mixer.memory, weights, q, online, cached, top_k, bounds)[1]

    def op(q, online, cached, *weights):
        top_logits, top_idx = cached.topk(k_eff, dim=-1)
        gates = torch.cat([online[..., None], top_logits], dim=-1).softmax(-1)[..., 1:]
        if memory == "matrix":
            return ssc_cached_read(q, weights[0], top_idx, gates, bounds, backend="reference")
        return mlp_cached_read(q, weights[0], weights[1], gates, bounds, indices=top_idx, backend="reference")

    # -inf logits of not-yet-cached segments have no gradient in either path; compare the finite part
    finite = cached_logits.masked_fill(torch.isinf(cached_logits), -1e4)
    assert_same_reads(model, op, [q, online_logit, finite, *states])


@pytest.mark.parametrize("segmentation", ["constant", "log"])
def test_mlp_soup_is_two_gated_matrix_reads(segmentation):
    """Soup on an MLP memory = per layer: gated online layer + a gated cached read of that layer."""
    mixer, q, states, ctx, online_logit, cached_logits, bounds = mixer_inputs("titans", "mlp", "soup",
                                                                              segmentation, "checkpoint")
    gates = torch.cat([online_logit[..., None], cached_logits], dim=-1).softmax(-1)
    memory = mixer.memory

    def op(q, w1, w2, gates):
        z = q
        for layer, weight in enumerate((w1, w2)):
            mixed = gates[..., :1] * memory.online_layer(ctx, z, layer) + gated_cached_read(
                z, weight, gates[..., 1:], bounds, backend="reference")
            z = memory.activation(mixed) if layer == 0 else mixed
        return z

    assert_same_reads(lambda q, w1, w2, g: caching.soup_read(memory, (w1, w2), ctx, q, g[..., 0], g[..., 1:], bounds),
                      op, [q, states[0], states[1], gates])
