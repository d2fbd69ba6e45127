"""Device memory a trial needs, estimated before any GPU is paid for.

Parameters, gradients and AdamW state are counted exactly (fp32 master weights: 4 + 4 + 8
bytes per parameter, plus a 2-byte bf16 copy under autocast; divided over the workers under
FSDP). Activations are *measured*, not guessed: the model runs one forward pass on PyTorch's
`meta` device (shapes only, no memory, no arithmetic) while a saved-tensor hook adds up every
tensor autograd keeps for backward. That is exact for this implementation, including the
Memory Caching read's gathered states, which no closed-form rule of thumb would track as the
code changes. Two details make it match a CUDA run:

* the meta device only has SDPA's math path, which saves the L x L attention matrix; CUDA runs
  flash attention, which saves q, k, v, the output and one log-sum-exp per row, so attention
  is counted that way;
* depth is linear: the pass runs at 1 and 2 layers and is extrapolated, which keeps a
  1.3B-parameter estimate to a second.

The estimate adds the fp32 logits and their gradient (the largest transient) and is compared
against `MEMORY_HEADROOM` of the GPU's memory, leaving room for the allocator's fragmentation,
kernels' workspaces and the CUDA context.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from scaling.models import LanguageModel, ModelConfig
from scaling.models.ladder import count_params

MEMORY_HEADROOM = 0.85  # fraction of a GPU's memory a trial's estimate may use
ADAMW_BYTES_PER_PARAM = 4 + 4 + 8  # fp32 weight, fp32 gradient, two fp32 moments


@dataclass(frozen=True)
class MemoryEstimate:
    """Per-worker device memory of one training step, in bytes."""

    weights_and_optimizer_bytes: float
    activation_bytes: float
    logits_bytes: float

    @property
    def total_bytes(self) -> float:
        return self.weights_and_optimizer_bytes + self.activation_bytes + self.logits_bytes


class _FlashAttentionSaves(torch.autograd.Function):
    """Stands in for SDPA on the meta device, saving what flash attention saves for backward."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        out = torch.empty_like(q)
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


@contextlib.contextmanager
def _flash_attention_on_meta() -> Iterator[None]:
    original = F.scaled_dot_product_attention

    def sdpa(q, k, v, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        return _FlashAttentionSaves.apply(q, k, v) if q.device.type == "meta" else original(q, k, v, *args, **kwargs)

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def _saved_bytes(cfg: ModelConfig, bf16: bool) -> float:
    """Bytes autograd saves in one forward pass of one sequence (parameters excluded)."""
    with torch.device("meta"):
        model = LanguageModel(cfg)
    if bf16:  # autocast keeps bf16 copies of matmul inputs; the bf16 model approximates that
        model = model.to(torch.bfloat16)
    params = {id(p) for p in model.parameters()}
    saved: dict[int, tuple[torch.Tensor, int]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in params:
            saved[id(t)] = (t, t.numel() * t.element_size())  # keep t alive so ids stay unique
        return t

    tokens = torch.zeros(1, cfg.seq_len, dtype=torch.long, device="meta")
    with _flash_attention_on_meta(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(tokens)
    return float(sum(size for _, size in saved.values()))


@functools.lru_cache(maxsize=512)
def _per_layer_bytes(cfg: ModelConfig, bf16: bool) -> tuple[float, float]:
    """(bytes outside the blocks, bytes per block) saved for one sequence, measured at 1 and 2 layers."""
    one, two = (_saved_bytes(cfg.replace(n_layers=n), bf16) for n in (1, 2))
    per_layer = two - one
    return one - per_layer, per_layer


def activation_bytes_per_sequence(cfg: ModelConfig, bf16: bool, activation_checkpointing: bool = False) -> float:
    """Saved activations of one sequence through the whole model.

    With activation checkpointing each block keeps only its fp32 input, and one block's
    activations exist at a time while it is recomputed in backward.
    """
    outside, per_layer = _per_layer_bytes(cfg.replace(n_layers=1), bf16)
    if activation_checkpointing:
        return outside + cfg.n_layers * 4.0 * cfg.seq_len * cfg.d_model + per_layer
    return outside + per_layer * cfg.n_layers


def estimate_memory(cfg: ModelConfig, micro_batch_sequences: int, precision: str, workers: int = 1,
                    parallelism: str = "ddp", activation_checkpointing: bool = False) -> MemoryEstimate:
    """Device memory per worker of a step with `micro_batch_sequences` sequences per forward pass."""
    params = count_params(cfg)["params_total"]
    per_param = ADAMW_BYTES_PER_PARAM + (2 if precision == "bf16" else 0)
    state = params * per_param / (workers if parallelism == "fsdp" else 1)
    per_sequence = activation_bytes_per_sequence(cfg, precision == "bf16", activation_checkpointing)
    logits = 2 * 4.0 * micro_batch_sequences * cfg.seq_len * cfg.vocab_size  # fp32 logits and their gradient
    return MemoryEstimate(state, per_sequence * micro_batch_sequences, logits)


def fitting_micro_batch(cfg: ModelConfig, share_sequences: int, precision: str, memory_bytes: float,
                        workers: int = 1, parallelism: str = "ddp", activation_checkpointing: bool = False) -> int | None:
    """The largest micro-batch (a divisor of the worker's share) whose estimate fits the GPU, or None."""
    for micro in sorted((d for d in range(1, share_sequences + 1) if share_sequences % d == 0), reverse=True):
        estimate = estimate_memory(cfg, micro, precision, workers, parallelism, activation_checkpointing)
        if estimate.total_bytes <= MEMORY_HEADROOM * memory_bytes:
            return micro
    return None
