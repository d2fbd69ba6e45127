"""Count the operations in a training step that would make the host wait for a GPU.

A blocking host-device round trip inside a step (a `torch.tensor(python_list, device=cuda)`
copy, an `.item()`, a boolean-mask index whose output size depends on the data) stalls the CPU
until the GPU drains its queue, so the next kernels are launched late: at ~7 of them per layer
the GPU idles between layers. CUDA can report them itself (`torch.cuda.set_sync_debug_mode`),
but only on a GPU; this counter sees the same operations on any device, CPU included, by
watching the aten ops under a `TorchDispatchMode`, so a CPU test can hold a step to zero.

What counts (each is a synchronising call on CUDA):

* ``aten.lift_fresh`` - a tensor built from host data (`torch.tensor(...)`, a Python-list index);
* ``aten._local_scalar_dense`` - `.item()`, `float(t)`, `bool(t)`, `if t:`;
* data-dependent output shapes: `nonzero`, `masked_select`, `unique`, boolean-mask indexing,
  `repeat_interleave` without `output_size`;
* a copy between the host and another device (`.to(device)`, `.cpu()`), when one side is CUDA.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_ALWAYS_SYNC = {
    "aten::lift_fresh", "aten::lift_fresh_copy", "aten::_local_scalar_dense", "aten::nonzero",
    "aten::nonzero_static", "aten::masked_select", "aten::_unique", "aten::_unique2",
    "aten::unique_dim", "aten::unique_consecutive", "aten::is_nonzero", "aten::equal",
}


def _devices(args: Any) -> set[str]:
    found: set[str] = set()
    for item in args if isinstance(args, (list, tuple)) else (args,):
        if isinstance(item, torch.Tensor):
            found.add(item.device.type)
    return found


def _syncs(func: Any, args: tuple, kwargs: dict) -> bool:
    name = func._schema.name
    if name in _ALWAYS_SYNC:
        return True
    if name == "aten::repeat_interleave" and kwargs.get("output_size") is None and isinstance(args[0], torch.Tensor) \
            and args[0].dtype in (torch.long, torch.int):
        return True
    if name in ("aten::index", "aten::index_put", "aten::index_put_"):
        indices = args[1] if len(args) > 1 else ()
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ())
    if name == "aten::_to_copy":
        target = kwargs.get("device")
        return target is not None and torch.device(target).type != args[0].device.type
    if name == "aten::copy_":
        kinds = _devices(args[:2])
        return len(kinds) > 1
    return False


class HostSyncCounter(TorchDispatchMode):
    """Context manager: `with HostSyncCounter() as syncs: step()`, then `syncs.count`, `syncs.ops`."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    @property
    def count(self) -> int:
        return sum(self.ops.values())

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if _syncs(func, args, kwargs):
            self.ops[func._schema.name] += 1
        return func(*args, **kwargs)
