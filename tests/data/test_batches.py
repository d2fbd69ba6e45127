"""Training batches are a pure function of (seed, step); evaluation windows are fixed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scaling.data.batches import eval_windows, sample_batch
from scaling.errors import UserInputError

TOKENS = (np.arange(10_000) * 31 % 256).astype(np.uint8)


def test_sample_batch_shape_and_windows():
    batch = sample_batch(TOKENS, 32, 8, seed=0, step=0)
    assert batch.shape == (8, 33) and batch.dtype == torch.int64
    for row in batch.numpy():  # each row is a contiguous window of the stream
        starts = [s for s in range(len(TOKENS) - 32) if TOKENS[s] == row[0] and TOKENS[s + 1] == row[1]]
        assert any(np.array_equal(TOKENS[s:s + 33], row) for s in starts)


def test_sample_batch_is_pure_in_seed_and_step():
    a = sample_batch(TOKENS, 16, 4, seed=3, step=7)
    sample_batch(TOKENS, 16, 4, seed=3, step=8)  # no hidden state between calls
    assert torch.equal(a, sample_batch(TOKENS, 16, 4, seed=3, step=7))
    assert not torch.equal(a, sample_batch(TOKENS, 16, 4, seed=3, step=8))
    assert not torch.equal(a, sample_batch(TOKENS, 16, 4, seed=4, step=7))


def test_sample_batch_reaches_both_ends_on_a_memmap(tmp_path):
    path = tmp_path / "t.bin"
    np.arange(40, dtype=np.uint16).tofile(path)
    mm = np.memmap(path, dtype=np.uint16, mode="r")
    firsts = {int(sample_batch(mm, 8, 16, seed=1, step=s)[:, 0].min()) for s in range(50)}
    lasts = {int(sample_batch(mm, 8, 16, seed=1, step=s)[:, -1].max()) for s in range(50)}
    assert 0 in firsts and 39 in lasts  # first and last valid window both drawn, nothing past the end


def test_sample_batch_too_short():
    with pytest.raises(UserInputError):
        sample_batch(TOKENS[:10], 16, 2, seed=0, step=0)


def test_eval_windows_tile_short_splits_exactly():
    val = np.arange(101, dtype=np.int64)
    w = eval_windows(val, 10, max_windows=100)
    assert w.shape == (10, 11)
    assert torch.equal(w[:, 1:].reshape(-1), torch.arange(1, 101))  # every target once


def test_eval_windows_spread_over_long_splits():
    val = np.arange(100_000, dtype=np.int64)
    w = eval_windows(val, 64, max_windows=8)
    assert w.shape == (8, 65)
    assert int(w[0, 0]) == 0 and int(w[-1, -1]) == 99_999
    starts = w[:, 0].numpy()
    assert np.all(np.diff(starts) > 0) and np.ptp(np.diff(starts)) <= 1
    assert torch.equal(w, eval_windows(val, 64, max_windows=8))


def test_eval_windows_empty_and_invalid():
    assert eval_windows(np.arange(5), 8, 4).shape == (0, 9)
    with pytest.raises(UserInputError):
        eval_windows(np.arange(100), 8, 0)
