"""Recurrent memories in chunk-parallel form: a matrix memory and a 2-layer MLP memory.

Both memories expose the same small surface that `caching.py` builds on:

* `scan(inputs, plan)` runs the memory over the whole sequence and returns each segment's
  final state (the cache) plus a context from which the *online* memory (the live state at
  every token) can be applied to any per-token input.
* A state is a tuple of weight tensors, one per layer; layer `i` maps z -> z @ W_i^T, with
  `activation` between layers and `read_out(q, z)` after the last. A matrix memory is one
  linear layer (S: d_v x d_k, read_out the identity); an MLP memory is the paper's deep memory
  (appendix B, as in Titans/TTT): M(x) = x + g * LN(W_out GELU(W_in x)), a residual block with
  a (non-affine) LayerNorm and a learned per-head gain g = 1 + gamma on the branch. Only W_in,
  W_out are the memory's state; LN and g are outer-loop parameters shared by every state, which
  is what lets one caching module read, gate (GRM) and mix parameters (Memory Soup) for
  either kind.

Matrix memory: S_t = a_t S_{t-1} + sum_w beta_{t,w} v_{t,w} k_{t,w}^T, read o_t = S_t q_t.
The chunked form computes intra-chunk terms as masked attention and carries S across chunks;
it is exact (chunking changes only the order of floating-point sums).

MLP memory (Titans / deep linear attention): the memory's weights are trained online by
gradient descent on an associative loss, with retention (weight decay) r_t and optional
momentum m_t, as in Titans (descent, not the sign printed in the MC paper):
    S_t = m_t S_{t-1} - theta_t grad l(W; k_t, v_t),   W_t = r_t W_{t-1} + S_t.
As in Titans' parallel training, the gradient of every token in a chunk is taken at the
chunk's starting weights, so W_t = R_t W_0 + c_t S_0 + sum_j D_tj u_j with rank-one u_j and a
(chunk x chunk) mixing matrix D built from the gates. Applying W_t to a per-token vector then
becomes an attention-like product, so the online read of a whole chunk is a few matmuls.
The token-by-token reference in `reference.py` implements the same definition one token at a
time, and tests hold the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kernels.matrix_scan import scan_backend, segmented_scan

State = tuple[torch.Tensor, ...]


@dataclass
class MemoryInputs:
    """Per-token quantities a mixer hands to its memory (all (B, H, L, ...))."""

    q: torch.Tensor  # (B, H, L, d_k) queries (read keys)
    k: torch.Tensor  # (B, H, L, W, d_k) write keys, W write streams per token (SWLA: 2)
    v: torch.Tensor  # (B, H, L, W, d_v) write values
    write_gate: torch.Tensor  # (B, H, L, W) beta (matrix) or learning rate theta (MLP, W = 1)
    log_retention: torch.Tensor  # (B, H, L) log a_t <= 0 (decay of the previous state)
    log_momentum: torch.Tensor | None = None  # (B, H, L) log m_t, MLP memories with momentum


@dataclass(frozen=True)
class SegmentPlan:
    """How the sequence is cut into segments and scan chunks (all chunks have equal length)."""

    seq_len: int
    chunk_len: int
    bounds: tuple[int, ...]  # segment boundaries [0, ..., L]
    independent: bool  # each segment starts from the initial memory

    @property
    def n_chunks(self) -> int:
        return self.seq_len // self.chunk_len

    @property
    def n_segments(self) -> int:
        return len(self.bounds) - 1

    def chunk_resets(self) -> list[bool]:
        """Chunks whose scan starts from the initial memory."""
        starts = {b // self.chunk_len for b in self.bounds[:-1]} if self.independent else {0}
        return [c in starts for c in range(self.n_chunks)]

    def segment_last_chunks(self) -> list[int]:
        return [b // self.chunk_len - 1 for b in self.bounds[1:]]

    def equal_segments(self) -> bool:
        lengths = {b - a for a, b in zip(self.bounds[:-1], self.bounds[1:])}
        return len(lengths) == 1


def _chunk(x: torch.Tensor, chunk_len: int) -> torch.Tensor:
    """(B, H, L, ...) -> (B, H, L/chunk, chunk, ...)."""
    b, h, length = x.shape[:3]
    return x.reshape(b, h, length // chunk_len, chunk_len, *x.shape[3:])


def _segment_sum_matrix(log_gate: torch.Tensor) -> torch.Tensor:
    """exp(G_t - G_s) for s <= t (else 0), with G the in-chunk cumulative log gate; (..., c, c)."""
    cum = log_gate.cumsum(-1)
    diff = cum[..., :, None] - cum[..., None, :]
    size = log_gate.shape[-1]
    causal = torch.ones(size, size, dtype=torch.bool, device=log_gate.device).tril()
    return torch.exp(diff.masked_fill(~causal, float("-inf")))


def linear_layer(weight: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Apply per-pair weights (..., out, in) to inputs (..., T, in) -> (..., T, out)."""
    return torch.matmul(z, weight.transpose(-1, -2))


