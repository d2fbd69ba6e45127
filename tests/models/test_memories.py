"""The memories as the paper defines them: deep memory update, DLA, SWLA gates, MC leaving the
base memory's inner loop alone, and inputs of any length."""

import pytest
import torch

from scaling.models import LanguageModel
from scaling.models.caching import online_read
from scaling.models.memory import MLPMemory
from scaling.models.mixers.recurrent import segment_plan

from .conftest import RECURRENT, small_config, spread_mixer


def _memory_out(w_in, w_out, gamma, x):
    """Eq. 34-36's deep memory written out directly: x + (1 + gamma) * LN(W_out GELU(W_in x))."""
    o = torch.nn.functional.gelu(x @ w_in.T) @ w_out.T
    return x + (1 + gamma) * torch.nn.functional.layer_norm(o, o.shape[-1:], eps=1e-5)


@pytest.mark.parametrize("objective, momentum", [("dot", False), ("l2", True)])
def test_deep_memory_chunk_update_matches_autograd(objective, momentum):
    """One chunk of the chunk-parallel update against eq. 34-36 computed with autograd: the
    gradient of each token's loss at the chunk's starting weights, then the gated recurrence."""
    torch.manual_seed(3)
    c, d, f = 6, 4, 8
    mem = MLPMemory(n_heads=1, head_dim=d, expansion=2, objective=objective, momentum=momentum).double()
    with torch.no_grad():
        mem.gamma.normal_(std=0.3)
    w_in, w_out = torch.randn(f, d, dtype=torch.float64) / 2, torch.randn(d, f, dtype=torch.float64) / 3
    s_in, s_out = torch.randn(f, d, dtype=torch.float64) / 10, torch.randn(d, f, dtype=torch.float64) / 10
    k = torch.nn.functional.normalize(torch.randn(c, d, dtype=torch.float64), dim=-1)
    v = torch.nn.functional.normalize(torch.randn(c, d, dtype=torch.float64), dim=-1)
    lr = torch.rand(c, dtype=torch.float64) * 0.1
    log_ret = -torch.rand(c, dtype=torch.float64) * 0.1 if momentum else torch.zeros(c, dtype=torch.float64)
    log_mom = -torch.rand(c, dtype=torch.float64) if momentum else None

    state = (w_in, w_out, s_in, s_out) if momentum else (w_in, w_out)
    batched = tuple(t[None, None] for t in state)
    new_state, _ = mem._chunk_step(batched, k[None, None], v[None, None], lr[None, None], log_ret[None, None],
                                   None if log_mom is None else log_mom[None, None])

    gamma = mem.gamma[0].detach()
    W, S = [w_in, w_out], [s_in, s_out]
    for t in range(c):
        leaves = [w_in.clone().requires_grad_(), w_out.clone().requires_grad_()]
        m = _memory_out(leaves[0], leaves[1], gamma, k[t])
        loss = -(m * v[t]).sum() if objective == "dot" else 0.5 * (m - v[t]).pow(2).sum()
        grads = torch.autograd.grad(loss, leaves)
        for i in range(2):
            if momentum:
                S[i] = torch.exp(log_mom[t]) * S[i] - lr[t] * grads[i]
                W[i] = torch.exp(log_ret[t]) * W[i] + S[i]
            else:
                W[i] = W[i] - lr[t] * grads[i]
    torch.testing.assert_close(new_state[0][0, 0], W[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(new_state[1][0, 0], W[1], rtol=1e-12, atol=1e-12)
    if momentum:
        torch.testing.assert_close(new_state[2][0, 0], S[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(new_state[3][0, 0], S[1], rtol=1e-12, atol=1e-12)
    assert (new_state[1][0, 0] - w_out).abs().max() > 1e-3  # the step really moved the memory


def test_deep_memory_online_read_is_the_residual_block():
    """The online read at the first token is eq. 34's M applied with the weights after one step."""
    cfg = small_config("dla", "mlp", "none")
    mixer = spread_mixer(cfg)
    with torch.no_grad():
        mixer.memory.gamma.normal_(std=0.3)
    x = torch.randn(1, cfg.seq_len, cfg.d_model, dtype=torch.float64)
    inputs, _, _ = mixer.features(x)
    _, ctx = mixer.memory.scan(inputs, segment_plan(cfg, cfg.seq_len))
    out = online_read(mixer.memory, ctx, inputs.q)
    head = 1
    w_in, w_out = mixer.memory.w1_init[head].detach(), mixer.memory.w2_init[head].detach()
    gamma = mixer.memory.gamma[head].detach()
    leaves = [w_in.clone().requires_grad_(), w_out.clone().requires_grad_()]
    k, v, q = inputs.k[0, head, 0, 0].detach(), inputs.v[0, head, 0, 0].detach(), inputs.q[0, head, 0].detach()
    loss = -(_memory_out(leaves[0], leaves[1], gamma, k) * v).sum()  # DLA: dot-product objective
    grads = torch.autograd.grad(loss, leaves)
    lr = inputs.write_gate[0, head, 0, 0].detach()
    expected = _memory_out(w_in - lr * grads[0], w_out - lr * grads[1], gamma, q)
    torch.testing.assert_close(out[0, head, 0].detach(), expected, rtol=1e-12, atol=1e-12)


def test_dla_has_no_retention_and_swla_has_two_write_gates():
    dla = spread_mixer(small_config("dla", "mlp", "grm"))
    x = torch.randn(2, 64, 32, dtype=torch.float64)
    inputs, _, _ = dla.features(x)
    assert dla.gate_names == ["lr"] and torch.equal(inputs.log_retention, torch.zeros_like(inputs.log_retention))
    assert small_config("dla", "", "none").memory == "mlp"
    swla = spread_mixer(small_config("swla", "matrix", "grm"))
    with torch.no_grad():
        swla.gates.weight.normal_(std=0.5)
    inputs, _, _ = swla.features(x)
    assert swla.gate_names == ["retention", "write", "write_prev"]
    beta, lam = inputs.write_gate[..., 0], inputs.write_gate[..., 1]
    assert (beta - lam).abs().max() > 1e-2  # separate beta_t and lambda_t (eq. 28)


@pytest.mark.parametrize("mixer_name, memory", RECURRENT)
@pytest.mark.parametrize("segment_len", [8, 32])
def test_caching_leaves_the_online_memory_of_the_base_model_unchanged(mixer_name, memory, segment_len):
    """Checkpoint mode: the online read under MC (any C) is the base model's read, chunk for chunk."""
    chunk = 8
    cached_cfg = small_config(mixer_name, memory, "grm", segment_len=segment_len, chunk_len=chunk)
    base_cfg = small_config(mixer_name, memory, "none", chunk_len=chunk)
    mixer = spread_mixer(cached_cfg)
    x = torch.randn(1, 64, cached_cfg.d_model, dtype=torch.float64)
    inputs, _, _ = mixer.features(x)
    reads = []
    for cfg in (cached_cfg, base_cfg):
        _, ctx = mixer.memory.scan(inputs, segment_plan(cfg, 64))
        reads.append(online_read(mixer.memory, ctx, inputs.q))
    torch.testing.assert_close(reads[0], reads[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mixer_name, memory", RECURRENT)
@pytest.mark.parametrize("caching", ["residual", "grm", "soup", "ssc"])
@pytest.mark.parametrize("segment_len, length", [(64, 64), (16, 16), (8, 5)])
def test_one_segment_equals_the_base_model_at_every_c(mixer_name, memory, caching, segment_len, length):
    cached_cfg = small_config(mixer_name, memory, caching, segment_len=segment_len)
    base_cfg = small_config(mixer_name, memory, "none")
    cached = spread_mixer(cached_cfg)
    base = spread_mixer(base_cfg, seed=1)
    missing = base.load_state_dict(cached.state_dict(), strict=False)
    assert missing.missing_keys == []  # only the gate projection u is extra on the cached side
    x = torch.randn(2, length, cached_cfg.d_model, dtype=torch.float64)
    torch.testing.assert_close(cached(x), base(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mixer_name, memory, caching, segmentation, length", [
    ("swla", "matrix", "grm", "log", 100), ("titans", "mlp", "grm", "log", 100), ("dla", "mlp", "soup", "log", 61),
    ("swla", "matrix", "ssc", "constant", 37), ("dla", "mlp", "ssc", "constant", 37),
    ("titans", "mlp", "none", "constant", 37), ("linear", "matrix", "residual", "log", 1),
    ("titans", "mlp", "grm", "log", 1)])
def test_any_input_length_works_and_matches_the_token_by_token_reference(mixer_name, memory, caching,
                                                                         segmentation, length):
    """L = 100, C = 8, chunk 4 with log segments (once a reshape crash), and lengths that are
    multiples of neither C nor the chunk: the padded chunk-parallel model equals the reference,
    which runs at the real length with no padding."""
    cfg = small_config(mixer_name, memory, caching, seq_len=100 if caching == "none" or segmentation == "log" else 96,
                       segmentation=segmentation, chunk_len=4)
    mixer = spread_mixer(cfg)
    x = torch.randn(2, length, cfg.d_model, dtype=torch.float64)
    fast = mixer(x)
    assert fast.shape == x.shape
    torch.testing.assert_close(fast, mixer.reference_forward(x), rtol=1e-9, atol=1e-9)


def test_needle_hits_runs_mc_models_at_the_needle_length():
    """needle_hits once fed length - 1 tokens, which crashed MC models; it now feeds the length."""
    from scaling.data.recall import NeedleExample, needle_hits

    cfg = small_config("titans", "mlp", "grm", seq_len=64, segment_len=16, chunk_len=8)
    model = LanguageModel(cfg).double()
    tokens = torch.randint(0, cfg.vocab_size, (64,))
    examples = [NeedleExample(tokens=tokens, answer_start=60, length=64, depth=0.5, kind="passkey")]
    seen = []

    def logits_fn(inputs):
        seen.append(inputs.shape[1])
        return model(inputs)

    hits = needle_hits(logits_fn, examples)
    assert seen == [64] and len(hits) == 1
    with torch.no_grad():
        predicted = model(tokens[None])[0, 59:63].argmax(-1)
    assert hits[0] == bool(torch.equal(predicted, tokens[60:]))


def test_segment_plan_pads_to_whole_chunks_and_tiles():
    cfg = small_config("swla", "matrix", "grm", segmentation="log", seq_len=100, chunk_len=4)
    plan = segment_plan(cfg, 100)
    assert plan.seq_len == 104 and plan.bounds == (0, 64, 96, 104)  # [64, 32, 4] + 4 padded tokens
    assert segment_plan(small_config("titans", "mlp", "none", chunk_len=16), 37).bounds == (0, 48)
