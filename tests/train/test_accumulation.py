"""Gradient accumulation: an optimiser step split into micro-batches is the full-batch step.

The loss is summed over target tokens and divided by the step's global target count, so the
split is exact even when micro-batches hold different numbers of scored tokens (MQAR scores
only its query positions).
"""

from __future__ import annotations

import pytest
import torch

from scaling.data.corpus import CorpusSpec
from scaling.data.recall import MQARSpec
from scaling.models import LanguageModel, ModelConfig
from scaling.train import TrialConfig, load_checkpoint, run_trial

FAMILIES = [("attention", "", "none"), ("linear", "", "none"), ("swla", "", "grm"), ("swla", "", "soup"),
            ("dla", "matrix", "ssc"), ("dla", "mlp", "soup"), ("titans", "", "grm"), ("titans", "", "residual")]
UPDATE_TOLERANCE = 1e-5  # fp32, absolute, on every parameter after one AdamW step


def _model(mixer: str, memory: str, caching: str) -> ModelConfig:
    fields = dict(vocab_size=256, d_model=32, n_heads=2, n_layers=2, mixer=mixer, memory=memory, caching=caching,
                  seq_len=32, chunk_len=8)
    if caching != "none":
        fields["segment_len"] = 8
    return ModelConfig(**fields)


def _parameters_after_steps(tmp_path, name: str, steps: int = 1, **fields) -> dict[str, torch.Tensor]:
    config = TrialConfig(corpus=CorpusSpec(max_bytes=300_000), batch_tokens=8 * 32, tokens=steps * 8 * 32,
                         warmup_fraction=0.0, eval_windows=1, threads=1, seed=11, checkpoint_dir=str(tmp_path / name),
                         **fields)
    run_trial(config)
    return load_checkpoint(tmp_path / name)["model"]


@pytest.mark.parametrize("mixer, memory, caching", FAMILIES)
def test_micro_batches_give_the_full_batch_update(tmp_path, mixer, memory, caching):
    model = _model(mixer, memory, caching)
    full = _parameters_after_steps(tmp_path, "full", model=model)
    split = _parameters_after_steps(tmp_path, "split", model=model, micro_batch_tokens=2 * 32)
    assert full.keys() == split.keys()
    worst = max(float((full[k] - split[k]).abs().max()) for k in full)
    assert worst <= UPDATE_TOLERANCE, worst
    torch.manual_seed(11)  # the trial's seed: the initial weights, to show the step moved them
    initial = LanguageModel(model).state_dict()
    moved = max(float((full[k] - initial[k]).abs().max()) for k in full)
    assert moved > 100 * UPDATE_TOLERANCE, moved


@pytest.mark.parametrize("mixer, memory, caching", [("attention", "", "none"), ("swla", "", "grm")])
def test_micro_batches_are_exact_when_scored_tokens_differ(tmp_path, mixer, memory, caching):
    """MQAR: each micro-batch scores a different number of positions; the step still matches."""
    model = _model(mixer, memory, caching)
    task = dict(model=model, task="mqar", mqar=MQARSpec(n_pairs=2, n_queries=2, key_vocab=8, value_vocab=8,
                                                        seq_len=32))
    full = _parameters_after_steps(tmp_path, "full", steps=3, **task)
    split = _parameters_after_steps(tmp_path, "split", steps=3, micro_batch_tokens=32, **task)
    worst = max(float((full[k] - split[k]).abs().max()) for k in full)
    assert worst <= UPDATE_TOLERANCE, worst


def test_a_micro_batch_that_does_not_divide_the_batch_is_refused():
    from scaling.errors import UserInputError

    with pytest.raises(UserInputError) as err:
        TrialConfig(model=_model("attention", "", "none"), tokens=1000, batch_tokens=8 * 32, micro_batch_tokens=3 * 32)
    assert err.value.field == "micro_batch_tokens"
