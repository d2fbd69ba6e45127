"""Recurrent token mixers (linear, SWLA, DLA, Titans) built on the shared memories.

Every recurrent mixer has the same skeleton - project to per-head q, k, v (q and k
L2-normalised), compute the mixer's data-dependent gates, run the memory under the configured
Memory Caching strategy, normalise each head's output and project back - and differs only in
its memory kind and its gates:

==========  ========  ===================================================================
mixer       memory    update (descent on the memory's objective; PAPER.md has the equations)
==========  ========  ===================================================================
linear      matrix    S_t = S_{t-1} + v_t k_t^T                                (no gates)
swla        matrix    S_t = a_t S_{t-1} + b_t v_t k_t^T + l_t v_{t-1} k_{t-1}^T (eq. 28, window 2)
dla         mlp       W_t = W_{t-1} - theta_t grad(-<M_W(k_t), v_t>)           (eq. 30, deep memory)
dla         matrix    S_t = S_{t-1} + theta_t v_t k_t^T      (`dla-matrix`: eq. 30 on a matrix memory)
titans      mlp       S_t = m_t S_{t-1} - theta_t grad(0.5||M_W(k_t) - v_t||^2); W_t = r_t W_{t-1} + S_t
==========  ========  ===================================================================

SWLA's window of 2 means each step writes the last two tokens, the current one scaled by its
gate b_t (beta_t) and the previous one by a separate gate l_t (lambda_t); the window slides over
the input stream, so in `independent` mode a segment's first write still sees the token before
the segment (the memory itself starts fresh).

Any input length works: the sequence is right-padded to whole scan chunks (and C-token tiles
under caching, `ModelConfig.padded_len`), which no earlier output can see, and sliced back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from scaling.models.caching import STRATEGIES_WITH_GATES, memory_caching
from scaling.models.config import ModelConfig
from scaling.models.gates import GATES, MAX_INNER_LR, MAX_MOMENTUM
from scaling.models.layers import RMSNorm
from scaling.models.memory import MatrixMemory, MemoryInputs, MLPMemory, SegmentPlan

def segment_plan(cfg: ModelConfig, seq_len: int) -> SegmentPlan:
    """The scan/segment layout of a `seq_len`-token input under `cfg`, padded to
    `cfg.padded_len(seq_len)`: the last segment absorbs the padding."""
    padded = cfg.padded_len(seq_len)
    bounds = cfg.segment_bounds(seq_len)[:-1] + [padded]
    return SegmentPlan(seq_len=padded, chunk_len=cfg.scan_chunk_len, bounds=tuple(bounds),
                       independent=cfg.segment_mode == "independent")


class RecurrentMixer(nn.Module):
    """A recurrent memory mixer wrapped by Memory Caching."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.gate_names = list(GATES[(cfg.mixer, cfg.memory)])
        self.gates = None
        if self.gate_names:
            self.gates = nn.Linear(cfg.d_model, len(self.gate_names) * cfg.n_heads, bias=True)
            with torch.no_grad():
                bias = torch.tensor([GATES[(cfg.mixer, cfg.memory)][g] for g in self.gate_names])
                self.gates.bias.copy_(bias.repeat_interleave(cfg.n_heads))
        self.gate_proj = (nn.Linear(cfg.d_model, cfg.d_model, bias=False)
                          if cfg.caching in STRATEGIES_WITH_GATES else None)
        # The online-memory gate bias (PAPER.md, a deliberate deviation): one learnable logit per head
        # added to the online memory's gate, so MC starts from its base memory instead of giving a
        # token in segment s only 1/(s+1) of its read. 1-D, so AdamW applies no weight decay to it.
        bias = cfg.online_gate_bias
        self.online_gate_bias = nn.Parameter(torch.full((cfg.n_heads,), bias)) if self.gate_proj is not None and bias else None
        #: A list while the evaluation records gate mass (`scaling.models.diagnostics`); None otherwise.
        self.online_gate_sink: list[torch.Tensor] | None = None
        if cfg.memory == "matrix":
            self.memory: nn.Module = MatrixMemory(cfg.head_dim)
        else:
            objective = "l2" if cfg.mixer == "titans" else "dot"
            self.memory = MLPMemory(cfg.n_heads, cfg.head_dim, cfg.memory_expansion, objective,
                                    momentum=cfg.mixer == "titans")
        self.head_norm = RMSNorm(cfg.head_dim)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, length, _ = x.shape
        return x.view(b, length, self.n_heads, -1).transpose(1, 2)

    def features(self, x: torch.Tensor) -> tuple[MemoryInputs, torch.Tensor, torch.Tensor | None]:
        """(memory inputs, L2-normalised keys for segment descriptors, gate queries u or None)."""
        b, length, _ = x.shape
        q, k, v = (self._heads(t) for t in self.qkv(x).chunk(3, dim=-1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        if self.cfg.memory == "mlp":
            # Unit-norm targets keep online gradient descent on the MLP memory stable for any
            # input scale (the step on W2 scales with ||v|| and feeds back through W1).
            v = F.normalize(v, dim=-1)
        gate = {}
        if self.gates is not None:
            raw = self.gates(x).view(b, length, len(self.gate_names), self.n_heads).permute(2, 0, 3, 1)
            gate = dict(zip(self.gate_names, raw))  # each (B, H, L)
        zeros = x.new_zeros(b, self.n_heads, length)
        log_retention = F.logsigmoid(gate["retention"]) if "retention" in gate else zeros
        log_momentum = (F.logsigmoid(gate["momentum"]) + math.log(MAX_MOMENTUM)) if "momentum" in gate else None
        if "write" in gate:
            write = torch.sigmoid(gate["write"])
        elif "lr" in gate:
            write = MAX_INNER_LR * torch.sigmoid(gate["lr"])
        else:
            write = torch.ones_like(zeros)
        keys, values, writes = k.unsqueeze(3), v.unsqueeze(3), write.unsqueeze(3)
        if self.cfg.mixer == "swla":
            prev_k = F.pad(k, (0, 0, 1, 0))[:, :, :-1]
            prev_v = F.pad(v, (0, 0, 1, 0))[:, :, :-1]
            keys = torch.stack([k, prev_k], dim=3)
            values = torch.stack([v, prev_v], dim=3)
            writes = torch.stack([write, torch.sigmoid(gate["write_prev"])], dim=3)
        inputs = MemoryInputs(q=q, k=keys, v=values, write_gate=writes, log_retention=log_retention,
                              log_momentum=log_momentum)
        u = self._heads(self.gate_proj(x)) if self.gate_proj is not None else None
        return inputs, k, u

    def finish(self, y: torch.Tensor) -> torch.Tensor:
        """Per-head outputs (B, H, L, d) -> normalised, merged and projected (B, L, D)."""
        y = self.head_norm(y)
        return self.out(y.transpose(1, 2).reshape(y.shape[0], y.shape[2], -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        plan = segment_plan(self.cfg, length)
        inputs, keys, u = self.features(F.pad(x, (0, 0, 0, plan.seq_len - length)))
        y = memory_caching(self.memory, inputs, keys, u, plan, self.cfg.caching, self.cfg.top_k,
                           online_bias=self.online_gate_bias, gate_sink=self.online_gate_sink)
        return self.finish(y[:, :, :length])

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same mixer computed token by token (slow; for tests)."""
        from scaling.models.reference import reference_caching

        inputs, keys, u = self.features(x)
        bounds = tuple(self.cfg.segment_bounds(x.shape[1]))  # the real length: no padding here
        plan = SegmentPlan(x.shape[1], self.cfg.scan_chunk_len, bounds, self.cfg.segment_mode == "independent")
        y = reference_caching(self.memory, inputs, keys, u, plan, self.cfg.caching, self.cfg.top_k,
                              online_bias=self.online_gate_bias)
        return self.finish(y)
