"""Analytic forward FLOPs per token and state/cache bytes per sequence, per architecture.

These numbers define "compute" on every scaling plot, so they count the matrix multiplications
each model performs - the same ones `torch.utils.flop_counter.FlopCounterMode` counts - rather
than the 6N rule of thumb: projections, SwiGLU, the LM head, attention's dense L x L products,
the chunk-parallel memory scan (intra-chunk products grow with the chunk length), the online
read, the GRM/SSC gate scores and the Memory Caching read term. Elementwise work (norms,
softmax, gates' sigmoids, exp of decays) is not counted, as is conventional.

The MC read term is what makes caching cost more than its base memory:
* grm / soup / residual on an MLP memory: every token reads each earlier segment's memory,
  i.e. on average sum_s s * len_s / L reads per token (~ (N - 1) / 2 with N constant
  segments; with the paper's log segments, largest first, fewer than log2(L / C): 0.94 at
  L = 4096, C = 256); a read costs 2 d_h^2 for a matrix memory and 4 d_h f for an MLP memory
  with hidden width f, per head - for the default expansion f = 4 d_h that is 16 d_h^2, 8x a
  matrix read.
* residual on a matrix memory: one read per token of a cached segment (s >= 1) of the summed
  cached state, whatever s is (PAPER.md).
* ssc: min(k, s) reads per token in segment s, plus the router's O(N) scores.
A matrix-memory GRM read per token thus costs 2 d_h^2 (N-1)/2 per head against attention's
4 L d_h, i.e. about d_h / (4 C) of the dense attention products (d_h / (2C) of causal
attention); an expansion-4 MLP memory costs 8x that. Neither is automatically cheaper than
attention: `mcscale models` prints both side by side.

Training FLOPs per token = 3 x forward (backward = 2 x forward for matmuls).
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling.models.config import ModelConfig
from scaling.models.gates import GATES


@dataclass(frozen=True)
class FlopBreakdown:
    """Forward FLOPs per token by component (whole model, all layers)."""

    lm_head: float
    projections: float
    mlp: float
    attention: float
    memory_update: float
    online_read: float
    gate_scores: float
    cached_read: float

    @property
    def forward(self) -> float:
        return (self.lm_head + self.projections + self.mlp + self.attention + self.memory_update
                + self.online_read + self.gate_scores + self.cached_read)

    @property
    def training(self) -> float:
        return 3.0 * self.forward

    def as_dict(self) -> dict[str, float]:
        out = {k: float(v) for k, v in self.__dict__.items()}
        out["forward"] = self.forward
        out["training"] = self.training
        return out


def _segment_lengths(cfg: ModelConfig, seq_len: int) -> list[int]:
    bounds = cfg.segment_bounds(seq_len)
    return [b - a for a, b in zip(bounds[:-1], bounds[1:])]


def cached_read_pairs(cfg: ModelConfig, seq_len: int) -> int:
    """Number of (token, cached memory) reads in one sequence under cfg's caching strategy."""
    if cfg.caching == "none":
        return 0
    lengths = _segment_lengths(cfg, seq_len)
    if cfg.caching == "ssc":
        return sum(min(cfg.top_k, s) * n for s, n in enumerate(lengths))
    if cfg.caching == "residual" and cfg.memory == "matrix":
        return seq_len - lengths[0]  # one read of the summed cached state per token past segment 0
    return sum(s * n for s, n in enumerate(lengths))


def cached_reads_per_token(cfg: ModelConfig, seq_len: int | None = None) -> float:
    """Average number of cached memories a token reads (0 without caching)."""
    length = cfg.seq_len if seq_len is None else seq_len
    return cached_read_pairs(cfg, length) / length


def memory_read_flops(cfg: ModelConfig) -> float:
    """FLOPs of reading one memory state with one query, per head."""
    d = cfg.head_dim
    if cfg.memory == "mlp":
        return 4.0 * d * cfg.memory_expansion * d
    return 2.0 * d * d


def _matrix_memory_flops(cfg: ModelConfig) -> tuple[float, float]:
    """(update, online read) FLOPs per token per head of the chunked matrix memory."""
    d, c = cfg.head_dim, cfg.scan_chunk_len
    streams = 2 if cfg.mixer == "swla" else 1
    update = 2.0 * streams * d * d
    read = 4.0 * c * streams * d + 2.0 * d * d
    return update, read


def _mlp_memory_flops(cfg: ModelConfig) -> tuple[float, float]:
    """(update, online read) FLOPs per token per head of the chunked MLP memory."""
    d, c = cfg.head_dim, cfg.scan_chunk_len
    f = cfg.memory_expansion * d
    momentum = cfg.mixer == "titans"
    update = 2.0 * d * f  # pre-activations at the chunk's weights
    update += 2.0 * d * f  # branch output W_out GELU(.) (LayerNorm's backward needs it, any objective)
    update += 2.0 * d * f  # back-propagated error through W_out
    update += 4.0 * d * f  # chunk-end W1, W2
    if momentum:
        update += 4.0 * d * f + 2.0 * c * c + 2.0 * c  # chunk-end momenta, mixing matrices
    per_layer = 2.0 * d * f * (2 if momentum else 1) + 2.0 * c * d + 2.0 * c * f
    return update, 2.0 * per_layer


