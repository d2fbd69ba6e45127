"""Recall tasks: MQAR and needle-in-a-haystack."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scaling.data.corpus import CorpusSpec, load_corpus
from scaling.data.recall import (MQARSpec, mqar_accuracy, mqar_batch, needle_accuracy, needle_examples,
                                 needle_hits)
from scaling.data.tokenizers import load_tokenizer
from scaling.errors import UserInputError

from .test_tokenizers import train_bpe

SPEC = MQARSpec(n_pairs=8, n_queries=6, key_vocab=32, value_vocab=32, seq_len=48)


# ----------------------------------------------------------------------------- MQAR
def test_mqar_deterministic_per_seed():
    a = mqar_batch(SPEC, 16, seed=5, vocab_size=128)
    b = mqar_batch(SPEC, 16, seed=5, vocab_size=128)
    c = mqar_batch(SPEC, 16, seed=6, vocab_size=128)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == a[1].shape == (16, 48) and a[0].dtype == a[1].dtype == torch.int64


def test_mqar_targets_are_the_queried_values():
    inputs, targets = mqar_batch(SPEC, 32, seed=0, vocab_size=128)
    keys_range = range(1, 33)
    values_range = range(33, 65)
    for x, y in zip(inputs.tolist(), targets.tolist()):
        pairs = {x[2 * i]: x[2 * i + 1] for i in range(SPEC.n_pairs)}
        assert len(pairs) == SPEC.n_pairs  # distinct keys
        assert all(k in keys_range for k in pairs) and all(v in values_range for v in pairs.values())
        positions = [t for t, target in enumerate(y) if target != -100]
        assert len(positions) == SPEC.n_queries
        assert all(t >= 2 * SPEC.n_pairs for t in positions)
        assert len({x[t] for t in positions}) == SPEC.n_queries  # distinct queried keys
        for t in positions:
            assert y[t] == pairs[x[t]]  # the value written with that key
            assert x[t + 1] == y[t]  # the value follows as the next input
        rest = [x[t] for t in range(2 * SPEC.n_pairs, SPEC.seq_len)
                if t not in positions and t - 1 not in positions]
        assert set(rest) <= {0}  # filler


def test_mqar_query_positions_vary():
    _, targets = mqar_batch(SPEC, 64, seed=1, vocab_size=128)
    first = (targets != -100).float().argmax(dim=1)
    assert len(set(first.tolist())) > 3


def test_mqar_accuracy_perfect_and_random():
    inputs, targets = mqar_batch(SPEC, 64, seed=2, vocab_size=128)
    perfect = torch.full((64, 48, 128), -1.0)
    mask = targets != -100
    perfect[mask, targets[mask]] = 1.0
    assert mqar_accuracy(perfect, targets) == 1.0
    random_logits = torch.randn(64, 48, 128, generator=torch.Generator().manual_seed(0))
    acc = mqar_accuracy(random_logits, targets)
    assert 0.0 <= acc < 0.05  # chance is 1/128
    half = perfect.clone()
    rows = torch.arange(64) < 32
    half[rows] = 0.0
    half[rows, :, 0] = 1.0  # predicts the filler everywhere: wrong
    assert mqar_accuracy(half, targets) == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs, field", [
    ({"n_queries": 9, "n_pairs": 8}, "mqar.n_queries"),
    ({"n_pairs": 40, "n_queries": 4, "key_vocab": 32, "seq_len": 200}, "mqar.key_vocab"),
    ({"n_pairs": 40, "n_queries": 4, "key_vocab": 64, "value_vocab": 16, "seq_len": 200}, "mqar.value_vocab"),
    ({"n_pairs": 8, "n_queries": 8, "seq_len": 31}, "mqar.seq_len"),
    ({"n_pairs": 0}, "mqar.n_pairs"),
])
def test_mqar_spec_errors(kwargs, field):
    with pytest.raises(UserInputError) as err:
        MQARSpec(**kwargs)
    assert err.value.field == field


def test_mqar_vocab_too_small():
    with pytest.raises(UserInputError) as err:
        mqar_batch(MQARSpec(key_vocab=64, value_vocab=64), 4, seed=0, vocab_size=128)  # needs 129 ids
    assert err.value.field == "mqar.key_vocab"
    mqar_batch(MQARSpec(key_vocab=64, value_vocab=63), 4, seed=0, vocab_size=128)


# ----------------------------------------------------------------------------- needle
@pytest.fixture(scope="module")
def val_tokens():
    return load_corpus(CorpusSpec(max_bytes=300_000)).val


@pytest.mark.parametrize("kind", ["passkey", "number", "uuid"])
def test_needle_lengths_depths_and_answers(val_tokens, kind):
    tok = load_tokenizer("bytes")
    lengths, depths = [256, 1024], [0.0, 0.25, 0.5, 1.0]
    examples = needle_examples(val_tokens, tok, lengths, depths, seed=0, kind=kind, seq_len=1024)
    assert len(examples) == 8
    assert [(e.length, e.depth) for e in examples] == [(n, d) for n in lengths for d in depths]
    for ex in examples:
        assert ex.tokens.shape == (ex.length,) and ex.tokens.dtype == torch.int64 and ex.kind == kind
        answer = tok.decode(ex.tokens[ex.answer_start:])
        assert answer == " " + ex.secret
        if kind == "passkey":
            assert ex.secret.isdigit() and len(ex.secret) == 5
        elif kind == "uuid":
            assert [len(p) for p in ex.secret.split("-")] == [8, 4, 4, 4, 12]
        needle = tok.decode(ex.tokens[ex.needle_start: ex.needle_start + ex.needle_tokens])
        assert ex.secret in needle
        assert ex.needle_start == round(ex.depth * ex.haystack_tokens)
        assert abs(ex.needle_start / ex.haystack_tokens - ex.depth) <= 1 / ex.haystack_tokens
        assert 0 < ex.haystack_tokens and ex.haystack_tokens > ex.length - 200  # overhead under 200 bytes
        prompt = tok.decode(ex.tokens[: ex.answer_start])
        assert prompt.count(ex.secret) == 2 if kind == "passkey" else prompt.count(ex.secret) == 1
        # the haystack around the needle is real validation text
        before = ex.tokens[: ex.needle_start].numpy()
        if len(before) > 20:
            window = np.asarray(val_tokens, dtype=np.int64)
            starts = np.flatnonzero(window[: len(window) - len(before) + 1] == before[0])
            assert any(np.array_equal(window[s: s + len(before)], before) for s in starts)


def test_needle_depth_positions(val_tokens):
    tok = load_tokenizer("bytes")
    examples = needle_examples(val_tokens, tok, [2048], [0.0, 0.5, 1.0], seed=1)
    fixed = examples[0].needle_tokens + (2048 - examples[0].answer_start)
    question = len(tok.encode("\nWhat is the pass key? The pass key is"))
    hay = 2048 - fixed - question
    assert [e.needle_start for e in examples] == [0, round(0.5 * hay), hay]
    assert all(e.haystack_tokens == hay for e in examples)
    # the question and answer close the prompt, right after the haystack
    assert tok.decode(examples[1].tokens[hay + examples[1].needle_tokens:]).startswith("\nWhat is the pass key?")


def test_needle_deterministic_per_seed(val_tokens):
    tok = load_tokenizer("bytes")
    a = needle_examples(val_tokens, tok, [300, 500], [0.1, 0.9], seed=3)
    b = needle_examples(val_tokens, tok, [300, 500], [0.1, 0.9], seed=3)
    c = needle_examples(val_tokens, tok, [300, 500], [0.1, 0.9], seed=4)
    assert all(torch.equal(x.tokens, y.tokens) for x, y in zip(a, b))
    assert [x.secret for x in a] != [x.secret for x in c]
    # an example does not depend on which other lengths were asked for
    alone = needle_examples(val_tokens, tok, [500], [0.9], seed=3)[0]
    assert torch.equal(alone.tokens, a[-1].tokens)


def test_needle_with_bpe_tokenizer(tmp_path, val_tokens):
    tok = load_tokenizer(str(train_bpe(tmp_path / "bpe.json",
                                       text=bytes(np.asarray(val_tokens[:50_000])).decode("utf-8", "replace"))))
    hay = tok.encode(bytes(np.asarray(val_tokens[:100_000])).decode("utf-8", "replace"))
    examples = needle_examples(hay, tok, [200, 400], [0.3, 0.7], seed=0, kind="number")
    for ex in examples:
        assert len(ex.tokens) == ex.length
        assert tok.decode(ex.tokens[ex.answer_start:]).strip() == ex.secret


def test_needle_accuracy_oracle_and_wrong_model(val_tokens):
    tok = load_tokenizer("bytes")
    examples = needle_examples(val_tokens, tok, [128, 256], [0.2, 0.8], seed=0, samples_per_depth=2)
    table = {tuple(ex.tokens.tolist()): ex.tokens for ex in examples}

    def oracle(inputs):  # logits that put all mass on the true next token (the whole example is fed)
        assert all(tuple(seq.tolist()) in table for seq in inputs)
        out = torch.zeros(*inputs.shape, 256)
        for row, seq in enumerate(inputs):
            full = table[tuple(seq.tolist())]
            out[row, torch.arange(len(seq) - 1), full[1:]] = 1.0
        return out

    def off_by_one(inputs):  # right everywhere except the last answer token (predicted at position -2)
        out = oracle(inputs)
        out[:, -2] = 0.0
        out[:, -2, 0] = 1.0
        return out

    assert needle_accuracy(oracle, examples) == {128: 1.0, 256: 1.0}
    assert needle_accuracy(off_by_one, examples) == {128: 0.0, 256: 0.0}
    assert needle_hits(lambda x: torch.zeros(*x.shape, 256), examples) == [False] * len(examples)


def test_needle_errors(val_tokens):
    tok = load_tokenizer("bytes")
    with pytest.raises(UserInputError) as err:
        needle_examples(val_tokens, tok, [512, 2048], [0.5], seed=0, seq_len=1024)
    assert err.value.field == "needle_lengths" and "cannot fit" in err.value.problem
    with pytest.raises(UserInputError) as err:
        needle_examples(val_tokens, tok, [60], [0.5], seed=0)
    assert err.value.field == "needle_lengths" and "too short" in err.value.problem
    with pytest.raises(UserInputError) as err:
        needle_examples(val_tokens[:500], tok, [1000], [0.5], seed=0)
    assert err.value.field == "needle_lengths" and "haystack" in err.value.problem
    with pytest.raises(UserInputError) as err:
        needle_examples(val_tokens, tok, [512], [1.5], seed=0)
    assert err.value.field == "needle_depths"
    with pytest.raises(UserInputError) as err:
        needle_examples(val_tokens, tok, [512], [0.5], seed=0, kind="password")
    assert err.value.field == "needle_kind"
