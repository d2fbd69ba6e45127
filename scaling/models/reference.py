"""Token-by-token reference for every recurrent memory and caching strategy (slow; for tests).

Written from the definitions in DESIGN.md, independent of the chunked code paths: the memory
is updated one token at a time, cached states are snapshotted when a segment ends, gates are
computed per token from explicit means of keys, Memory Soup mixes explicit weight tensors and
SSC picks its top-k with `torch.topk` per token. Tests hold the chunk-parallel model equal to
this.
"""

from __future__ import annotations

import torch

from scaling.models.memory import MatrixMemory, MemoryInputs, MLPMemory, SegmentPlan

Weights = tuple[torch.Tensor, ...]


def _read(memory: torch.nn.Module, weights: Weights, q: torch.Tensor) -> torch.Tensor:
    """Apply per-(b, h) weights (B, H, out, in) layer by layer to q (B, H, d)."""
    z = q
    for layer in range(memory.n_layers):
        z = torch.einsum("bhoi,bhi->bho", weights[layer], z)
        if layer + 1 < memory.n_layers:
            z = memory.activation(z)
    return z


def _matrix_step(state: Weights, inp: MemoryInputs, t: int) -> Weights:
    (s,) = state
    decay = torch.exp(inp.log_retention[:, :, t])[..., None, None]
    write = torch.einsum("bhw,bhwv,bhwk->bhvk", inp.write_gate[:, :, t], inp.v[:, :, t], inp.k[:, :, t])
    return (decay * s + write,)


def _mlp_step(memory: MLPMemory, state: Weights, chunk_start: Weights, inp: MemoryInputs, t: int) -> Weights:
    """One online step; the gradient is taken at the chunk's starting weights (Titans' parallel form)."""
    w1_0, w2_0 = chunk_start[0], chunk_start[1]
    k, v = inp.k[:, :, t, 0], inp.v[:, :, t, 0]
    pre = torch.einsum("bhfd,bhd->bhf", w1_0, k)
    act = memory.activation(pre)
    y = torch.einsum("bhdf,bhf->bhd", w2_0, act)
    err = -v if memory.objective == "dot" else y - v
    delta = torch.einsum("bhdf,bhd->bhf", w2_0, err) * memory.activation_grad(pre)
    grad1 = torch.einsum("bhf,bhd->bhfd", delta, k)
    grad2 = torch.einsum("bhd,bhf->bhdf", err, act)
    lr = inp.write_gate[:, :, t, 0][..., None, None]
    ret = torch.exp(inp.log_retention[:, :, t])[..., None, None]
    if memory.momentum:
        assert inp.log_momentum is not None
        mom = torch.exp(inp.log_momentum[:, :, t])[..., None, None]
        s1 = mom * state[2] - lr * grad1
        s2 = mom * state[3] - lr * grad2
        return (ret * state[0] + s1, ret * state[1] + s2, s1, s2)
    return (ret * state[0] - lr * grad1, ret * state[1] - lr * grad2)


def reference_caching(memory: torch.nn.Module, inp: MemoryInputs, summary_keys: torch.Tensor,
                      u: torch.Tensor | None, plan: SegmentPlan, strategy: str, top_k: int) -> torch.Tensor:
    b, h, length = inp.q.shape[:3]
    init = memory.initial_state(b, h, inp.q)
    bounds = plan.bounds
    state, chunk_start = init, init
    cached: list[Weights] = []
    outputs = []
    seg = 0
    for t in range(length):
        if t == bounds[seg + 1]:
            seg += 1
            cached.append(tuple(w.clone() for w in state[: memory.n_layers]))
            if plan.independent:
                state = init
        if t % plan.chunk_len == 0:
            chunk_start = state
        if isinstance(memory, MatrixMemory):
            state = _matrix_step(state, inp, t)
        else:
            state = _mlp_step(memory, state, chunk_start, inp, t)
        live = state[: memory.n_layers]
        q = inp.q[:, :, t]
        online = _read(memory, live, q)
        if strategy == "none":
            outputs.append(online)
            continue
        reads = [_read(memory, w, q) for w in cached]
        if strategy == "residual":
            outputs.append(online + sum(reads, torch.zeros_like(online)))
            continue
        assert u is not None
        online_summary = summary_keys[:, :, bounds[seg]: t + 1].mean(2)
        logits = [(u[:, :, t] * online_summary).sum(-1)]
        for i in range(len(cached)):
            summary = summary_keys[:, :, bounds[i]: bounds[i + 1]].mean(2)
            logits.append((u[:, :, t] * summary).sum(-1))
        logit = torch.stack(logits, dim=-1)  # (B, H, 1 + n_cached)
        if strategy == "ssc" and cached:
            k_eff = min(top_k, len(cached))
            keep = logit[..., 1:].topk(k_eff, dim=-1).indices + 1
            mask = torch.zeros_like(logit, dtype=torch.bool)
            mask[..., 0] = True
            mask.scatter_(-1, keep, True)
            logit = logit.masked_fill(~mask, float("-inf"))
        gate = logit.softmax(-1)
        if strategy in ("grm", "ssc"):
            out = gate[..., 0, None] * online
            for i, r in enumerate(reads):
                out = out + gate[..., i + 1, None] * r
            outputs.append(out)
        elif strategy == "soup":
            mixed = []
            for layer in range(memory.n_layers):
                w = gate[..., 0, None, None] * live[layer]
                for i, c in enumerate(cached):
                    w = w + gate[..., i + 1, None, None] * c[layer]
                mixed.append(w)
            outputs.append(_read(memory, tuple(mixed), q))
        else:
            raise ValueError(f"unknown caching strategy {strategy!r}")
    return torch.stack(outputs, dim=2)
