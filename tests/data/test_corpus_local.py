"""Local corpora: text, glob, folder, JSONL, Parquet, token shards (memory-mapped)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scaling.data.corpus import CorpusSpec, load_corpus

from .conftest import SAMPLE_TEXT
from .test_tokenizers import train_bpe


def stream(corpus) -> bytes:
    return np.concatenate([np.asarray(corpus.train), np.asarray(corpus.val)]).astype(np.uint8).tobytes()


def test_text_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text(SAMPLE_TEXT, encoding="utf-8")
    corpus = load_corpus(CorpusSpec(source=str(path)))
    assert stream(corpus) == SAMPLE_TEXT.encode()
    n = len(SAMPLE_TEXT.encode())
    assert len(corpus.val) == int(np.ceil(0.05 * n)) and len(corpus.train) + len(corpus.val) == n
    assert f"{n:,} tokens" in corpus.description and "validation" in corpus.description
    again = load_corpus(CorpusSpec(source=str(path)))  # from the cache this time
    assert np.array_equal(again.train, corpus.train) and np.array_equal(again.val, corpus.val)


def test_text_file_changes_are_seen(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("first version " * 50)
    first = load_corpus(CorpusSpec(source=str(path)))
    path.write_text("second, longer version " * 50)
    second = load_corpus(CorpusSpec(source=str(path)))
    assert stream(first) == b"first version " * 50 and stream(second) == b"second, longer version " * 50


def test_text_without_cache_equals_cached(tmp_path, monkeypatch):
    path = tmp_path / "notes.md"
    path.write_text(SAMPLE_TEXT)
    cached = load_corpus(CorpusSpec(source=str(path)))
    monkeypatch.setenv("MCSCALE_CACHE", "off")
    plain = load_corpus(CorpusSpec(source=str(path)))
    assert not isinstance(plain.train, np.memmap)
    assert np.array_equal(plain.train, cached.train) and np.array_equal(plain.val, cached.val)


def test_glob_and_folder_concatenate_in_sorted_order(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("bravo " * 40)
    (tmp_path / "a.txt").write_text("alpha " * 40)
    (tmp_path / "sub" / "c.md").write_text("charlie " * 40)
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")  # skipped under auto
    (tmp_path / ".hidden.txt").write_text("never read")
    expected = b"\n\n".join([b"alpha " * 40, b"bravo " * 40, b"charlie " * 40])
    folder = load_corpus(CorpusSpec(source=str(tmp_path)))
    assert stream(folder) == expected
    assert "1 other file(s) skipped" in folder.description
    globbed = load_corpus(CorpusSpec(source=str(tmp_path / "**" / "*.txt")))
    assert stream(globbed) == b"\n\n".join([b"alpha " * 40, b"bravo " * 40])


def test_max_bytes_caps_the_text(tmp_path):
    (tmp_path / "a.txt").write_text("a" * 1000)
    (tmp_path / "b.txt").write_text("b" * 1000)
    corpus = load_corpus(CorpusSpec(source=str(tmp_path), max_bytes=1500))
    assert stream(corpus) == b"a" * 1000 + b"\n\n" + b"b" * 500
    assert "max_bytes" in corpus.description


def test_jsonl_text_field(tmp_path):
    records = [{"id": i, "body": f"document number {i} " * 10} for i in range(30)]
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    corpus = load_corpus(CorpusSpec(source=str(path), text_field="body"))
    assert stream(corpus) == "\n\n".join(r["body"] for r in records).encode()
    assert "30 documents" in corpus.description


def test_json_array_and_gzip_jsonl(tmp_path):
    import gzip

    records = [{"text": f"record {i}"} for i in range(5)]
    (tmp_path / "a.json").write_text(json.dumps(records))
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress("\n".join(json.dumps(r) for r in records).encode()))
    corpus = load_corpus(CorpusSpec(source=str(tmp_path), val_fraction=0.2))
    text = "\n\n".join(r["text"] for r in records)
    assert stream(corpus) == f"{text}\n\n{text}".encode()


def test_parquet_text_column(tmp_path):
    texts = [f"row {i}: parquet text with unicode — {i * 'é'}" for i in range(40)]
    table = pa.table({"id": list(range(40)), "content": texts})
    pq.write_table(table, tmp_path / "part-0.parquet", row_group_size=7)
    corpus = load_corpus(CorpusSpec(source=str(tmp_path / "part-0.parquet"), text_field="content"))
    assert stream(corpus) == "\n\n".join(texts).encode()


def test_text_with_hf_tokenizer_counts_bytes(tmp_path):
    tok_path = train_bpe(tmp_path / "bpe.json")
    path = tmp_path / "notes.txt"
    path.write_text(SAMPLE_TEXT)
    corpus = load_corpus(CorpusSpec(source=str(path), tokenizer=str(tok_path)))
    assert corpus.train.dtype == np.uint16 and corpus.tokenizer.vocab_size > 256
    ids = np.concatenate([corpus.train, corpus.val])
    assert len(ids) < len(SAMPLE_TEXT.encode())
    assert corpus.tokenizer.decode(ids) == SAMPLE_TEXT
    assert int(corpus.tokenizer.token_bytes[ids].sum()) == len(SAMPLE_TEXT.encode())


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_bin_shard_is_memory_mapped(tmp_path, dtype):
    tokens = (np.arange(5000) * 7 % 256).astype(dtype)
    tokens.tofile(tmp_path / "shard.bin")
    spec = CorpusSpec(source=str(tmp_path / "shard.bin"), token_dtype=dtype if dtype == "uint32" else "auto")
    corpus = load_corpus(spec, min_tokens=65)
    assert isinstance(corpus.train, np.memmap) and isinstance(corpus.val, np.memmap)
    assert corpus.train.dtype == np.dtype(dtype)
    assert np.array_equal(np.concatenate([corpus.train, corpus.val]), tokens)
    assert len(corpus.val) == 250


def test_npy_shard_is_memory_mapped(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 256, size=3000).astype(np.int32)
    np.save(tmp_path / "tokens.npy", tokens)
    corpus = load_corpus(CorpusSpec(source=str(tmp_path / "tokens.npy"), val_fraction=0.1))
    assert isinstance(corpus.train, np.memmap)
    assert np.array_equal(corpus.train, tokens[:2700]) and np.array_equal(corpus.val, tokens[2700:])


def test_shards_split_by_name_and_concatenated(tmp_path):
    a = np.arange(0, 100, dtype=np.uint16)
    b = np.arange(100, 250, dtype=np.uint16) % 256
    v = np.arange(7, 57, dtype=np.uint16)
    a.tofile(tmp_path / "corpus_train_000.bin")
    b.astype(np.uint16).tofile(tmp_path / "corpus_train_001.bin")
    v.tofile(tmp_path / "corpus_val_000.bin")
    corpus = load_corpus(CorpusSpec(source=str(tmp_path / "*.bin")))
    assert np.array_equal(corpus.train, np.concatenate([a, b])) and np.array_equal(corpus.val, v)
    assert isinstance(corpus.train, np.memmap) and isinstance(corpus.val, np.memmap)
    assert "split by shard name" in corpus.description


def test_llmc_header_shard(tmp_path):
    tokens = np.arange(300, dtype=np.uint16) % 256
    header = np.zeros(256, dtype=np.int32)
    header[:3] = [20240520, 1, len(tokens)]
    with open(tmp_path / "fineweb_train_000001.bin", "wb") as fh:
        fh.write(header.tobytes())
        fh.write(tokens.tobytes())
    corpus = load_corpus(CorpusSpec(source=str(tmp_path / "fineweb_train_000001.bin"), val_fraction=0.1))
    assert np.array_equal(np.concatenate([corpus.train, corpus.val]), tokens)
