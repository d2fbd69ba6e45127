"""Device memory a trial needs, estimated before any GPU is paid for.

Parameters, gradients and AdamW state are counted exactly (fp32 master weights: 4 + 4 + 8
bytes per parameter, plus a 2-byte bf16 copy under autocast; divided over the workers under
FSDP). Activations are *measured*, not guessed: the model runs one forward pass on PyTorch's
`meta` device (shapes only, no memory, no arithmetic) while a saved-tensor hook adds up every
storage autograd keeps for backward. That is exact for this implementation, including the
Memory Caching read's gathered states, which no closed-form rule of thumb would track as the
code changes. What makes it match a CUDA run:

* **bf16 is CUDA autocast, not a bf16 model.** The fp32 model runs under `_SimulatedCuda`, a
  torch-function mode that applies CUDA autocast's cast policy on the meta device (which has no
  autocast of its own; `torch.autocast("meta")` is refused and CPU autocast's op lists differ):
  matmuls and linears get bf16 copies of their inputs, while `exp`, `pow`, `rsqrt`, softmax,
  cumsum, sums and norms run in fp32, so q and k after `F.normalize`, the recurrent states, the
  gates and the residual stream are saved in fp32 as they are on a GPU. A bf16 model would have
  halved all of them. Weight casts are cached once per pass, as autocast caches them, and are not
  activations (the 2 bytes per parameter above). Code that asks whether autocast is on (e.g.
  `torch.is_autocast_enabled("cuda")`) is told no on the meta device: such a branch is measured
  in fp32, an overestimate.
* **Storages, not tensors.** A saved view keeps its whole base alive, and several views of one
  storage are one allocation, so bytes are counted once per distinct storage.
* the meta device only has SDPA's math path, which saves the L x L attention matrix; CUDA runs
  flash attention, which saves q, k, v, the output and one log-sum-exp per row, so attention
  is counted that way;
* the cross-entropy's workspace is counted as the loss loop really allocates it
  (`CROSS_ENTROPY_BYTES_PER_LOGIT`).

Cost. A meta pass costs about a millisecond per elementwise op (their meta kernels are Python),
so an MLP memory's chunk loop makes a 4K pass take seconds. Three things keep `mcscale plan` on
the paper ladder to seconds:

* one pass of a one-block model: hooks on the block split the saved bytes into the block's and
  the rest's (embedding, final norm, head), and depth is linear in blocks (all blocks are equal);
* a shorter sequence where that is exact: without caching every saved tensor grows linearly
  with the length, and with constant segments of C tokens (residual, grm, soup) as a polynomial
  of degree 2 in the number of segments (the gates are L x N); the bytes are measured at 2-3
  chunks or 2-4 segments and the polynomial is evaluated at the full length (tests hold it equal
  to the full pass). SSC (top-k saturates), log segments and lengths off the chunk grid are
  measured at full length;
* a cache per distinct shape: every field of `ModelConfig` that can change the saved bytes is
  in the key, the rest (depth, RoPE base, segment fields of a model without caching) is not.

The estimate is compared against `MEMORY_HEADROOM` of the GPU's memory, leaving room for the
allocator's fragmentation, kernels' workspaces and the CUDA context. It measures the eager graph
with the PyTorch reference of every op (the meta device's backend); a compiled step, or a CUDA
kernel that recomputes in backward what the reference saves, keeps less, so there it is an upper
bound.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode

from scaling.errors import UserInputError
from scaling.models import LanguageModel, ModelConfig
from scaling.models.ladder import count_params

MEMORY_HEADROOM = 0.85  # the most of a GPU's memory a trial's estimate may use: at least 15% stays free
ADAMW_BYTES_PER_PARAM = 4 + 4 + 8  # fp32 weight, fp32 gradient, two fp32 moments
PRECISIONS = ("bf16", "fp32")

#: Peak bytes per logit of the loss in `scaling.train.loop._step_loss`, which runs
#: ``F.cross_entropy(logits.float().flatten(0, 1), targets, reduction="sum")`` eagerly over a
#: whole micro-batch (no row chunking) and then ``backward()``. At the peak, inside
#: log-softmax's backward, these are alive at once:
#:
#: ======  ===========================================================================
#: bytes   tensor
#: ======  ===========================================================================
#: 2       the bf16 logits autocast's LM-head matmul returned (the loop's ``logits``
#:         variable holds them until the micro-batch ends)
#: 4       log-softmax's fp32 output, saved for its backward
#: 4       nll_loss's gradient: a full fp32 (rows x vocab) tensor, zero but for targets
#: 4       log-softmax's fp32 input gradient, being written
#: ======  ===========================================================================
#:
#: = 14. (The fp32 copy made by ``.float()`` lives only during the forward, where the peak is
#: 2 + 4 + 4 = 10; nothing keeps it.) In fp32 ``.float()`` is the logits themselves: 4 + 4 + 4 + 4
#: = 16. The 8 bytes once counted here (fp32 logits and their gradient) missed the saved
#: log-softmax and nll_loss's gradient. A test runs that loss under a live-memory tracker and
#: finds these numbers; a chunked loss would need a new count.
CROSS_ENTROPY_BYTES_PER_LOGIT = {"bf16": 14, "fp32": 16}

# CUDA autocast's cast policy (aten/src/ATen/autocast_mode.{h,cpp}: the CUDA registrations), by the
# name the torch function carries. Ops not named here run in the dtypes they are given, as under
# autocast; elementwise ops then promote bf16 with fp32 to fp32 by themselves.
_LOWER_PRECISION = frozenset({
    "matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "baddbmm", "addmm", "addbmm", "addmv", "addr", "mv",
    "einsum", "linear", "chain_matmul", "multi_dot", "vecdot", "conv1d", "conv2d", "conv3d", "conv_tbc",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "convolution", "prelu", "lstm_cell",
    "gru_cell", "rnn_tanh_cell", "rnn_relu_cell", "scaled_dot_product_attention"})
_FP32 = frozenset({
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt",
    "sinh", "tan", "pow", "__pow__", "__rpow__", "softplus", "layer_norm", "group_norm", "rms_norm",
    "frobenius_norm", "nuclear_norm", "cosine_similarity", "poisson_nll_loss", "cosine_embedding_loss",
    "nll_loss", "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss",
    "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss", "triplet_margin_loss",
    "multi_margin_loss", "binary_cross_entropy_with_logits", "dist", "pdist", "cdist", "renorm", "logsumexp",
    "cross_entropy"})
# Run with dtype=float32 (the output is fp32, the input is not copied): autocast's fp32_set_opt_dtype
# and, for norm, fp32_append_dtype.
_FP32_OUTPUT = frozenset({"prod", "softmax", "log_softmax", "cumprod", "cumsum", "vector_norm", "matrix_norm",
                          "sum", "norm"})
_PROMOTE = frozenset({"addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "vdot", "grid_sampler",
                      "index_put", "tensordot", "scatter_add"})


@dataclass(frozen=True)
class MemoryEstimate:
    """Per-worker device memory of one training step, in bytes."""

    weights_and_optimizer_bytes: float
    activation_bytes: float
    logits_bytes: float  # the cross-entropy's peak workspace over the micro-batch's logits

    @property
    def total_bytes(self) -> float:
        return self.weights_and_optimizer_bytes + self.activation_bytes + self.logits_bytes


@dataclass(frozen=True)
class ActivationProfile:
    """Bytes autograd saves for one sequence: once per model and once per block."""

    outside_bytes: float  # embedding, final norm and LM head
    per_block_bytes: float


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


def _is_float(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64


class _SimulatedCuda(TorchFunctionMode):
    """What a CUDA training forward saves, reproduced on the meta device.

    With `autocast_dtype` set, applies CUDA autocast's policy (the module lists above) before
    each op, as autocast does above autograd, so autograd records the casts and saves what a GPU
    run saves; lower-precision casts of parameters are cached for the pass (autocast's weight
    cache) and remembered in `weight_casts`. Always replaces SDPA by the flash-attention stand-in.
    """

    def __init__(self, autocast_dtype: torch.dtype | None) -> None:
        super().__init__()
        self.dtype = autocast_dtype
        self.weight_casts: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(param) -> (param, cast)
        self.weight_cast_storages: set[int] = set()

    def _cast(self, t: Any, dtype: torch.dtype) -> Any:
        if isinstance(t, (list, tuple)):
            return type(t)(self._cast(x, dtype) for x in t)
        if not _is_float(t) or t.dtype == dtype:
            return t
        cacheable = dtype == self.dtype and t.dtype == torch.float32 and t.requires_grad and t.is_leaf \
            and not t._is_view()
        if not cacheable:
            return t.to(dtype)
        if id(t) not in self.weight_casts:
            cast = t.to(dtype)
            self.weight_casts[id(t)] = (t, cast)
            self.weight_cast_storages.add(_storage_key(cast))
        return self.weight_casts[id(t)][1]

    def _cast_all(self, args: tuple, kwargs: dict, dtype: torch.dtype) -> tuple[tuple, dict]:
        return (tuple(self._cast(a, dtype) for a in args), {k: self._cast(v, dtype) for k, v in kwargs.items()})

    def _normalize(self, input: torch.Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12,  # noqa: A002
                   out: torch.Tensor | None = None) -> torch.Tensor:
        """F.normalize's body with this mode active: it is a Python composite, so its norm (fp32
        under autocast) and division (fp32 by promotion) would otherwise run unseen."""
        with self:
            denom = input.norm(p, dim, keepdim=True).clamp_min(eps).expand_as(input)
            return torch.div(input, denom, out=out) if out is not None else input / denom

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if name == "scaled_dot_product_attention":
            q, k, v = (list(args) + [kwargs.get(n) for n in ("query", "key", "value")[len(args):]])[:3]
            if q.device.type == "meta":
                if self.dtype is not None:
                    q, k, v = (self._cast(t, self.dtype) for t in (q, k, v))
                return _FlashAttentionSaves.apply(q, k, v)
        if self.dtype is None:
            return func(*args, **kwargs)
        if name in _LOWER_PRECISION:
            args, kwargs = self._cast_all(args, kwargs, self.dtype)
        elif name in _FP32:
            args, kwargs = self._cast_all(args, kwargs, torch.float32)
        elif name in _FP32_OUTPUT:
            if args and _is_float(args[0]) and kwargs.get("dtype") is None and not (
                    name in ("softmax", "log_softmax") and len(args) > 3):
                kwargs["dtype"] = torch.float32
        elif name == "normalize":
            return self._normalize(*args, **kwargs)
        elif name in _PROMOTE:
            floats = [t for t in list(args) + list(kwargs.values()) if _is_float(t)]
            if floats:
                widest = functools.reduce(torch.promote_types, (t.dtype for t in floats))
                args, kwargs = self._cast_all(args, kwargs, widest)
        return func(*args, **kwargs)


def _storage_key(t: torch.Tensor) -> int:
    """Identity of the allocation behind `t` (meta tensors have storages too, just no bytes)."""
    return t.untyped_storage()._cdata


@dataclass(frozen=True)
class SavedBytes:
    """What one pass of a one-block model saved: bytes outside the block, in it, and by dtype."""

    outside_bytes: int
    block_bytes: int
    by_dtype: dict[torch.dtype, int]


def saved_bytes(model: LanguageModel, seq_len: int, autocast_dtype: torch.dtype | None) -> SavedBytes:
    """Forward one sequence through a one-block `model` under `_SimulatedCuda(autocast_dtype)`,
    adding up every distinct storage autograd saves, split by whether the block or the rest of the
    model saved it first.

    A block saves its own input (its first norm does) and everything it computes; the final norm
    saves the last block's output. So an n-block model saves outside + n * block, exactly the
    difference of a 2- and a 1-block pass, at the cost of one block. Parameters and their autocast
    copies are not activations (they are counted per parameter). Runs on any device; the estimate
    uses the meta device, tests a CPU model to hold the two equal.
    """
    if len(model.blocks) != 1:
        raise ValueError(f"saved_bytes measures a one-block model, got {len(model.blocks)} blocks")
    simulated = _SimulatedCuda(autocast_dtype)
    seen = {_storage_key(p) for p in model.parameters()}
    kept: list[torch.Tensor] = []  # keeps every counted storage alive, so no key is reused
    totals = {"outside": 0, "block": 0}
    by_dtype: dict[torch.dtype, int] = {}
    where = ["outside"]

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in seen:
            seen.add(key)
            kept.append(t)
            if key not in simulated.weight_cast_storages:
                size = t.untyped_storage().nbytes()
                totals[where[0]] += size
                by_dtype[t.dtype] = by_dtype.get(t.dtype, 0) + size
        return t

    block = model.blocks[0]
    hooks = [block.register_forward_pre_hook(lambda *_: where.__setitem__(0, "block")),
             block.register_forward_hook(lambda *_: where.__setitem__(0, "outside"))]
    device = next(model.parameters()).device
    tokens = torch.zeros(1, seq_len, dtype=torch.long, device=device)
    try:
        with simulated, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(tokens)
    finally:
        for hook in hooks:
            hook.remove()
    return SavedBytes(totals["outside"], totals["block"], by_dtype)


def _measure(cfg: ModelConfig, bf16: bool) -> ActivationProfile:
    """Saved bytes of one sequence of `cfg` at its `seq_len`, from one meta-device pass of one block."""
    with torch.device("meta"):
        model = LanguageModel(cfg.replace(n_layers=1))
    saved = saved_bytes(model, cfg.seq_len, torch.bfloat16 if bf16 else None)
    return ActivationProfile(float(saved.outside_bytes), float(saved.block_bytes))


def measurement_lengths(cfg: ModelConfig) -> tuple[int, ...]:
    """The sequence lengths `cfg`'s saved bytes are measured at: shorter ones where the bytes are a
    known polynomial of the length (see the module docstring), else the full length alone.

    Without caching: degree 1 in the length, measured at 2 and 3 scan chunks (a one-chunk scan
    saves its zero start state once more, so 1 is off the line). With constant
    segments under residual, grm or soup: degree 2 in the number of segments N (the gates and
    their mask are L x N, the states N x d x d), measured at N = 2, 3, 4 (N = 1 reads no cache, a
    different code path). Only where the full length is on the same grid (nothing is padded) and
    the short passes cost fewer tokens than the full one.
    """
    full = (cfg.seq_len,)
    if cfg.caching == "none":
        step = cfg.scan_chunk_len
        points: tuple[int, ...] = (2 * step, 3 * step)
    elif cfg.caching in ("residual", "grm", "soup") and cfg.segmentation == "constant":
        step = cfg.segment_len_tokens
        points = (2 * step, 3 * step, 4 * step)
    else:
        return full
    if cfg.seq_len % step or cfg.padded_len(cfg.seq_len) != cfg.seq_len or sum(points) >= cfg.seq_len:
        return full
    return points


def _extrapolate(points: tuple[int, ...], values: list[float], at: int) -> float:
    """The polynomial through (points, values) evaluated at `at` (Lagrange, in exact fractions)."""
    total = Fraction(0)
    for i, (x_i, y_i) in enumerate(zip(points, values)):
        term = Fraction(int(y_i))
        for j, x_j in enumerate(points):
            if j != i:
                term *= Fraction(at - x_j, x_i - x_j)
        total += term
    return float(total)


def shape_key(cfg: ModelConfig) -> ModelConfig:
    """`cfg` with every field that cannot change the saved bytes per block and outside set to its
    default: the depth (bytes are per block), the RoPE base (a value, not a shape), and without
    caching the segment fields; top_k outside SSC. Everything else (widths, heads, mixer, memory,
    caching, C, segmentation and mode, the length, chunk, vocabulary, MLP widths, the online-gate
    init, which decides whether that parameter exists) stays in the key."""
    default = ModelConfig()
    changes: dict[str, Any] = dict(n_layers=1, rope_theta=default.rope_theta)
    if cfg.caching == "none":
        changes.update(segment_len=None, segmentation=default.segmentation, segment_mode=default.segment_mode)
    if cfg.caching != "ssc":
        changes["top_k"] = default.top_k
    return cfg.replace(**changes)


@functools.lru_cache(maxsize=1024)
def _cached_profile(key: ModelConfig, bf16: bool) -> ActivationProfile:
    points = measurement_lengths(key)
    profiles = [_measure(key.replace(seq_len=length), bf16) for length in points]
    if points == (key.seq_len,):
        return profiles[0]
    return ActivationProfile(_extrapolate(points, [p.outside_bytes for p in profiles], key.seq_len),
                             _extrapolate(points, [p.per_block_bytes for p in profiles], key.seq_len))


def activation_profile(cfg: ModelConfig, bf16: bool) -> ActivationProfile:
    """Saved bytes of one sequence of `cfg` (outside the blocks, per block), cached per distinct shape
    (`shape_key`): a ladder repeats each shape across seeds, micro-batch candidates and rungs' trials."""
    return _cached_profile(shape_key(cfg), bool(bf16))


