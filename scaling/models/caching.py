"""Memory Caching: segment the sequence, cache each segment's final memory, read them back.

A token in segment s reads its online memory and the cached memories of segments 0..s-1, and
an aggregation rule combines the reads (Behrouz et al. 2026, DESIGN.md):

* ``none``     - the online read only (the base recurrent model).
* ``residual`` - plain sum of all reads.
* ``grm``      - softmax gates over {online, cached i} of <u_t, summary_i>; summary_i is the mean
  of segment i's L2-normalised keys, and the online summary the same mean over the current
  segment's prefix up to t (causal).
* ``soup``     - the same gates mix the memories' *parameters* layer by layer, then the mixed
  memory is read. For a matrix memory this equals ``grm``; for an MLP memory it does not.
* ``ssc``      - a router keeps the top-k cached segments by the same score; the gates cover only
  those plus the online memory. With k >= the number of cached segments it equals ``grm``.

Cost structure (what `flops.py` counts): cached reads are organised over *tiles* of C tokens
(C = the first segment's length; every segment is a whole number of tiles, also for log
segmentation). The pairs (tile, cached segment) with the segment strictly before the tile's own
are enumerated once, and all cached reads of the whole sequence are one batched matmul over
those pairs - exactly the causal reads, nothing masked away. SSC gathers the k selected states
per token and reads them in one batched matmul over (token, slot) pairs, so its read cost is
k per token, not N. Gradients flow through the cached states (nothing is detached).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from scaling.models.memory import MemoryInputs, SegmentPlan, State, linear_layer

STRATEGIES_WITH_GATES = ("grm", "soup", "ssc")


@dataclass(frozen=True)
class TileLayout:
    """Static index tables for the causal (tile, cached segment) read pairs."""

    tile_len: int
    n_tiles: int
    segment_of_token: tuple[int, ...]
    pair_tile: tuple[int, ...]
    pair_segment: tuple[int, ...]


@lru_cache(maxsize=256)
def tile_layout(bounds: tuple[int, ...]) -> TileLayout:
    tile = bounds[1] - bounds[0]
    length = bounds[-1]
    seg_of_token: list[int] = []
    for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        seg_of_token.extend([s] * (b - a))
    n_tiles = length // tile
    pair_tile, pair_seg = [], []
    for t in range(n_tiles):
        for i in range(seg_of_token[t * tile]):
            pair_tile.append(t)
            pair_seg.append(i)
    return TileLayout(tile, n_tiles, tuple(seg_of_token), tuple(pair_tile), tuple(pair_seg))


def segment_summaries(keys: torch.Tensor, bounds: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(cached, online) descriptors from L2-normalised keys (B, H, L, d).

    cached: (B, H, N, d) mean of each segment's keys. online: (B, H, L, d) mean of the current
    segment's keys from its start up to and including t - never the segment's future.
    """
    zero = keys.new_zeros(*keys.shape[:2], 1, keys.shape[-1])
    csum = torch.cat([zero, keys.cumsum(2)], dim=2)  # csum[t] = sum of keys[:t]
    starts = torch.tensor(bounds[:-1], device=keys.device)
    ends = torch.tensor(bounds[1:], device=keys.device)
    lengths = (ends - starts).to(keys.dtype)
    cached = (csum[:, :, ends] - csum[:, :, starts]) / lengths[:, None]
    layout = tile_layout(bounds)
    seg = torch.tensor(layout.segment_of_token, device=keys.device)
    seg_start = starts[seg]
    count = (torch.arange(keys.shape[2], device=keys.device) - seg_start + 1).to(keys.dtype)
    online = (csum[:, :, 1:] - csum[:, :, seg_start]) / count[:, None]
    return cached, online


