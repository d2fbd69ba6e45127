"""The built-in corpus: the running Python's standard-library sources."""

from __future__ import annotations

import numpy as np

from scaling.data import builtin
from scaling.data.corpus import CorpusSpec, load_corpus


def test_builtin_is_deterministic_large_and_described(monkeypatch, tmp_path):
    monkeypatch.setenv("MCSCALE_CACHE", str(tmp_path / "fresh"))  # built from the files, then cached
    first = load_corpus(CorpusSpec())
    second = load_corpus(CorpusSpec())  # from the cache
    assert isinstance(second.train, np.memmap)
    assert np.array_equal(first.train, second.train) and np.array_equal(first.val, second.val)
    n = len(first.train) + len(first.val)
    assert n > 2_000_000 and len(first.val) > 50_000 and len(first.train) > 10 * len(first.val)
    assert f"{n:,} tokens" in first.description and "files" in first.description
    assert first.description == second.description

    monkeypatch.setenv("MCSCALE_CACHE", "off")  # building also works without any cache
    uncached = load_corpus(CorpusSpec())
    assert not isinstance(uncached.train, np.memmap)
    assert np.array_equal(uncached.train, first.train) and np.array_equal(uncached.val, first.val)


def test_builtin_is_real_python_source():
    corpus = load_corpus(CorpusSpec(max_bytes=200_000))
    text = bytes(np.asarray(corpus.train[:200_000])).decode("utf-8")
    assert "def " in text and "import " in text and "class " in text


def test_builtin_split_is_by_file_disjoint_and_fixed():
    files = builtin.builtin_files()
    assert len(files) > 300 and files == sorted(files)
    assert not any(part in ("test", "tests", "site-packages", "idlelib")
                   for f in files for part in f.split("/")[:-1])
    val = [f for f in files if builtin.is_validation(f, 0.05)]
    train = [f for f in files if not builtin.is_validation(f, 0.05)]
    assert set(val).isdisjoint(train) and len(val) + len(train) == len(files)
    assert 0.02 < len(val) / len(files) < 0.10
    # fixed: a file's side depends on its path only, not on which other files exist
    subset = files[::3]
    assert [f for f in subset if builtin.is_validation(f, 0.05)] == [f for f in val if f in set(subset)]

    docs = builtin.builtin_documents(0.05)
    assert docs.val_files == val and docs.train_files == train
    root = builtin.stdlib_root()
    assert docs.val[0] == (root / val[0]).read_bytes()
    corpus = load_corpus(CorpusSpec())
    assert len(corpus.val) == sum(map(len, docs.val)) + 2 * (len(docs.val) - 1)
    assert bytes(np.asarray(corpus.val[: len(docs.val[0])])) == docs.val[0]


def test_builtin_max_bytes_keeps_both_sides():
    corpus = load_corpus(CorpusSpec(max_bytes=100_000))
    assert 0 < len(corpus.val) < len(corpus.train)
    assert len(corpus.train) + len(corpus.val) <= 100_000 + 2 * 200  # plus separators
    assert "max_bytes" in corpus.description