#: Hits and misses of the per-shape cache (functools' CacheInfo), for tests and diagnostics.
profile_cache_info = _cached_profile.cache_info


def activation_bytes_per_sequence(cfg: ModelConfig, bf16: bool, activation_checkpointing: bool = False) -> float:
    """Saved activations of one sequence through the whole model.

    With activation checkpointing each block keeps only its fp32 input (the residual stream is
    fp32 under autocast too), and one block's activations exist at a time while it is recomputed
    in backward.
    """
    profile = activation_profile(cfg, bf16)
    if activation_checkpointing:
        return profile.outside_bytes + cfg.n_layers * 4.0 * cfg.seq_len * cfg.d_model + profile.per_block_bytes
    return profile.outside_bytes + profile.per_block_bytes * cfg.n_layers


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise UserInputError("precision", f"unknown precision {precision!r}",
                             f"use one of {', '.join(PRECISIONS)}")


def estimate_memory(cfg: ModelConfig, micro_batch_sequences: int, precision: str, workers: int = 1,
                    parallelism: str = "ddp", activation_checkpointing: bool = False) -> MemoryEstimate:
    """Device memory per worker of a step with `micro_batch_sequences` sequences per forward pass."""
    _check_precision(precision)
    params = count_params(cfg)["params_total"]
    per_param = ADAMW_BYTES_PER_PARAM + (2 if precision == "bf16" else 0)
    state = params * per_param / (workers if parallelism == "fsdp" else 1)
    per_sequence = activation_bytes_per_sequence(cfg, precision == "bf16", activation_checkpointing)
    logits = float(CROSS_ENTROPY_BYTES_PER_LOGIT[precision]) * micro_batch_sequences * cfg.seq_len * cfg.vocab_size
    return MemoryEstimate(state, per_sequence * micro_batch_sequences, logits)


def fitting_micro_batch(cfg: ModelConfig, share_sequences: int, precision: str, memory_bytes: float,
                        workers: int = 1, parallelism: str = "ddp", activation_checkpointing: bool = False) -> int | None:
    """The largest micro-batch (a divisor of the worker's share) whose estimate leaves at least
    1 - MEMORY_HEADROOM (15%) of the GPU's `memory_bytes` free, or None when not even one sequence does."""
    for micro in sorted((d for d in range(1, share_sequences + 1) if share_sequences % d == 0), reverse=True):
        estimate = estimate_memory(cfg, micro, precision, workers, parallelism, activation_checkpointing)
        if estimate.total_bytes <= MEMORY_HEADROOM * memory_bytes:
            return micro
    return None
