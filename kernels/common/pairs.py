"""Static (token, slot) pairs of an SSC read, walked in blocks of bounded memory by the references.

A token t in segment s = seg(t) can read at most s distinct cached segments, and the slots of
`torch.topk` over logits with the unreadable segments at -inf hold the readable ones first; so
only slots j < min(K, s) can hold a readable segment, and the op ignores slots j >= seg(t).
Those pairs depend on the boundaries alone (not on the selected indices), so the reference can
enumerate them as Python-static index tensors - which also runs on the meta device, where the
activation-memory estimate runs - and read exactly min(K, s) states per token, which is what
`scaling.models.flops` counts. Each block gathers its pairs' states (`block_pairs` of them,
sized to a byte budget), so the live copy is bounded instead of one per (token, slot).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from kernels.common.segments import SegmentTable

PAIR_BLOCK_BYTES = 64 * 2**20  # live bytes of gathered states per block: small next to activations


@dataclass(frozen=True)
class SlotPairs:
    tokens: torch.Tensor  # (P,) int64 token of each pair
    slots: torch.Tensor  # (P,) int64 slot of each pair
    segment_of_token: torch.Tensor  # (P,) int64 seg(t) of each pair's token

    @property
    def n_pairs(self) -> int:
        return self.tokens.shape[0]


def slot_pairs(table: SegmentTable, n_slots: int, device: torch.device) -> SlotPairs:
    return _slot_pairs(table.bounds, n_slots, torch.device(device))


@lru_cache(maxsize=64)
def _slot_pairs(bounds: tuple[int, ...], n_slots: int, device: torch.device) -> SlotPairs:
    tokens, slots, segs = [], [], []
    for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        for t in range(a, b):
            for j in range(min(n_slots, s)):
                tokens.append(t)
                slots.append(j)
                segs.append(s)
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long, device=device)  # noqa: E731
    return SlotPairs(as_long(tokens), as_long(slots), as_long(segs))


def pair_blocks(pairs: SlotPairs, bytes_per_pair: int) -> list[tuple[int, int]]:
    """[start, end) ranges of pairs whose gathered states fit PAIR_BLOCK_BYTES (at least one pair)."""
    step = max(1, PAIR_BLOCK_BYTES // max(1, bytes_per_pair))
    return [(a, min(a + step, pairs.n_pairs)) for a in range(0, pairs.n_pairs, step)]


def gather_states(states: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """states (B, H, N, r, c) at chosen (B, H, p) -> (B, H, p, r, c): one block's copies only."""
    index = chosen[..., None, None].expand(*chosen.shape, *states.shape[-2:])
    return torch.gather(states, 2, index)


def scatter_states(grad: torch.Tensor, chosen: torch.Tensor, per_pair: torch.Tensor) -> None:
    """grad (B, H, N, r, c) += per_pair (B, H, p, r, c) at chosen (B, H, p)."""
    index = chosen[..., None, None].expand_as(per_pair)
    grad.scatter_add_(2, index, per_pair)


def block_slots(pairs: SlotPairs, a: int, b: int, indices: torch.Tensor, gates: torch.Tensor,
                n_states: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens, slots, chosen segment clamped into range, validity mask, gate) of pairs a..b."""
    tok, slot = pairs.tokens[a:b], pairs.slots[a:b]
    chosen = indices[:, :, tok, slot].long()
    valid = (chosen >= 0) & (chosen < pairs.segment_of_token[a:b]) & (chosen < n_states)
    return tok, slot, chosen.clamp(0, n_states - 1), valid, gates[:, :, tok, slot]
