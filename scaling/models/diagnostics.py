"""Where Memory Caching's read comes from: the gate weight on the online (live) memory.

Why: a gated strategy (GRM, Soup, SSC) that gives stale snapshots most of a token's read makes MC
lose to its own base memory (issue 21: at init a token in segment s gave its online memory only
1/(s+1)). The evaluation records, per layer and per segment index, the mean gate mass on the
online memory, so a study shows whether the gates lean on the caches and where.

Usage (evaluation only; nothing is recorded during training)::

    with record_online_gates(model) as gates:
        model(tokens)
    mass = online_gate_mass(gates, bounds)   # {layer: [mean online weight per segment]}
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch

from scaling.models.mixers.recurrent import RecurrentMixer


def gated_mixers(model: torch.nn.Module) -> list[RecurrentMixer]:
    """The recurrent mixers of `model` whose caching strategy has gates, in layer order."""
    return [m for m in model.modules() if isinstance(m, RecurrentMixer) and m.gate_proj is not None]


@contextlib.contextmanager
def record_online_gates(model: torch.nn.Module) -> Iterator[dict[int, list[torch.Tensor]]]:
    """Collect the online gate weight (B, H, L) of every forward pass, per gated layer (0-based
    position among the gated mixers); an empty dict for a model without gates."""
    mixers = gated_mixers(model)
    records: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(mixers))}
    for i, mixer in enumerate(mixers):
        mixer.online_gate_sink = records[i]
    try:
        yield records
    finally:
        for mixer in mixers:
            mixer.online_gate_sink = None


def online_gate_mass(records: dict[int, list[torch.Tensor]], bounds: Sequence[int],
                     length: int | None = None) -> dict[int, list[float]]:
    """Per layer, the mean online gate weight over the tokens of each segment (over batch and heads).

    `bounds` are the segment boundaries of the real (unpadded) input; positions past `length` (the
    padding the mixer adds) are ignored.
    """
    out: dict[int, list[float]] = {}
    for layer, tensors in records.items():
        if not tensors:
            continue
        n_segments = len(bounds) - 1
        per_segment = torch.zeros(n_segments, dtype=torch.float64)
        counts = torch.zeros(n_segments, dtype=torch.float64)
        for gate in tensors:
            g = gate[..., : length if length is not None else gate.shape[-1]].double()
            by_position = g.reshape(-1, g.shape[-1]).sum(0).cpu()  # one transfer per forward pass
            segment = torch.bucketize(torch.arange(by_position.numel()), torch.tensor(bounds[1:-1]), right=True)
            per_segment.index_add_(0, segment, by_position)
            counts.index_add_(0, segment, torch.full_like(by_position, g.numel() / g.shape[-1]))
        out[layer] = [float(x / n) if n else float("nan") for x, n in zip(per_segment, counts)]
    return out
