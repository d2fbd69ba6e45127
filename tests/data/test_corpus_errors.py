"""Bad corpus input raises UserInputError naming the field, with a fix."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scaling.data.corpus import CorpusSpec, load_corpus
from scaling.errors import UserInputError


def raises(field: str, spec: CorpusSpec | None = None, min_tokens: int = 0, **spec_kwargs) -> UserInputError:
    with pytest.raises(UserInputError) as err:
        load_corpus(spec if spec is not None else CorpusSpec(**spec_kwargs), min_tokens=min_tokens)
    assert err.value.field == field, err.value
    assert err.value.problem and err.value.fix
    return err.value


def test_empty_file(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    err = raises("corpus.source", source=str(tmp_path / "empty.txt"))
    assert "empty" in err.problem


def test_empty_jsonl(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    raises("corpus.source", source=str(tmp_path / "empty.jsonl"))


def test_missing_path(tmp_path):
    err = raises("corpus.source", source=str(tmp_path / "no" / "such.txt"))
    assert "does not exist" in err.problem


def test_glob_matching_nothing(tmp_path):
    (tmp_path / "a.txt").write_text("text")
    err = raises("corpus.source", source=str(tmp_path / "*.jsonl"))
    assert "no files match" in err.problem


def test_folder_without_corpus_files(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    raises("corpus.source", source=str(tmp_path))


def test_shorter_than_one_sequence(tmp_path):
    (tmp_path / "short.txt").write_text("x" * 100)
    load_corpus(CorpusSpec(source=str(tmp_path / "short.txt")), min_tokens=65)  # 95 train tokens: fine
    err = raises("corpus.source", min_tokens=257, source=str(tmp_path / "short.txt"))
    assert "shorter than one sequence" in err.problem and "257" in err.problem


def test_truncated_bin(tmp_path):
    np.arange(100, dtype=np.uint16).tofile(tmp_path / "t.bin")
    with open(tmp_path / "t.bin", "ab") as fh:
        fh.write(b"\x01")  # 201 bytes: not a whole number of uint16
    err = raises("corpus.source", source=str(tmp_path / "t.bin"))
    assert "multiple" in err.problem


def test_bin_not_multiple_of_uint32(tmp_path):
    np.arange(101, dtype=np.uint16).tofile(tmp_path / "t.bin")  # 202 bytes
    raises("corpus.source", source=str(tmp_path / "t.bin"), token_dtype="uint32")


def test_empty_bin(tmp_path):
    (tmp_path / "t.bin").write_bytes(b"")
    raises("corpus.source", source=str(tmp_path / "t.bin"))


def test_npy_garbage(tmp_path):
    (tmp_path / "t.npy").write_bytes(b"this is not a numpy file at all" * 10)
    err = raises("corpus.source", source=str(tmp_path / "t.npy"))
    assert ".npy" in err.problem


def test_npy_float_array(tmp_path):
    np.save(tmp_path / "t.npy", np.linspace(0, 1, 100))
    raises("corpus.source", source=str(tmp_path / "t.npy"))


def test_token_ids_beyond_vocab(tmp_path):
    tokens = np.arange(1000, dtype=np.uint16)  # ids up to 999 >= 256 (byte vocabulary)
    tokens.tofile(tmp_path / "t.bin")
    err = raises("corpus.tokenizer", source=str(tmp_path / "t.bin"))
    assert "999" in err.problem


def test_negative_token_ids(tmp_path):
    np.save(tmp_path / "t.npy", np.array([1, 2, -3, 4] * 50, dtype=np.int64))
    raises("corpus.tokenizer", source=str(tmp_path / "t.npy"))


def test_unknown_tokenizer_file(tmp_path):
    (tmp_path / "a.txt").write_text("text " * 100)
    raises("corpus.tokenizer", source=str(tmp_path / "a.txt"), tokenizer=str(tmp_path / "missing-tokenizer.json"))


def test_jsonl_without_field(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"body": "no text"}) + "\n")
    err = raises("corpus.text_field", source=str(tmp_path / "d.jsonl"))
    assert "line 2" in err.problem and "'text'" in err.problem


def test_jsonl_invalid_line(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    err = raises("corpus.source", source=str(tmp_path / "d.jsonl"))
    assert "line 2" in err.problem


def test_parquet_without_column(tmp_path):
    pq.write_table(pa.table({"body": ["a", "b"]}), tmp_path / "d.parquet")
    err = raises("corpus.text_field", source=str(tmp_path / "d.parquet"))
    assert "body" in err.problem


def test_parquet_non_text_column(tmp_path):
    pq.write_table(pa.table({"text": [1, 2, 3]}), tmp_path / "d.parquet")
    raises("corpus.text_field", source=str(tmp_path / "d.parquet"))


def test_corrupt_parquet(tmp_path):
    (tmp_path / "d.parquet").write_bytes(b"PAR1 but not really")
    raises("corpus.source", source=str(tmp_path / "d.parquet"))


def test_mixed_tokens_and_text(tmp_path):
    np.arange(100, dtype=np.uint16).tofile(tmp_path / "a.bin")
    (tmp_path / "b.txt").write_text("text")
    raises("corpus.format", source=str(tmp_path))


def test_binary_file_of_unknown_type(tmp_path):
    (tmp_path / "blob.dat").write_bytes(bytes(range(256)) * 4)
    raises("corpus.format", source=str(tmp_path / "blob.dat"))


def test_unsupported_scheme():
    raises("corpus.source", source="gs://bucket/data.txt")


@pytest.mark.parametrize("kwargs, field", [
    ({"format": "csv"}, "corpus.format"),
    ({"token_dtype": "int8"}, "corpus.token_dtype"),
    ({"val_fraction": 1.0}, "corpus.val_fraction"),
    ({"val_fraction": -0.1}, "corpus.val_fraction"),
    ({"max_bytes": 0}, "corpus.max_bytes"),
    ({"text_field": ""}, "corpus.text_field"),
])
def test_invalid_spec_fields(kwargs, field):
    with pytest.raises(UserInputError) as err:
        CorpusSpec(**kwargs)
    assert err.value.field == field


def test_builtin_with_token_format():
    raises("corpus.format", source="builtin", format="tokens")