def gate_logits(u: torch.Tensor, cached_summary: torch.Tensor, online_summary: torch.Tensor,
                bounds: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(online (B,H,L), cached (B,H,L,N) with non-cached segments at -inf)."""
    online = (u * online_summary).sum(-1)
    cached = torch.matmul(u, cached_summary.transpose(-1, -2))
    seg = torch.tensor(tile_layout(bounds).segment_of_token, device=u.device)
    visible = torch.arange(cached.shape[-1], device=u.device)[None, :] < seg[:, None]  # (L, N)
    return online, cached.masked_fill(~visible, float("-inf"))


def _read_layers(memory: torch.nn.Module, weights: State, z: torch.Tensor) -> torch.Tensor:
    for layer in range(memory.n_layers):
        z = linear_layer(weights[layer], z)
        if layer + 1 < memory.n_layers:
            z = memory.activation(z)
    return z


def online_read(memory: torch.nn.Module, ctx: dict, q: torch.Tensor) -> torch.Tensor:
    z = q
    for layer in range(memory.n_layers):
        z = memory.online_layer(ctx, z, layer)
        if layer + 1 < memory.n_layers:
            z = memory.activation(z)
    return z


def _pair_tables(bounds: tuple[int, ...], device: torch.device) -> tuple[TileLayout, torch.Tensor, torch.Tensor]:
    layout = tile_layout(bounds)
    return (layout, torch.tensor(layout.pair_tile, device=device, dtype=torch.long),
            torch.tensor(layout.pair_segment, device=device, dtype=torch.long))


def _tiles(x: torch.Tensor, layout: TileLayout) -> torch.Tensor:
    return x.reshape(*x.shape[:2], layout.n_tiles, layout.tile_len, *x.shape[3:])


def _pair_gates(gates: torch.Tensor, layout: TileLayout, tiles: torch.Tensor, segs: torch.Tensor) -> torch.Tensor:
    """gates (B,H,L,N) -> per-pair gates (B,H,P,T)."""
    per_tile = _tiles(gates, layout).transpose(-1, -2)  # (B,H,n_tiles,N,T)
    return per_tile[:, :, tiles, segs]


def _scatter_tiles(contrib: torch.Tensor, layout: TileLayout, tiles: torch.Tensor, length: int) -> torch.Tensor:
    out = contrib.new_zeros(*contrib.shape[:2], layout.n_tiles, layout.tile_len, contrib.shape[-1])
    return out.index_add(2, tiles, contrib).reshape(*contrib.shape[:2], length, contrib.shape[-1])


def cached_reads(memory: torch.nn.Module, states: State, q: torch.Tensor, gates: torch.Tensor | None,
                 bounds: tuple[int, ...]) -> torch.Tensor:
    """sum_i gate_{t,i} M_i(q_t) over the cached segments of every token, as one batched read."""
    layout, tiles, segs = _pair_tables(bounds, q.device)
    if tiles.numel() == 0:
        return torch.zeros_like(q[..., :1]).expand(*q.shape[:-1], states[-1].shape[-2]).clone()
    z = _tiles(q, layout)[:, :, tiles]  # (B,H,P,T,d)
    reads = _read_layers(memory, tuple(s[:, :, segs] for s in states), z)
    if gates is not None:
        reads = reads * _pair_gates(gates, layout, tiles, segs)[..., None]
    return _scatter_tiles(reads, layout, tiles, q.shape[2])


def soup_read(memory: torch.nn.Module, states: State, ctx: dict, q: torch.Tensor, online_gate: torch.Tensor,
              gates: torch.Tensor, bounds: tuple[int, ...]) -> torch.Tensor:
    """Read the gate-weighted mixture of memory parameters, one layer at a time.

    sum_i g_i W_i applied to z equals sum_i g_i (W_i z), so mixing the parameters of every
    layer never materialises a per-token weight matrix: each layer is a gated cached read of
    the token's own input plus the gated online layer, and the nonlinearity acts on the mix.
    """
    layout, tiles, segs = _pair_tables(bounds, q.device)
    pair_gates = _pair_gates(gates, layout, tiles, segs)[..., None] if tiles.numel() else None
    z = q
    for layer in range(memory.n_layers):
        mixed = online_gate[..., None] * memory.online_layer(ctx, z, layer)
        if pair_gates is not None:
            reads = linear_layer(states[layer][:, :, segs], _tiles(z, layout)[:, :, tiles]) * pair_gates
            mixed = mixed + _scatter_tiles(reads, layout, tiles, q.shape[2])
        z = memory.activation(mixed) if layer + 1 < memory.n_layers else mixed
    return z


@lru_cache(maxsize=256)
def _ssc_slots(bounds: tuple[int, ...], k_eff: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Static (token, slot) pairs whose slot holds a real cached segment: slot < segments before t."""
    seg = tile_layout(bounds).segment_of_token
    tokens, slots = [], []
    for t, s in enumerate(seg):
        for slot in range(min(k_eff, s)):
            tokens.append(t)
            slots.append(slot)
    return tuple(tokens), tuple(slots)


def ssc_reads(memory: torch.nn.Module, states: State, q: torch.Tensor, online_logit: torch.Tensor,
              cached_logits: torch.Tensor, top_k: int, bounds: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse selective caching: (online gate (B,H,L), gated sum of the top-k cached reads)."""
    n_cached_max = len(bounds) - 2
    k_eff = min(top_k, n_cached_max)
    if k_eff <= 0:
        return torch.ones_like(online_logit), torch.zeros_like(q[..., :1]).expand(
            *q.shape[:-1], states[-1].shape[-2]).clone()
    top_logits, top_idx = cached_logits.topk(k_eff, dim=-1)  # invalid slots are -inf, sorted last
    gates = torch.cat([online_logit[..., None], top_logits], dim=-1).softmax(-1)
    tok_list, slot_list = _ssc_slots(bounds, k_eff)
    if not tok_list:
        return gates[..., 0], torch.zeros_like(q[..., :1]).expand(*q.shape[:-1], states[-1].shape[-2]).clone()
    toks = torch.tensor(tok_list, device=q.device, dtype=torch.long)
    slots = torch.tensor(slot_list, device=q.device, dtype=torch.long)
    chosen = top_idx[:, :, toks, slots]  # (B,H,Pv) selected segment per (token, slot)
    z = q[:, :, toks].unsqueeze(3)  # (B,H,Pv,1,d)
    for layer in range(memory.n_layers):
        weight = states[layer]
        index = chosen.view(*chosen.shape, 1, 1).expand(*chosen.shape, *weight.shape[-2:])
        z = linear_layer(torch.gather(weight, 2, index), z)
        if layer + 1 < memory.n_layers:
            z = memory.activation(z)
    contrib = z[..., 0, :] * gates[:, :, toks, 1 + slots][..., None]
    out = contrib.new_zeros(*q.shape[:-1], contrib.shape[-1]).index_add(2, toks, contrib)
    return gates[..., 0], out


def memory_caching(memory: torch.nn.Module, inp: MemoryInputs, summary_keys: torch.Tensor,
                   u: torch.Tensor | None, plan: SegmentPlan, strategy: str, top_k: int) -> torch.Tensor:
    """Per-head mixer output (B, H, L, d_v) of `memory` under caching `strategy`."""
    states, ctx = memory.scan(inp, plan)
    bounds = plan.bounds
    if strategy == "none":
        return online_read(memory, ctx, inp.q)
    if strategy == "residual":
        return online_read(memory, ctx, inp.q) + cached_reads(memory, states, inp.q, None, bounds)
    assert u is not None, "gated strategies need the gate projection u"
    cached_summary, online_summary = segment_summaries(summary_keys, bounds)
    online_logit, cached_logits = gate_logits(u, cached_summary, online_summary, bounds)
    if strategy == "ssc":
        online_gate, reads = ssc_reads(memory, states, inp.q, online_logit, cached_logits, top_k, bounds)
        return online_gate[..., None] * online_read(memory, ctx, inp.q) + reads
    gates = torch.cat([online_logit[..., None], cached_logits], dim=-1).softmax(-1)
    if strategy == "grm":
        return gates[..., :1] * online_read(memory, ctx, inp.q) + cached_reads(
            memory, states, inp.q, gates[..., 1:], bounds)
    if strategy == "soup":
        return soup_read(memory, states, ctx, inp.q, gates[..., 0], gates[..., 1:], bounds)
    raise ValueError(f"unknown caching strategy {strategy!r}")
