"""Token-by-token reference for every recurrent memory and caching strategy (slow; for tests).

Written from the definitions in DESIGN.md and PAPER.md, independent of the chunked code paths:
the memory is updated one token at a time, the MLP memory's gradient is taken by autograd on
its loss (not the hand-derived backward of `memory.py`), cached states are snapshotted when a
segment ends, gates are computed per token from explicit means of keys, Memory Soup mixes
explicit weight tensors and SSC picks its top-k with `torch.topk` per token. Tests hold the
chunk-parallel model equal to this.
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
    return memory.read_out(q, z)


def memory_loss_grads(memory: MLPMemory, weights: Weights, k: torch.Tensor,
                      v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Autograd gradient of the memory's objective at `weights` for one token per (b, h).

    dot (deep linear attention, eq. 30): l = -<M(k), v>; l2 (Titans): l = 0.5 ||M(k) - v||^2.
    The loss is summed over (b, h), which is separable, so each (b, h) gets its own gradient.
    """
    keep_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        leaves = tuple(w if w.requires_grad else w.detach().requires_grad_() for w in weights[:2])
        m = _read(memory, leaves, k)
        loss = -(m * v).sum() if memory.objective == "dot" else 0.5 * (m - v).pow(2).sum()
        grad1, grad2 = torch.autograd.grad(loss, leaves, create_graph=keep_graph)
    return grad1, grad2


def _matrix_step(state: Weights, inp: MemoryInputs, t: int) -> Weights:
    (s,) = state
    decay = torch.exp(inp.log_retention[:, :, t])[..., None, None]
    write = torch.einsum("bhw,bhwv,bhwk->bhvk", inp.write_gate[:, :, t], inp.v[:, :, t], inp.k[:, :, t])
    return (decay * s + write,)


def _mlp_step(memory: MLPMemory, state: Weights, chunk_start: Weights, inp: MemoryInputs, t: int) -> Weights:
    """One online step; the gradient is taken at the chunk's starting weights (Titans' parallel form)."""
    grad1, grad2 = memory_loss_grads(memory, chunk_start, inp.k[:, :, t, 0], inp.v[:, :, t, 0])
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
                      u: torch.Tensor | None, plan: SegmentPlan, strategy: str, top_k: int,
                      online_bias: torch.Tensor | None = None) -> torch.Tensor:
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
        logits = [(u[:, :, t] * online_summary).sum(-1) + (0.0 if online_bias is None else online_bias[None, :])]
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
