"""Identities of Memory Caching that the paper states, checked on the implementation."""

import pytest
import torch

from scaling.models.caching import memory_caching
from scaling.models.mixers.recurrent import segment_plan

from .conftest import RECURRENT, small_config, spread_mixer

MATRIX = [(m, mem) for m, mem in RECURRENT if mem == "matrix"]
MODES = ("checkpoint", "independent")


def _mixer_and_input(mixer_name, memory, caching, **overrides):
    """A spread-weight mixer under `cfg` and a float64 input sequence for it."""
    cfg = small_config(mixer_name, memory, caching, **overrides)
    return spread_mixer(cfg), torch.randn(2, cfg.seq_len, cfg.d_model, dtype=torch.float64)


def _per_head_output(mixer, x, caching=None, top_k=None):
    inputs, keys, u = mixer.features(x)
    cfg = mixer.cfg
    return memory_caching(mixer.memory, inputs, keys, u, segment_plan(cfg, x.shape[1]),
                          caching or cfg.caching, top_k or cfg.top_k)


@pytest.mark.parametrize("mixer_name, memory", MATRIX)
@pytest.mark.parametrize("mode", MODES)
def test_residual_on_a_matrix_memory_reads_the_summed_state(mixer_name, memory, mode):
    cfg = small_config(mixer_name, memory, "residual", segment_mode=mode)
    mixer = spread_mixer(cfg)
    x = torch.randn(2, cfg.seq_len, cfg.d_model, dtype=torch.float64)
    inputs, _, _ = mixer.features(x)
    bounds = cfg.segment_bounds()
    # Live state S_t for every t from the recurrence's definition, then one read of the sum.
    state = torch.zeros(2, cfg.n_heads, cfg.head_dim, cfg.head_dim, dtype=torch.float64)
    finished: list[torch.Tensor] = []
    expected = []
    for t in range(cfg.seq_len):
        if t in bounds[1:-1]:
            finished.append(state)
            if mode == "independent":
                state = torch.zeros_like(state)
        write = torch.einsum("bhw,bhwv,bhwk->bhvk", inputs.write_gate[:, :, t], inputs.v[:, :, t], inputs.k[:, :, t])
        state = torch.exp(inputs.log_retention[:, :, t])[..., None, None] * state + write
        summed = state + sum(finished, torch.zeros_like(state))
        expected.append(torch.einsum("bhvk,bhk->bhv", summed, inputs.q[:, :, t]))
    torch.testing.assert_close(_per_head_output(mixer, x), torch.stack(expected, 2), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mixer_name, memory", MATRIX)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("segmentation", ["constant", "log"])
def test_soup_equals_grm_on_a_matrix_memory(mixer_name, memory, mode, segmentation):
    mixer, x = _mixer_and_input(mixer_name, memory, "grm", segment_mode=mode, segmentation=segmentation)
    torch.testing.assert_close(_per_head_output(mixer, x, "soup"), _per_head_output(mixer, x, "grm"),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mixer_name, memory", [(m, mem) for m, mem in RECURRENT if mem == "mlp"])
def test_soup_differs_from_grm_on_an_mlp_memory(mixer_name, memory):
    mixer, x = _mixer_and_input(mixer_name, memory, "grm")
    diff = (_per_head_output(mixer, x, "soup") - _per_head_output(mixer, x, "grm")).abs().max()
    assert diff > 1e-3


@pytest.mark.parametrize("mixer_name, memory", RECURRENT)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("segmentation", ["constant", "log"])
def test_ssc_with_k_covering_every_cached_segment_equals_grm(mixer_name, memory, mode, segmentation):
    mixer, x = _mixer_and_input(mixer_name, memory, "grm", segment_mode=mode, segmentation=segmentation)
    n_cached = mixer.cfg.n_segments() - 1
    grm = _per_head_output(mixer, x, "grm")
    torch.testing.assert_close(_per_head_output(mixer, x, "ssc", top_k=n_cached), grm, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(_per_head_output(mixer, x, "ssc", top_k=n_cached + 5), grm, rtol=1e-10, atol=1e-10)
    assert (_per_head_output(mixer, x, "ssc", top_k=1) - grm).abs().max() > 1e-4  # k < N really is sparser


@pytest.mark.parametrize("mixer_name, memory", RECURRENT)
@pytest.mark.parametrize("caching", ["residual", "grm", "soup", "ssc"])
def test_gradients_flow_through_cached_states_in_independent_mode(mixer_name, memory, caching):
    """In independent mode the last segment's online memory never sees segment 0, so a gradient
    from the last segment's outputs to segment 0's *values* can only come through the cache."""
    cfg = small_config(mixer_name, memory, caching, segment_mode="independent", top_k=8)
    mixer = spread_mixer(cfg)
    x = torch.randn(1, cfg.seq_len, cfg.d_model, dtype=torch.float64)
    inputs, keys, u = mixer.features(x)
    inputs.v.retain_grad()
    y = memory_caching(mixer.memory, inputs, keys, u, segment_plan(cfg, cfg.seq_len), caching, cfg.top_k)
    last_segment = cfg.segment_bounds()[-2]
    y[:, :, last_segment:].pow(2).sum().backward()
    first_segment_values = inputs.v.grad[:, :, : cfg.segment_bounds()[1]]
    assert first_segment_values.abs().max() > 1e-6


@pytest.mark.parametrize("mixer_name, memory", RECURRENT)
@pytest.mark.parametrize("caching", ["none", "grm", "ssc"])
def test_every_parameter_gets_a_finite_gradient(mixer_name, memory, caching):
    from scaling.models import LanguageModel

    cfg = small_config(mixer_name, memory, caching)
    model = LanguageModel(cfg)
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))
    logits = model(tokens)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
