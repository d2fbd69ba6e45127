"""Per-segment token weights for the dense PyTorch references: the gate each reader gives segment i.

The dense references (grm, soup, residual) loop over cached segments; segment i is read by the
tokens t >= bounds[i + 1] (exactly those with seg(t) > i), with weight g[t, i], or 1 without
gates. Looping over segments with one (B, H, L - start) weight at a time keeps the references'
memory at O(L) per step instead of one state copy per (tile, segment). SSC slots are walked as
(token, slot) pairs instead (`kernels.common.pairs`).
"""

from __future__ import annotations

import torch

from kernels.common.segments import SegmentTable


class SegmentWeights:
    def __init__(self, table: SegmentTable, gates: torch.Tensor | None, acc_dtype: torch.dtype) -> None:
        self.table = table
        self.gates = None if gates is None else gates.to(acc_dtype)
        self.acc_dtype = acc_dtype

    def start(self, i: int) -> int:
        """First token that reads cached segment i."""
        return self.table.bounds[i + 1]

    def weight(self, i: int, like: torch.Tensor) -> torch.Tensor:
        """(B, H, L - start) weights of segment i at its readers; `like` is (B, H, L, d)."""
        s = self.start(i)
        if self.gates is None:
            return like.new_ones(()).to(self.acc_dtype).expand(*like.shape[:2], like.shape[2] - s)
        return self.gates[:, :, s:, i]

    def add_grad(self, grad_gates: torch.Tensor, i: int, grad_weight: torch.Tensor) -> None:
        """Accumulate d loss / d gates from d loss / d weight(i) (B, H, L - start)."""
        grad_gates[:, :, self.start(i):, i] += grad_weight


def grad_buffers(acc_dtype: torch.dtype, inputs: list[torch.Tensor], gates: torch.Tensor | None,
                 gates_need_grad: bool) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Zero gradient accumulators in the accumulation dtype: one per input, and one for the gates
    (None without gates or when they need no gradient)."""
    grads = [torch.zeros(t.shape, dtype=acc_dtype, device=t.device) for t in inputs]
    dg = None
    if gates is not None and gates_need_grad:
        dg = torch.zeros(gates.shape, dtype=acc_dtype, device=gates.device)
    return grads, dg


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 accumulation for fp32/bf16/fp16 inputs; float64 stays float64 (for gradcheck)."""
    return torch.float64 if dtype == torch.float64 else torch.float32
