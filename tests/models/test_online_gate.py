"""The online-memory gate bias: MC starts from its base memory (issue 21).

With the paper's plain softmax a token in segment s gives its online memory 1/(s+1) of the read
at init; the bias (rule: log(3 n_max)) gives it e^b / (e^b + s) >= 3/4 in every segment.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scaling.models import ModelConfig
from scaling.models.config import online_gate_rule
from scaling.models.diagnostics import online_gate_mass, record_online_gates
from scaling.models.ladder import count_params
from scaling.models.model import LanguageModel
from scaling.spec import parse_spec
from scaling.train.optim import build_optimizer


def _config(caching: str = "grm", **overrides) -> ModelConfig:
    fields = dict(vocab_size=64, d_model=32, n_heads=4, n_layers=2, mixer="swla", caching=caching,
                  segment_len=16 if caching != "none" else None, seq_len=128, chunk_len=16, top_k=2)
    fields.update(overrides)
    return ModelConfig(**fields)


@pytest.mark.parametrize("caching, segment_len, top_k, n_max", [
    ("grm", 16, 2, 7), ("soup", 32, 2, 3), ("ssc", 16, 2, 2), ("ssc", 64, 5, 1), ("grm", 128, 2, 0)])
def test_rule_is_log_three_times_the_caches_a_gate_covers(caching, segment_len, top_k, n_max):
    cfg = _config(caching, segment_len=segment_len, top_k=top_k)
    assert cfg.gated_caches_max == n_max
    expected = math.log(3 * n_max) if n_max else 0.0
    assert cfg.online_gate_bias == pytest.approx(expected)
    assert online_gate_rule(n_max) == pytest.approx(expected)


def test_ungated_strategies_have_no_bias_and_zero_means_the_papers_softmax():
    for caching in ("none", "residual"):
        cfg = _config(caching)
        assert cfg.online_gate_bias == 0.0
        model = LanguageModel(cfg)
        assert not any("online_gate_bias" in n for n, _ in model.named_parameters())
    plain = _config("grm", online_gate_init=0.0)
    model = LanguageModel(plain)
    assert not any("online_gate_bias" in n for n, _ in model.named_parameters())
    biased = LanguageModel(_config("grm"))
    extra = count_params(biased.cfg)["params_nonembed"] - count_params(plain)["params_nonembed"]
    assert extra == biased.cfg.n_layers * biased.cfg.n_heads
    assert biased.param_counts()["params_nonembed"] == count_params(biased.cfg)["params_nonembed"]


@pytest.mark.parametrize("caching", ["grm", "soup", "ssc"])
@pytest.mark.parametrize("init", [None, 0.0, 2.5])
def test_online_weight_at_init_is_the_rules_value_in_every_segment(caching, init):
    cfg = _config(caching, online_gate_init=init)
    torch.manual_seed(0)
    model = LanguageModel(cfg)
    with torch.no_grad():  # cached logits exactly 0: the weight is e^b / (e^b + n_readable) by construction
        for block in model.blocks:
            block.mixer.gate_proj.weight.zero_()
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))
    bounds = cfg.segment_bounds()
    with record_online_gates(model) as records, torch.no_grad():
        model(tokens)
    mass = online_gate_mass(records, bounds)
    assert set(mass) == {0, 1}
    b = cfg.online_gate_bias
    cap = cfg.top_k if caching == "ssc" else math.inf
    expected = [math.exp(b) / (math.exp(b) + min(s, cap)) for s in range(len(bounds) - 1)]
    for layer in mass.values():
        assert layer == pytest.approx(expected, abs=1e-6)
    if init is None:
        assert min(expected) >= 0.75 - 1e-9
    # with the real (small, random) gate projection the weights stay close to the rule's
    torch.manual_seed(0)
    model = LanguageModel(cfg)
    with record_online_gates(model) as records, torch.no_grad():
        model(tokens)
    for layer in online_gate_mass(records, bounds).values():
        assert layer == pytest.approx(expected, abs=0.03)
    assert all(m.online_gate_sink is None for m in model.modules() if hasattr(m, "online_gate_sink"))


@pytest.mark.parametrize("caching", ["grm", "soup", "ssc"])
def test_same_seed_gives_the_base_its_shared_weights_and_the_cache_switched_off_its_loss(caching):
    base_cfg = _config("none")
    mc_cfg = _config(caching)
    torch.manual_seed(7)
    base = LanguageModel(base_cfg)
    torch.manual_seed(7)
    mc = LanguageModel(mc_cfg)
    shared = base.state_dict()
    mc_state = mc.state_dict()
    assert all(torch.equal(shared[k], mc_state[k]) for k in shared), "shared weights differ under one seed"
    assert sorted({k.split(".")[-2] if k.endswith("weight") else k.split(".")[-1] for k in mc_state if k not in shared}) \
        == ["gate_proj", "online_gate_bias"]
    tokens = torch.randint(0, base_cfg.vocab_size, (3, base_cfg.seq_len + 1))

    def loss(model: LanguageModel) -> float:
        with torch.no_grad():
            logits = model(tokens[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).item()

    with torch.no_grad():  # the cache switched off: every cached gate underflows to exactly 0
        for block in mc.blocks:
            block.mixer.online_gate_bias.fill_(1e4)
    assert loss(mc) == pytest.approx(loss(base), abs=1e-6)
    with torch.no_grad():  # and on: the caches change the loss (the test can fail)
        for block in mc.blocks:
            block.mixer.online_gate_bias.fill_(0.0)
    assert abs(loss(mc) - loss(base)) > 1e-4


def test_bias_is_learned_without_weight_decay():
    from scaling.train import TrialConfig

    cfg = _config("grm")
    model = LanguageModel(cfg)
    optimizer = build_optimizer(model, TrialConfig(model=cfg, tokens=1000, weight_decay=0.1), torch.device("cpu"))
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    biases = [p for n, p in model.named_parameters() if n.endswith("online_gate_bias")]
    assert len(biases) == cfg.n_layers and all(decay_of[id(p)] == 0.0 for p in biases)
    assert all(p.requires_grad for p in biases)
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len + 1))
    logits = model(tokens[:, :-1])
    F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in biases)


def _spec(arch: dict) -> dict:
    return {"name": "gate", "architectures": [{"name": "swla"}, arch], "ladder": {"sizes": ["20K", "40K"], "head_dim": 8},
            "budget": {"tokens_per_param": 1}, "data": {"seq_len": 64}}


def test_spec_sets_the_online_gate_init_and_refuses_a_bad_one():
    from scaling.errors import UserInputError
    from scaling.study.plan import series_models

    spec = parse_spec(_spec({"name": "swla+grm", "segment_lens": [16], "online_gate_init": 0}))
    assert series_models(spec)["swla+grm@C16"].base.online_gate_bias == 0.0
    spec = parse_spec(_spec({"name": "swla+grm", "segment_lens": [16]}))
    assert series_models(spec)["swla+grm@C16"].base.online_gate_bias == pytest.approx(math.log(9))
    for bad in ("strong", float("inf")):
        with pytest.raises(UserInputError) as err:
            parse_spec(_spec({"name": "swla+grm", "segment_lens": [16], "online_gate_init": bad}))
        assert "online_gate_init" in str(err.value)
