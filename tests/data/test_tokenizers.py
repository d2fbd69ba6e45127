"""Tokenizers: bytes and Hugging Face tokenizer.json, with per-token byte lengths for bits per byte."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

from scaling.data.tokenizers import ByteTokenizer, encode_documents, load_tokenizer
from scaling.errors import UserInputError

from .conftest import SAMPLE_TEXT


def train_bpe(path, text: str = SAMPLE_TEXT, vocab_size: int = 400, special: tuple[str, ...] = ("<|endoftext|>",)):
    """A tiny byte-level BPE trained on `text`, saved as tokenizer.json."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([text], trainer=trainer)
    tok.save(str(path))
    return path


def test_bytes_tokenizer_round_trip_and_byte_lengths():
    tok = load_tokenizer()
    assert isinstance(tok, ByteTokenizer) and tok.name == "bytes" and tok.vocab_size == 256
    ids = tok.encode(SAMPLE_TEXT)
    assert ids.dtype == np.int64 and ids.max() < 256
    assert tok.decode(ids) == SAMPLE_TEXT
    assert tok.token_bytes.dtype == np.int64 and tok.token_bytes.shape == (256,)
    assert int(tok.token_bytes[ids].sum()) == len(SAMPLE_TEXT.encode("utf-8"))


def test_hf_bpe_round_trip_and_token_bytes(tmp_path):
    path = train_bpe(tmp_path / "bpe.json")
    tok = load_tokenizer(str(path))
    assert tok.vocab_size == HFTokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)
    assert tok.vocab_size > 256  # merges were learned
    text = "Memory Caching: ναί, 日本語 🙂 — segments are frozen.\n" + SAMPLE_TEXT[:500]
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and len(ids) < len(text.encode("utf-8"))  # it compresses
    assert tok.decode(ids) == text
    assert tok.token_bytes.shape == (tok.vocab_size,) and tok.token_bytes.dtype == np.int64
    # exact for byte-level BPE, even for ids holding part of a multi-byte character
    assert int(tok.token_bytes[ids].sum()) == len(text.encode("utf-8"))
    special = json.loads(path.read_text())["added_tokens"][0]["id"]
    assert tok.token_bytes[special] == 0


def test_hf_token_bytes_match_decode_for_complete_tokens(tmp_path):
    tok = load_tokenizer(str(train_bpe(tmp_path / "bpe.json")))
    for i in range(1, tok.vocab_size):
        text = tok.decode([i])
        if "\ufffd" not in text:  # a whole character sequence: decode alone is exact
            assert tok.token_bytes[i] == len(text.encode("utf-8")), (i, text)


def test_hf_tokenizer_from_folder(tmp_path):
    train_bpe(tmp_path / "tokenizer.json")
    tok = load_tokenizer(str(tmp_path))
    assert tok.decode(tok.encode("segments are frozen")) == "segments are frozen"


def test_encode_documents_separates_documents(tmp_path):
    tok = load_tokenizer(str(train_bpe(tmp_path / "bpe.json")))
    docs = [b"first document", "second: caf\u00e9".encode(), b""]
    ids = encode_documents(docs, tok)
    assert ids.dtype == np.uint16
    assert tok.decode(ids) == "first document\n\nsecond: caf\u00e9\n\n"
    byte_ids = encode_documents(docs, ByteTokenizer())
    assert byte_ids.dtype == np.uint8 and byte_ids.tobytes() == b"\n\n".join(docs)


@pytest.mark.parametrize("make", ["missing", "garbage", "not_tokenizer", "unknown_name", "empty_folder"])
def test_bad_tokenizer_raises_user_input_error(tmp_path, make):
    if make == "missing":
        name = str(tmp_path / "nope.json")
    elif make == "garbage":
        (tmp_path / "t.json").write_bytes(b"\x00\x01 definitely not json")
        name = str(tmp_path / "t.json")
    elif make == "not_tokenizer":
        (tmp_path / "t.json").write_text(json.dumps({"hello": "world"}))
        name = str(tmp_path / "t.json")
    elif make == "unknown_name":
        name = "gpt-17-tokenizer"
    else:
        name = str(tmp_path)
    with pytest.raises(UserInputError) as err:
        load_tokenizer(name)
    assert err.value.field == "tokenizer"
    assert err.value.fix
