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

* ``residual`` on a matrix memory collapses to one read of the summed state
  (S_online + sum_i S_i) q = S_online q + (sum_i S_i) q, so it is computed - and charged - as
  one cached read per token of the prefix sum of the cached states.

Cost structure (what `flops.py` counts): every cached read runs through the ops of `kernels/`
(`gated_cached_read`, `ssc_cached_read`, `mlp_cached_read`): Triton kernels on CUDA, a PyTorch
reference elsewhere. Both read exactly the causal pairs - segment i by the tokens after it, nothing
masked away - without materialising a state copy per (tile, segment) or per (token, slot): the
kernels load each state once per token block, the reference loops over segments (or over blocks
of SSC's static (token, slot) pairs, k reads per token) and recomputes in its backward. SSC
reads k states per token, not N. Gradients flow through the cached states (nothing is detached).

`cached_reads(memory, states, q, gates, bounds)` is the one cached-read step (finished
segments' states + queries + gates + segment bounds -> output). The segment descriptors are
accumulated per segment in fp32, also under bf16 autocast: a whole-sequence running sum loses
the short segments' means to cancellation.
"""

from __future__ import annotations

import contextlib

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from kernels import gated_cached_read, mlp_cached_read, ssc_cached_read
from scaling.models.config import GATED_STRATEGIES
from scaling.models.memory import MatrixMemory, MemoryInputs, SegmentPlan, State

STRATEGIES_WITH_GATES = GATED_STRATEGIES


@dataclass(frozen=True)
class TileLayout:
    """Tiles (the gcd of the segment lengths) and each token's segment, for the descriptor sums."""

    tile_len: int
    n_tiles: int
    segment_of_token: tuple[int, ...]


@lru_cache(maxsize=256)
def tile_layout(bounds: tuple[int, ...]) -> TileLayout:
    lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    tile = math.gcd(*lengths)
    length = bounds[-1]
    seg_of_token: list[int] = []
    for s, n in enumerate(lengths):
        seg_of_token.extend([s] * n)
    return TileLayout(tile, length // tile, tuple(seg_of_token))


@dataclass(frozen=True)
class LayoutTensors:
    """One segment layout's index tensors on one device, built once and reused by every layer and
    step: a `torch.tensor(python_list, device=cuda)` per use is a blocking host-to-device copy
    (~7 per layer per forward before these were cached; `scaling.train.host_syncs` counts them)."""

    segment_of_token: torch.Tensor  # (L,) int64
    segment_of_tile: torch.Tensor  # (n_tiles,) int64
    segment_start: torch.Tensor  # (N,) int64 first token of each segment
    segment_len: torch.Tensor  # (N,) int64
    visible: torch.Tensor  # (L, N) bool: cached segment i is readable at token t (i < seg(t))


@lru_cache(maxsize=256)
def layout_tensors(bounds: tuple[int, ...], device: torch.device) -> LayoutTensors:
    layout = tile_layout(bounds)
    # Built outside inference mode even when first asked for by an evaluation under
    # `torch.inference_mode()`: inference tensors cannot be saved for a later training backward.
    with torch.inference_mode(False):
        seg = torch.tensor(layout.segment_of_token, dtype=torch.long, device=device)
        starts = torch.tensor(bounds[:-1], dtype=torch.long, device=device)
        lengths = torch.tensor(bounds[1:], dtype=torch.long, device=device) - starts
        visible = torch.arange(len(bounds) - 1, device=device)[None, :] < seg[:, None]
        return LayoutTensors(seg, seg[:: layout.tile_len].clone(), starts, lengths, visible)


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off (fp32 sums under bf16 training); the meta device, which the memory estimate
    runs on, has no autocast to turn off."""
    if device.type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)


def segment_summaries(keys: torch.Tensor, bounds: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(cached, online) descriptors in fp32 from L2-normalised keys (B, H, L, d).

    cached: (B, H, N, d) mean of each segment's keys. online: (B, H, L, d) mean of the current
    segment's keys from its start up to and including t - never the segment's future. Sums run
    within a tile, then over the tiles of one segment, in fp32: no sum ever spans two segments,
    so a short segment's mean is never a difference of two long running sums.
    """
    layout = tile_layout(bounds)
    b, h, length, d = keys.shape
    acc = torch.promote_types(keys.dtype, torch.float32)  # fp32, or fp64 when the model runs in fp64
    with _no_autocast(keys.device):
        tiles = keys.to(acc).reshape(b, h, layout.n_tiles, layout.tile_len, d)
        within = tiles.cumsum(3)  # running sum inside each tile
        tile_sum = within[:, :, :, -1]  # (B, H, n_tiles, d)
        index = layout_tensors(bounds, keys.device)
        n_seg = len(bounds) - 1
        sums = tile_sum.new_zeros(b, h, n_seg, d).index_add(2, index.segment_of_tile, tile_sum)
        cached = sums / index.segment_len.to(acc)[:, None]
        earlier = _earlier_tiles_of_segment(tile_sum, bounds, layout)  # (B, H, n_tiles, d)
        starts = index.segment_start[index.segment_of_token]
        count = (torch.arange(length, device=keys.device) - starts + 1).to(acc)
        online = (within + earlier[:, :, :, None]).reshape(b, h, length, d) / count[:, None]
    return cached, online


def _earlier_tiles_of_segment(tile_sum: torch.Tensor, bounds: tuple[int, ...], layout: TileLayout) -> torch.Tensor:
    """For every tile, the fp32 sum of the tiles before it in its own segment (0 for a segment's first)."""
    tile = layout.tile_len
    pieces = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        part = tile_sum[:, :, a // tile: b // tile]
        if part.shape[2] == 1:
            pieces.append(torch.zeros_like(part))
        else:
            pieces.append(torch.cat([torch.zeros_like(part[:, :, :1]), part[:, :, :-1].cumsum(2)], dim=2))
    return torch.cat(pieces, dim=2)


def gate_logits(u: torch.Tensor, cached_summary: torch.Tensor, online_summary: torch.Tensor,
                bounds: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(online (B,H,L), cached (B,H,L,N) with non-cached segments at -inf), in the descriptors'
    accumulation dtype (fp32 at least): the softmax over them runs there too."""
    u = u.to(cached_summary.dtype)
    online = (u * online_summary).sum(-1)
    cached = torch.matmul(u, cached_summary.transpose(-1, -2))
    visible = layout_tensors(bounds, u.device).visible  # (L, N)
    return online, cached.masked_fill(~visible, float("-inf"))


def online_read(memory: torch.nn.Module, ctx: dict, q: torch.Tensor) -> torch.Tensor:
    """M_t(q_t) with the live (online) memory of every token."""
    z = q
    for layer in range(memory.n_layers):
        z = memory.online_layer(ctx, z, layer)
        if layer + 1 < memory.n_layers:
            z = memory.activation(z)
    return memory.read_out(q, z)


def cached_reads(memory: torch.nn.Module, states: State, q: torch.Tensor, gates: torch.Tensor | None,
                 bounds: tuple[int, ...], indices: torch.Tensor | None = None) -> torch.Tensor:
    """sum_i gate_{t,i} M_i(q_t) over the cached segments of every token (gates None: all 1), or with
    `indices` over the SSC slots of every token (gates then per slot)."""
    if isinstance(memory, MatrixMemory):
        if indices is None:
            return gated_cached_read(q, states[0], gates, bounds)
        assert gates is not None
        return ssc_cached_read(q, states[0], indices, gates, bounds)
    # MLP memory: M_i(q) = q + (1 + gamma) * LN(W_out GELU(W_in q)), the read-out inside the op
    return mlp_cached_read(q, states[0], states[1], gates, bounds, indices=indices,
                           activation=memory.activation_name, form="residual", gain=memory.gain(q.ndim))


def summed_cached_read(states: State, q: torch.Tensor, bounds: tuple[int, ...]) -> torch.Tensor:
    """(sum_{i<s} S_i) q_t for a matrix memory: residual's cached term as one read per token.

    The prefix sums of the cached states are formed once (additions only); each token of a
    segment s >= 1 then reads the summed state s - 1 by index (one slot, gate 1), so the cost is
    one read per token, not s.
    """
    (segment_states,) = states  # (B, H, N, d_v, d_k)
    if len(bounds) <= 2:
        return torch.zeros_like(q)
    summed = segment_states.cumsum(2)  # summed[:, :, i] = S_0 + ... + S_i
    seg = layout_tensors(bounds, q.device).segment_of_token
    index = (seg - 1).view(1, 1, -1, 1).expand(*q.shape[:3], 1)  # -1 in segment 0: reads nothing
    return ssc_cached_read(q, summed, index, q.new_ones(*q.shape[:3], 1), bounds)


def soup_read(memory: torch.nn.Module, states: State, ctx: dict, q: torch.Tensor, online_gate: torch.Tensor,
              gates: torch.Tensor, bounds: tuple[int, ...]) -> torch.Tensor:
    """Read the gate-weighted mixture of memory parameters, one layer at a time.

    sum_i g_i W_i applied to z equals sum_i g_i (W_i z), so mixing the parameters of every
    layer never materialises a per-token weight matrix: each layer is a gated cached read of
    the token's own input plus the gated online layer, and the nonlinearity acts on the mix.
    """
    z = q
    for layer in range(memory.n_layers):
        mixed = online_gate[..., None] * memory.online_layer(ctx, z, layer) + gated_cached_read(
            z, states[layer], gates, bounds)
        z = memory.activation(mixed) if layer + 1 < memory.n_layers else mixed
    return memory.read_out(q, z)


def ssc_reads(memory: torch.nn.Module, states: State, q: torch.Tensor, online_logit: torch.Tensor,
              cached_logits: torch.Tensor, top_k: int, bounds: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse selective caching: (online gate (B,H,L), gated sum of the top-k cached reads).

    topk puts a token's readable segments first (the others are -inf), so slot j < seg(t) holds
    a cached segment and the ops skip the rest: min(k, seg(t)) reads per token.
    """
    n_cached_max = len(bounds) - 2
    k_eff = min(top_k, n_cached_max)
    if k_eff <= 0:
        return torch.ones_like(online_logit).to(q.dtype), torch.zeros_like(q)
    top_logits, top_idx = cached_logits.topk(k_eff, dim=-1)  # invalid slots are -inf, sorted last
    gates = torch.cat([online_logit[..., None], top_logits], dim=-1).softmax(-1).to(q.dtype)
    return gates[..., 0], cached_reads(memory, states, q, gates[..., 1:], bounds, indices=top_idx)


def memory_caching(memory: torch.nn.Module, inp: MemoryInputs, summary_keys: torch.Tensor,
                   u: torch.Tensor | None, plan: SegmentPlan, strategy: str, top_k: int,
                   online_bias: torch.Tensor | None = None,
                   gate_sink: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Per-head mixer output (B, H, L, d_v) of `memory` under caching `strategy`.

    `online_bias` (H,): a logit added to the online memory's gate (the online-gate bias, PAPER.md);
    None is the paper's plain softmax. `gate_sink`: when a list, the online memory's gate weight of
    every token (B, H, L), detached, is appended to it (the evaluation's gate-mass diagnostic).
    """
    states, ctx = memory.scan(inp, plan)
    bounds = plan.bounds
    if strategy == "none":
        return online_read(memory, ctx, inp.q)
    if strategy == "residual":
        if isinstance(memory, MatrixMemory):  # the cached reads sum to one read
            return online_read(memory, ctx, inp.q) + summed_cached_read(states, inp.q, bounds)
        return online_read(memory, ctx, inp.q) + cached_reads(memory, states, inp.q, None, bounds)
    assert u is not None, "gated strategies need the gate projection u"
    cached_summary, online_summary = segment_summaries(summary_keys, bounds)
    online_logit, cached_logits = gate_logits(u, cached_summary, online_summary, bounds)
    if online_bias is not None:
        online_logit = online_logit + online_bias.to(online_logit.dtype)[None, :, None]
    if strategy == "ssc":
        online_gate, reads = ssc_reads(memory, states, inp.q, online_logit, cached_logits, top_k, bounds)
        if gate_sink is not None:
            gate_sink.append(online_gate.detach())
        return online_gate[..., None] * online_read(memory, ctx, inp.q) + reads
    gates = torch.cat([online_logit[..., None], cached_logits], dim=-1).softmax(-1).to(inp.q.dtype)
    if gate_sink is not None:
        gate_sink.append(gates[..., 0].detach())
    if strategy == "grm":
        return gates[..., :1] * online_read(memory, ctx, inp.q) + cached_reads(
            memory, states, inp.q, gates[..., 1:], bounds)
    if strategy == "soup":
        return soup_read(memory, states, ctx, inp.q, gates[..., 0], gates[..., 1:], bounds)
    raise ValueError(f"unknown caching strategy {strategy!r}")
