"""Batches of token windows: random for training, fixed for evaluation.

`sample_batch` is a pure function of (seed, step): a run resumed at step s draws exactly the
batches the uninterrupted run drew, with no sampler state to checkpoint. Windows are gathered
by fancy indexing, so on a memory-mapped corpus only the touched pages are read.
"""

from __future__ import annotations

import numpy as np
import torch

from scaling.errors import UserInputError


def _seed_words(*values: int) -> list[int]:
    """Non-negative words for numpy's SeedSequence (negative seeds are folded in, not rejected)."""
    return [int(v) % (1 << 64) for v in values]


def batch_rng(seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng(_seed_words(seed, step))


def _check(tokens: np.ndarray, seq_len: int) -> None:
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
    if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < 1:
        raise UserInputError("model.seq_len", f"seq_len must be a positive integer, got {seq_len!r}",
                             "use e.g. 256")


def sample_batch(tokens: np.ndarray, seq_len: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """(batch_size, seq_len + 1) int64 windows at offsets drawn uniformly from every valid start."""
    _check(tokens, seq_len)
    if batch_size < 1:
        raise UserInputError("batch_tokens", f"batch size must be positive, got {batch_size}",
                             "raise batch_tokens to at least one sequence")
    n = len(tokens)
    if n < seq_len + 1:
        raise UserInputError("model.seq_len", f"the training tokens ({n:,}) are shorter than one sequence "
                             f"({seq_len + 1:,} = seq_len + 1)", "use a larger corpus or a shorter seq_len")
    starts = batch_rng(seed, step).integers(0, n - seq_len, size=batch_size)
    index = starts[:, None] + np.arange(seq_len + 1)[None, :]
    return torch.from_numpy(np.asarray(tokens[index], dtype=np.int64))


def eval_starts(n_tokens: int, seq_len: int, max_windows: int) -> np.ndarray:
    """Start offsets of the evaluation windows (see `eval_windows`)."""
    if n_tokens < seq_len + 1:
        return np.zeros(0, dtype=np.int64)
    n_tiles = (n_tokens - 1) // seq_len  # non-overlapping windows (sharing one boundary token)
    if n_tiles <= max_windows:
        return np.arange(n_tiles, dtype=np.int64) * seq_len
    return np.round(np.linspace(0, n_tokens - seq_len - 1, max_windows)).astype(np.int64)


def eval_windows(tokens: np.ndarray, seq_len: int, max_windows: int) -> torch.Tensor:
    """(n, seq_len + 1) int64 evaluation windows, deterministic.

    If the validation tokens hold at most `max_windows` back-to-back windows, all of them are
    returned (every target token is scored once). Otherwise `max_windows` windows are spread
    evenly from the first token to the last, so the sample covers the whole validation split.
    Fewer than seq_len + 1 tokens gives an empty (0, seq_len + 1) tensor.
    """
    _check(tokens, seq_len)
    if isinstance(max_windows, bool) or not isinstance(max_windows, (int, np.integer)) or max_windows < 1:
        raise UserInputError("eval_windows", f"the number of evaluation windows must be a positive integer, "
                             f"got {max_windows!r}", "use e.g. 16")
    starts = eval_starts(len(tokens), seq_len, int(max_windows))
    if starts.size == 0:
        return torch.zeros((0, seq_len + 1), dtype=torch.int64)
    index = starts[:, None] + np.arange(seq_len + 1)[None, :]
    return torch.from_numpy(np.asarray(tokens[index], dtype=np.int64))
