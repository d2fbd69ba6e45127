"""Per-segment token weights for the PyTorch references: the gate each reader gives segment i.

The references loop over cached segments; segment i is read by the tokens t >= bounds[i + 1]
(exactly those with seg(t) > i). Its weight at such a token is

* dense gates (grm, soup, residual): g[t, i], or 1 without gates;
* SSC slots: sum_j g[t, j] [indices[t, j] == i] (a slot whose index is -1 or not yet cached
  never matches, because the loop only visits segments the token may read).

Looping over segments with one (B, H, L - start) weight at a time keeps the references'
memory at O(L) per step instead of one state copy per (tile, segment) or (token, slot).
"""

from __future__ import annotations

import torch

from kernels.common.segments import SegmentTable


class SegmentWeights:
    def __init__(self, table: SegmentTable, gates: torch.Tensor | None, indices: torch.Tensor | None,
                 acc_dtype: torch.dtype) -> None:
        self.table = table
        self.gates = None if gates is None else gates.to(acc_dtype)
        self.indices = indices
        self.acc_dtype = acc_dtype

    @classmethod
    def prepare(cls, table: SegmentTable, gates: torch.Tensor | None, indices: torch.Tensor | None,
                x: torch.Tensor) -> tuple["SegmentWeights", torch.Tensor]:
        """The weights for inputs like `x`, and `x` in the accumulation dtype."""
        acc = accumulation_dtype(x.dtype)
        return cls(table, gates, indices, acc), x.to(acc)

    def grad_buffer(self, like: torch.Tensor | None, needed: bool = True) -> torch.Tensor | None:
        """A zero gradient accumulator shaped like `like`, in the accumulation dtype (None if not needed)."""
        if like is None or not needed:
            return None
        return torch.zeros(like.shape, dtype=self.acc_dtype, device=like.device)

    def start(self, i: int) -> int:
        """First token that reads cached segment i."""
        return self.table.bounds[i + 1]

    def weight(self, i: int, like: torch.Tensor) -> torch.Tensor:
        """(B, H, L - start) weights of segment i at its readers; `like` is (B, H, L, d)."""
        s = self.start(i)
        if self.gates is None:
            return like.new_ones(()).to(self.acc_dtype).expand(*like.shape[:2], like.shape[2] - s)
        if self.indices is None:
            return self.gates[:, :, s:, i]
        return (self.gates[:, :, s:] * (self.indices[:, :, s:] == i)).sum(-1)

    def add_grad(self, grad_gates: torch.Tensor, i: int, grad_weight: torch.Tensor) -> None:
        """Accumulate d loss / d gates from d loss / d weight(i) (B, H, L - start)."""
        s = self.start(i)
        if self.indices is None:
            grad_gates[:, :, s:, i] += grad_weight
        else:
            grad_gates[:, :, s:] += grad_weight[..., None] * (self.indices[:, :, s:] == i)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 accumulation for fp32/bf16/fp16 inputs; float64 stays float64 (for gradcheck)."""
    return torch.float64 if dtype == torch.float64 else torch.float32
