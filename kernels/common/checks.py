"""Shape checks of the public ops: a wrong shape is named with the expected layout."""

from __future__ import annotations

import torch

from scaling.errors import UserInputError


def expect_shape(name: str, x: torch.Tensor, expected: tuple[int | None, ...], layout: str) -> None:
    """Raise a UserInputError unless `x` has len(expected) dims matching every non-None size."""
    ok = x.dim() == len(expected) and all(e is None or s == e for s, e in zip(x.shape, expected))
    if not ok:
        want = "(" + ", ".join("?" if e is None else str(e) for e in expected) + ")"
        raise UserInputError(name, f"shape {tuple(x.shape)} does not match {want}", f"pass {name} as {layout}")


def expect_slots(indices: torch.Tensor, gates: torch.Tensor, q: torch.Tensor) -> None:
    b, h, length = q.shape[:3]
    if indices.dtype.is_floating_point or indices.dtype == torch.bool:
        raise UserInputError("indices", f"dtype {indices.dtype} is not an integer type",
                             "pass the top-k segment indices as int64 or int32 (e.g. from torch.topk)")
    expect_shape("indices", indices, (b, h, length, None), "(B, H, L, K) cached segment per slot, -1 if empty")
    expect_shape("gates", gates, tuple(indices.shape), "(B, H, L, K): the gate of each slot")