class MatrixMemory(nn.Module):
    """Gated matrix memory (linear attention family): one linear layer, state S (d_v x d_k)."""

    n_layers = 1

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.head_dim = head_dim

    @staticmethod
    def activation(h: torch.Tensor) -> torch.Tensor:  # pragma: no cover - single layer
        return h

    @staticmethod
    def read_out(q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """A matrix memory's read is S q itself."""
        return z

    def initial_state(self, batch: int, n_heads: int, ref: torch.Tensor) -> State:
        return (ref.new_zeros(batch, n_heads, self.head_dim, self.head_dim),)

    def scan(self, inp: MemoryInputs, plan: SegmentPlan) -> tuple[State, dict[str, Any]]:
        fla_fn = scan_backend(inp.q.device)
        if fla_fn is not None:  # CUDA: flash-linear-attention's chunk kernels (kernels/matrix_scan)
            reads, segment_states = segmented_scan(inp.q, inp.k, inp.v, inp.write_gate, inp.log_retention,
                                                   plan.bounds, plan.independent, fla_fn)
            return (segment_states,), {"plan": plan, "q": inp.q, "reads": reads}
        return self.reference_scan(inp, plan)

    def reference_scan(self, inp: MemoryInputs, plan: SegmentPlan) -> tuple[State, dict[str, Any]]:
        """The PyTorch chunked scan (CPU and meta device): intra-chunk terms as masked attention,
        the state carried across chunks by a loop whose every step costs the same, forward and
        backward (per-chunk inputs are `unbind`-ed once instead of sliced per step)."""
        c = plan.chunk_len
        b, h, length, w, d_k = inp.k.shape
        d_v = inp.v.shape[-1]
        g = _chunk(inp.log_retention, c).cumsum(-1)  # (B,H,nc,c) cumulative log decay in chunk
        keys = _chunk(inp.k, c).reshape(b, h, -1, c * w, d_k)
        gate = _chunk(inp.write_gate, c).reshape(b, h, -1, c * w)
        values = _chunk(inp.v, c).reshape(b, h, -1, c * w, d_v) * gate[..., None]
        g_keys = g.repeat_interleave(w, dim=-1)  # decay position of each written key
        to_end = torch.exp(g[..., -1:] - g_keys)  # decay from each write to the chunk end
        chunk_update = torch.matmul((values * to_end[..., None]).transpose(-1, -2), keys)  # (B,H,nc,dv,dk)
        chunk_decay = torch.exp(g[..., -1])  # (B,H,nc)

        resets = plan.chunk_resets()
        starts, ends = [], []
        zero = inp.k.new_zeros(b, h, d_v, d_k)
        state = zero
        for reset, decay, update in zip(resets, chunk_decay.unbind(2), chunk_update.unbind(2)):
            start = zero if reset else state
            state = decay[:, :, None, None] * start + update
            starts.append(start)
            ends.append(state)
        start_states = torch.stack(starts, dim=2)
        segment_states = torch.stack([ends[i] for i in plan.segment_last_chunks()], dim=2)
        ctx = {"plan": plan, "g": g, "keys": keys, "values": values, "g_keys": g_keys, "start": start_states}
        return (segment_states,), ctx

    def online_layer(self, ctx: dict[str, Any], z: torch.Tensor, layer: int) -> torch.Tensor:
        """S_t z_t for every token t, with S_t the live state after writing token t."""
        if "reads" in ctx:  # the fla scan read the queries in the same pass
            if z is not ctx["q"]:
                raise RuntimeError("the fla matrix scan reads the memory with its own queries only; "
                                   "apply the online memory to other inputs through reference_scan")
            return ctx["reads"]
        plan: SegmentPlan = ctx["plan"]
        c = plan.chunk_len
        zc = _chunk(z, c)  # (B,H,nc,c,dk)
        g, g_keys = ctx["g"], ctx["g_keys"]
        w = g_keys.shape[-1] // c
        diff = g[..., :, None] - g_keys[..., None, :]  # (B,H,nc,c,c*w)
        pos_q = torch.arange(c, device=z.device)[:, None]
        pos_k = torch.arange(c * w, device=z.device)[None, :] // w
        decay = torch.exp(diff.masked_fill(pos_k > pos_q, float("-inf")))
        scores = torch.matmul(zc, ctx["keys"].transpose(-1, -2)) * decay
        intra = torch.matmul(scores, ctx["values"])
        inter = torch.exp(g)[..., None] * linear_layer(ctx["start"], zc)
        return (intra + inter).flatten(2, 3)


LN_EPS = 1e-5


def _head_gain(gain: torch.Tensor, ndim: int) -> torch.Tensor:
    """(H, d) per-head gain -> broadcastable against (B, H, ..., d) of `ndim` dimensions."""
    return gain.view(1, gain.shape[0], *([1] * (ndim - 3)), gain.shape[1])


class MLPMemory(nn.Module):
    """The paper's deep memory M(x) = x + g * LN(W_out GELU(W_in x)), trained online.

    The state is (W_in, W_out) (plus momenta for Titans); learned per-head initial weights and
    the branch gain g = 1 + gamma (gamma zero-initialised, as in titans-pytorch) are outer-loop
    parameters.
    """

    n_layers = 2
    activation_name = "gelu"  # the cached-read ops' name for `activation` (exact erf GELU)

    def __init__(self, n_heads: int, head_dim: int, expansion: int, objective: str, momentum: bool) -> None:
        super().__init__()
        if objective not in ("dot", "l2"):
            raise ValueError(f"unknown memory objective {objective!r}")
        self.head_dim = head_dim
        self.hidden = expansion * head_dim
        self.objective = objective
        self.momentum = momentum
        self.w1_init = nn.Parameter(torch.randn(n_heads, self.hidden, head_dim) / head_dim ** 0.5)
        self.w2_init = nn.Parameter(torch.randn(n_heads, head_dim, self.hidden) / self.hidden ** 0.5)
        self.gamma = nn.Parameter(torch.zeros(n_heads, head_dim))

    @staticmethod
    def activation(h: torch.Tensor) -> torch.Tensor:
        return F.gelu(h)

    @staticmethod
    def activation_grad(h: torch.Tensor) -> torch.Tensor:
        """d GELU(h) / dh for the exact (erf) GELU: Phi(h) + h phi(h)."""
        cdf = 0.5 * (1.0 + torch.erf(h * 0.5 ** 0.5))
        pdf = torch.exp(-0.5 * h * h) * (2.0 * torch.pi) ** -0.5
        return cdf + h * pdf

    def gain(self, ndim: int) -> torch.Tensor:
        return _head_gain(1.0 + self.gamma, ndim)

    @staticmethod
    def _normalise(o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(LN(o) without affine, 1 / std) over the last dimension."""
        centred = o - o.mean(-1, keepdim=True)
        rstd = torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + LN_EPS)
        return centred * rstd, rstd

    def read_out(self, q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The residual block's output q + g * LN(z) for the last layer's output z."""
        return q + self.gain(z.ndim) * self._normalise(z)[0]

    def output_error(self, k: torch.Tensor, o: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """dl/do at the last layer's pre-norm output o: LN's backward of dl/dM.

        dot objective l = -<M(k), v> (deep linear attention, eq. 30); l2 objective
        l = 0.5 ||M(k) - v||^2 (Titans). M(k) = k + g * n with n = LN(o).
        """
        n, rstd = self._normalise(o)
        gain = self.gain(o.ndim)
        dl_dm = -v if self.objective == "dot" else k + gain * n - v
        g = gain * dl_dm
        return rstd * (g - g.mean(-1, keepdim=True) - n * (g * n).mean(-1, keepdim=True))

    def initial_state(self, batch: int, n_heads: int, ref: torch.Tensor) -> State:
        w1 = self.w1_init.unsqueeze(0).expand(batch, -1, -1, -1)
        w2 = self.w2_init.unsqueeze(0).expand(batch, -1, -1, -1)
        if not self.momentum:
            return (w1, w2)
        return (w1, w2, torch.zeros_like(w1), torch.zeros_like(w2))

    def _chunk_step(self, state: State, k: torch.Tensor, v: torch.Tensor, lr: torch.Tensor,
                    log_ret: torch.Tensor, log_mom: torch.Tensor | None) -> tuple[State, dict[str, torch.Tensor]]:
        """One chunk for a batch of chunks (..., c, d): gradients at the chunk's starting weights."""
        w1, w2 = state[0], state[1]
        pre = linear_layer(w1, k)  # (..., c, f)
        act = self.activation(pre)
        err = self.output_error(k, linear_layer(w2, act), v)  # (..., c, d) dl/do
        delta = torch.matmul(err, w2) * self.activation_grad(pre)  # (..., c, f) dl/dpre

        decay_mix = _segment_sum_matrix(log_ret)  # F[t, s]
        retain = torch.exp(log_ret.cumsum(-1))  # R_t
        mom_mix = mom_cum = None
        if log_mom is not None:
            mom_mix = _segment_sum_matrix(log_mom)  # E[s, j]
            mom_cum = torch.exp(log_mom.cumsum(-1))  # P_s: momentum carried from the chunk start
            mix = torch.matmul(decay_mix, mom_mix)
            carry = torch.matmul(decay_mix, mom_cum[..., None])[..., 0]  # c_t
        else:
            mix = decay_mix
            carry = None
        coef = -mix * lr[..., None, :]  # D[t, j]

        last = coef[..., -1, :, None]  # (..., c, 1)
        new_w1 = retain[..., -1, None, None] * w1 + torch.matmul((delta * last).transpose(-1, -2), k)
        new_w2 = retain[..., -1, None, None] * w2 + torch.matmul((err * last).transpose(-1, -2), act)
        if mom_mix is not None and mom_cum is not None and carry is not None:
            s1, s2 = state[2], state[3]
            new_w1 = new_w1 + carry[..., -1, None, None] * s1
            new_w2 = new_w2 + carry[..., -1, None, None] * s2
            mom_last = mom_cum[..., -1, None, None]
            m_coef = (-mom_mix[..., -1, :] * lr)[..., None]  # (..., c, 1)
            new_s1 = mom_last * s1 + torch.matmul((delta * m_coef).transpose(-1, -2), k)
            new_s2 = mom_last * s2 + torch.matmul((err * m_coef).transpose(-1, -2), act)
            new_state: State = (new_w1, new_w2, new_s1, new_s2)
        else:
            new_state = (new_w1, new_w2)
        ctx = {"coef": coef, "retain": retain, "delta": delta, "err": err, "act": act, "k": k}
        if carry is not None:
            ctx["carry"] = carry
        return new_state, ctx

    def scan(self, inp: MemoryInputs, plan: SegmentPlan) -> tuple[State, dict[str, Any]]:
        c = plan.chunk_len
        b, h = inp.q.shape[:2]
        k = _chunk(inp.k[..., 0, :], c)  # (B,H,nc,c,d)
        v = _chunk(inp.v[..., 0, :], c)
        lr = _chunk(inp.write_gate[..., 0], c)
        log_ret = _chunk(inp.log_retention, c)
        log_mom = None if inp.log_momentum is None else _chunk(inp.log_momentum, c)
        n_chunks = plan.n_chunks
        # Independent equal segments run as one batch: chunk j of every segment together.
        groups = plan.n_segments if (plan.independent and plan.equal_segments()) else 1
        steps = n_chunks // groups

        def grouped(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.reshape(b, h, groups, steps, *x.shape[3:])

        kg, vg, lrg, retg, momg = (grouped(t) for t in (k, v, lr, log_ret, log_mom))
        init = tuple(s.unsqueeze(2).expand(b, h, groups, *s.shape[2:]) for s in self.initial_state(b, h, inp.q))
        resets = plan.chunk_resets()
        state: State = init
        starts: list[State] = []
        ends: list[State] = []
        ctxs: list[dict[str, torch.Tensor]] = []
        # Each input `unbind`-ed once: slicing per step would allocate a full-size gradient per step.
        per_step = [t.unbind(3) if t is not None else [None] * steps for t in (kg, vg, lrg, retg, momg)]
        for step, (k_s, v_s, lr_s, ret_s, mom_s) in enumerate(zip(*per_step)):
            if resets[step]:  # with groups > 1 every group's chunk `step` resets together
                state = init
            starts.append(state)
            state, ctx = self._chunk_step(state, k_s, v_s, lr_s, ret_s, mom_s)
            ends.append(state)
            ctxs.append(ctx)

        def ungroup(parts: list[torch.Tensor]) -> torch.Tensor:
            stacked = torch.stack(parts, dim=3)  # (B,H,G,steps,...)
            return stacked.reshape(b, h, n_chunks, *stacked.shape[4:])

        n_state = len(init)
        start_states = tuple(ungroup([s[i] for s in starts]) for i in range(n_state))
        end_states = tuple(ungroup([s[i] for s in ends]) for i in range(n_state))
        # Each segment's final weights, picked from the Python list of step states (a device index
        # would be a host copy, or a cached tensor shared by every layer): with groups > 1 every
        # group is one segment and the last step holds them all.
        if groups > 1:
            segment_states = (ends[-1][0], ends[-1][1])
        else:
            last = plan.segment_last_chunks()
            segment_states = tuple(torch.stack([ends[s][i][:, :, 0] for s in last], dim=2) for i in range(2))
        merged = {key: ungroup([cx[key] for cx in ctxs]) for key in ctxs[0]}
        merged["start"] = start_states
        merged["plan"] = plan
        return segment_states, merged

    def online_layer(self, ctx: dict[str, Any], z: torch.Tensor, layer: int) -> torch.Tensor:
        """W_t z_t for every token with W_t the live layer-`layer` weights after writing token t."""
        plan: SegmentPlan = ctx["plan"]
        zc = _chunk(z, plan.chunk_len)
        start = ctx["start"]
        if layer == 0:
            w0, s0, keys, grads = start[0], start[2] if self.momentum else None, ctx["k"], ctx["delta"]
        else:
            w0, s0, keys, grads = start[1], start[3] if self.momentum else None, ctx["act"], ctx["err"]
        out = ctx["retain"][..., None] * linear_layer(w0, zc)
        if s0 is not None:
            out = out + ctx["carry"][..., None] * linear_layer(s0, zc)
        scores = torch.matmul(zc, keys.transpose(-1, -2)) * ctx["coef"]
        out = out + torch.matmul(scores, grads)
        return out.flatten(2, 3)