def forward_flops(cfg: ModelConfig, seq_len: int | None = None) -> FlopBreakdown:
    """Forward FLOPs per token (averaged over a sequence of `seq_len` tokens)."""
    length = cfg.seq_len if seq_len is None else seq_len
    dm, h, d, layers = cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.n_layers
    lm_head = 2.0 * dm * cfg.vocab_size
    mlp = layers * 3 * 2.0 * dm * cfg.mlp_hidden
    attention = update = online = gates = cached = 0.0
    if cfg.mixer == "attention":
        projections = layers * (2.0 * dm * 3 * dm + 2.0 * dm * dm)
        attention = layers * 4.0 * length * dm  # dense QK^T and PV over all L keys
    else:
        n_gates = len(GATES[(cfg.mixer, cfg.memory)])
        gated = cfg.caching in ("grm", "soup", "ssc")
        projections = layers * (2.0 * dm * 3 * dm + 2.0 * dm * dm + 2.0 * dm * n_gates * h
                                + (2.0 * dm * dm if gated else 0.0))
        upd, rd = _mlp_memory_flops(cfg) if cfg.memory == "mlp" else _matrix_memory_flops(cfg)
        update, online = layers * h * upd, layers * h * rd
        if gated:
            gates = layers * h * 2.0 * d * cfg.n_segments(length)
        cached = layers * h * memory_read_flops(cfg) * cached_read_pairs(cfg, length) / length
    return FlopBreakdown(lm_head=lm_head, projections=projections, mlp=mlp, attention=attention,
                         memory_update=update, online_read=online, gate_scores=gates, cached_read=cached)


def forward_flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> float:
    return forward_flops(cfg, seq_len).forward


def training_flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> float:
    return forward_flops(cfg, seq_len).training


@dataclass(frozen=True)
class SequenceBytes:
    """Inference memory that grows with the sequence, for one sequence, all layers."""

    state_bytes: float  # fixed-size online state (recurrent) - 0 for attention
    cache_bytes: float  # KV cache (attention) or the cached segment memories + descriptors

    @property
    def total_bytes(self) -> float:
        return self.state_bytes + self.cache_bytes


def sequence_bytes(cfg: ModelConfig, seq_len: int | None = None, bytes_per_element: int = 2) -> SequenceBytes:
    """State and cache bytes at the end of a `seq_len`-token sequence (default bf16 elements)."""
    length = cfg.seq_len if seq_len is None else seq_len
    dm, h, d, layers = cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.n_layers
    if cfg.mixer == "attention":
        return SequenceBytes(0.0, float(layers * 2 * length * dm * bytes_per_element))
    if cfg.memory == "mlp":
        weights = h * 2 * d * cfg.memory_expansion * d
        state = weights * (2 if cfg.mixer == "titans" else 1)  # Titans also keeps momentum
    else:
        weights = h * d * d
        state = weights + (2 * dm if cfg.mixer == "swla" else 0)  # SWLA keeps the previous k, v
    n_cached = 0 if cfg.caching == "none" else cfg.n_segments(length) - 1
    cache = n_cached * weights
    if cfg.caching in ("grm", "soup", "ssc"):
        cache += n_cached * dm + dm  # segment descriptors + the running online descriptor
    return SequenceBytes(float(layers * state * bytes_per_element), float(layers * cache * bytes_per_element))


def attention_kv_cache_bytes(cfg: ModelConfig, seq_len: int | None = None, bytes_per_element: int = 2) -> float:
    """KV cache of a Transformer with cfg's width and depth, for comparison with any model."""
    length = cfg.seq_len if seq_len is None else seq_len
    return float(cfg.n_layers * 2 * length * cfg.d_model * bytes_per_element)


def counting_mode():  # -> FlopCounterMode
    """`FlopCounterMode` that also counts the CPU flash-attention kernel.

    torch's counter registers the CUDA SDPA kernels but not
    `aten._scaled_dot_product_flash_attention_for_cpu`, so on CPU attention would count as
    zero; this registers it with torch's own SDPA formula.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    def cpu_flash(query, key, value, *args, out_val=None, **kwargs) -> int:  # noqa: ANN001
        return sdpa_flop_count(query, key, value)

    def cpu_flash_backward(grad_out, query, key, value, *args, out_val=None, **kwargs) -> int:  # noqa: ANN001
        return sdpa_backward_flop_count(grad_out, query, key, value)

    aten = torch.ops.aten
    return FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu: cpu_flash,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: cpu_flash_backward})
