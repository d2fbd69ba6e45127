"""Segment tables for the cached-read ops: which cached segments each token may read.

A token t in segment s = seg(t) reads cached segments i < s. Segments are given by their
boundaries [0, b1, ..., L] (constant or log segmentation alike), so the kernels never assume
equal lengths: they look up seg(t) in a per-token table and the first reader of segment i,
bounds[i + 1], in the boundary table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

from scaling.errors import UserInputError

Bounds = Sequence[int] | torch.Tensor


@dataclass(frozen=True)
class SegmentTable:
    """Boundaries and the per-token segment index, as Python ints and int32 device tensors."""

    bounds: tuple[int, ...]  # [0, b1, ..., L]
    n_read: int  # cached segments that at least one token reads: min(n_states, n_segments - 1)
    bounds_i32: torch.Tensor  # (n_segments + 1,)
    seg_of_token_i32: torch.Tensor  # (L,)

    @property
    def length_tokens(self) -> int:
        return self.bounds[-1]


def as_bounds(bounds: Bounds) -> tuple[int, ...]:
    """Validate boundaries: start at 0, strictly increasing."""
    values = tuple(int(b) for b in (bounds.tolist() if isinstance(bounds, torch.Tensor) else bounds))
    if len(values) < 2 or values[0] != 0 or any(b <= a for a, b in zip(values[:-1], values[1:])):
        raise UserInputError("bounds", f"segment boundaries must start at 0 and strictly increase, got {values}",
                             "pass [0, b1, ..., L], e.g. ModelConfig.segment_bounds(L)")
    return values


def segment_table(bounds: Bounds, length_tokens: int, n_states: int, device: torch.device) -> SegmentTable:
    """Validated tables for one layout (cached: every layer of a step reuses the same device tensors)."""
    return _segment_table(as_bounds(bounds), length_tokens, n_states, torch.device(device))


@lru_cache(maxsize=64)
def _segment_table(values: tuple[int, ...], length_tokens: int, n_states: int, device: torch.device) -> SegmentTable:
    if values[-1] != length_tokens:
        raise UserInputError("bounds", f"the last boundary {values[-1]} is not the sequence length {length_tokens}",
                             "end the boundaries at L, the length of the queries")
    n_segments = len(values) - 1
    if n_states < n_segments - 1:
        raise UserInputError("states", f"{n_states} cached states for {n_segments} segments",
                             "pass one state per segment (at least the first n_segments - 1)")
    bounds_t = torch.tensor(values, dtype=torch.int32, device=device)
    positions = torch.arange(length_tokens, dtype=torch.int32, device=device)
    seg = torch.searchsorted(bounds_t[1:-1].contiguous(), positions, right=True).to(torch.int32)
    return SegmentTable(values, min(n_states, n_segments - 1), bounds_t, seg)


def reads_nothing(table: SegmentTable, indices: torch.Tensor | None) -> bool:
    """No token reads a cached segment: a single segment, or SSC with zero slots."""
    return table.n_read == 0 or (indices is not None and indices.shape[-1] == 0)


def visible_mask(table: SegmentTable, n_states: int) -> torch.Tensor:
    """(L, n_states) bool: cached segment i is readable at token t (i < seg(t))."""
    cols = torch.arange(n_states, device=table.seg_of_token_i32.device)
    return cols[None, :] < table.seg_of_token_i32[:, None]


def slot_mask(table: SegmentTable, indices: torch.Tensor) -> torch.Tensor:
    """(B, H, L, K) bool: an SSC slot holds a readable segment (0 <= index < seg(t), slot < seg(t))."""
    seg = table.seg_of_token_i32.to(indices.dtype)[:, None]
    slot = torch.arange(indices.shape[-1], device=indices.device, dtype=indices.dtype)
    return (indices >= 0) & (indices < seg) & (slot < seg)
