"""The model's cached reads (scaling.models.caching, which now calls the ops) against an explicit
evaluation of its own memories, pair by pair.

A real mixer produces queries, cached states and gates; `cached_reads`, `ssc_reads`,
`summed_cached_read` and `soup_read` must equal sum over (token, cached segment) of the gate times
the memory's own read M_i(q_t) - built here from `linear_layer`, `memory.activation` and
`memory.read_out` (for the MLP memory q + (1 + gamma) LN(W_out GELU(W_in q))) - forward and every
gradient, in float64, for constant and log segments, checkpoint and independent modes, matrix and
MLP memories. gamma is set away from zero so the (1 + gamma) scale is exercised.
"""

from __future__ import annotations

import pytest
import torch

from scaling.models import ModelConfig
from scaling.models import caching
from scaling.models.caching import tile_layout
from scaling.models.memory import linear_layer
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
            if name.endswith("gamma"):  # zero at init; away from zero the (1 + gamma) scale is tested
                torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(2, LENGTH, cfg.d_model, dtype=torch.float64)
    plan = segment_plan(cfg, LENGTH)
    with torch.no_grad():  # the reads are compared as functions of these tensors, not of the mixer
        inputs, keys, u = mixer.features(x)
        states, ctx = mixer.memory.scan(inputs, plan)
        cached_summary, online_summary = caching.segment_summaries(keys, plan.bounds)
        online_logit, cached_logits = caching.gate_logits(u, cached_summary, online_summary, plan.bounds)
    return mixer, inputs.q, states, ctx, online_logit, cached_logits, plan.bounds


def assert_same_reads(model_fn, op_fn, tensors):
    """Forward and the gradient of every input agree between the explicit path and the model."""
    results = []
    for fn in (model_fn, op_fn):
        leaves = [t.detach().clone().requires_grad_() for t in tensors]
        out = fn(*leaves)
        out.backward(torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(3)))
        results.append([out.detach()] + [t.grad for t in leaves])
    for want, got in zip(*results):
        assert want.abs().max() > 0
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def read_of(memory, weights, q):
    """M_W(q) for one segment's weights: the memory's layers, then its read-out."""
    z = q
    for layer, w in enumerate(weights):
        z = linear_layer(w, z)
        if layer + 1 < len(weights):
            z = memory.activation(z)
    return memory.read_out(q, z)


def explicit_reads(memory, states, q, gates, bounds):
    """sum_{i < seg(t)} gates[t, i] M_i(q_t), one token slice per cached segment (gates None: 1)."""
    out = torch.zeros_like(q)
    for i in range(len(bounds) - 2):
        s = bounds[i + 1]
        read = read_of(memory, [w[:, :, i] for w in states], q[:, :, s:])
        out[:, :, s:] += read if gates is None else gates[:, :, s:, i, None] * read
    return out


def explicit_ssc(memory, states, q, top_idx, gates, bounds):
    """sum_j gates[t, j] M_{top_idx[t, j]}(q_t) over slots holding a cached segment, token by token."""
    out = torch.zeros_like(q)
    seg = tile_layout(bounds).segment_of_token
    batch, heads = torch.arange(q.shape[0])[:, None], torch.arange(q.shape[1])[None, :]
    for t in range(q.shape[2]):
        for j in range(min(top_idx.shape[-1], seg[t])):
            weights = [w[batch, heads, top_idx[:, :, t, j]] for w in states]  # (B, H, out, in) per layer
            out[:, :, t] += gates[:, :, t, j, None] * read_of(memory, weights, q[:, :, t:t + 1])[:, :, 0]
    return out


SETTINGS = [("constant", "checkpoint"), ("log", "checkpoint"), ("constant", "independent"), ("log", "independent")]


@pytest.mark.parametrize("segmentation,mode", SETTINGS)
@pytest.mark.parametrize("mixer_name,memory", [("swla", "matrix"), ("titans", "mlp")])
def test_grm_and_residual_reads_match_the_model(mixer_name, memory, segmentation, mode):
    mixer, q, states, _, online_logit, cached_logits, bounds = mixer_inputs(mixer_name, memory, "grm",
                                                                            segmentation, mode)
    gates = torch.cat([online_logit[..., None], cached_logits], dim=-1).softmax(-1)[..., 1:]
    mem = mixer.memory
    assert_same_reads(lambda q, g, *w: explicit_reads(mem, w, q, g, bounds),
                      lambda q, g, *w: caching.cached_reads(mem, w, q, g, bounds), [q, gates, *states])
    assert_same_reads(lambda q, *w: explicit_reads(mem, w, q, None, bounds),
                      lambda q, *w: caching.cached_reads(mem, w, q, None, bounds), [q, *states])
    if memory == "matrix":  # residual's one read of the prefix-summed state
        assert_same_reads(lambda q, s: explicit_reads(mem, (s,), q, None, bounds),
                          lambda q, s: caching.summed_cached_read((s,), q, bounds), [q, states[0]])


@pytest.mark.parametrize("segmentation", ["constant", "log"])
@pytest.mark.parametrize("top_k", [2, 9])
@pytest.mark.parametrize("mixer_name,memory", [("dla", "matrix"), ("titans", "mlp")])
def test_ssc_reads_match_the_model(mixer_name, memory, segmentation, top_k):
    mixer, q, states, _, online_logit, cached_logits, bounds = mixer_inputs(mixer_name, memory, "ssc",
                                                                            segmentation, "checkpoint")
    k_eff = min(top_k, len(bounds) - 2)
    mem = mixer.memory

    def model(q, online, cached, *weights):
        return caching.ssc_reads(mem, weights, q, online, cached, top_k, bounds)[1]

    def explicit(q, online, cached, *weights):
        top_logits, top_idx = cached.topk(k_eff, dim=-1)
        gates = torch.cat([online[..., None], top_logits], dim=-1).softmax(-1)[..., 1:]
        return explicit_ssc(mem, weights, q, top_idx, gates, bounds)

    # -inf logits of not-yet-cached segments have no gradient in either path; compare the finite part
    finite = cached_logits.masked_fill(torch.isinf(cached_logits), -1e4)
    assert_same_reads(explicit, model, [q, online_logit, finite, *states])


@pytest.mark.parametrize("segmentation", ["constant", "log"])
@pytest.mark.parametrize("mixer_name,memory", [("titans", "mlp"), ("swla", "matrix")])
def test_soup_reads_match_the_model(mixer_name, memory, segmentation):
    """Soup = per layer: gated online layer + the gated sum of the cached layers' outputs, then the read-out."""
    mixer, q, states, ctx, online_logit, cached_logits, bounds = mixer_inputs(mixer_name, memory, "soup",
                                                                              segmentation, "checkpoint")
    gates = torch.cat([online_logit[..., None], cached_logits], dim=-1).softmax(-1)
    mem = mixer.memory

    def explicit(q, gates, *weights):
        z = q
        for layer, weight in enumerate(weights):
            mixed = gates[..., :1] * mem.online_layer(ctx, z, layer)
            for i in range(len(bounds) - 2):
                s = bounds[i + 1]
                mixed[:, :, s:] = mixed[:, :, s:] + gates[:, :, s:, 1 + i, None] * linear_layer(weight[:, :, i],
                                                                                                 z[:, :, s:])
            z = mem.activation(mixed) if layer + 1 < len(weights) else mixed
        return mem.read_out(q, z)

    assert_same_reads(explicit, lambda q, g, *w: caching.soup_read(mem, w, ctx, q, g[..., 0], g[..., 1:], bounds),
                      [q, gates, *states])
