"""The memory estimate: autocast's fp32 tensors, the cross-entropy's workspace, the headroom rule, the cache.

Everything runs on this CPU: the estimate's meta-device passes are checked against real CPU
passes of the same models under the same simulated CUDA autocast policy, and the loss workspace
against the trainer's own loss code under a live-memory tracker.
"""

from __future__ import annotations

import weakref

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from scaling.errors import UserInputError
from scaling.models import LanguageModel, ModelConfig
from scaling.models.ladder import shape_for_params
from scaling.train.config import TrialConfig
from scaling.train.distributed import WorkerGroup
from scaling.train.loop import _step_loss, _Trainer
from scaling.train.memory import (
    CROSS_ENTROPY_BYTES_PER_LOGIT, MEMORY_HEADROOM, _cached_profile, _measure, _SimulatedCuda,
    activation_bytes_per_sequence, activation_profile, estimate_memory, fitting_micro_batch, measurement_lengths,
    profile_cache_info, saved_bytes)
from scaling.train.throughput import GPU_PEAKS


@pytest.fixture(autouse=True)
def one_thread():
    """Real CPU passes here are many tiny ops: one thread is ~10x faster than two on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(mixer: str = "swla", caching: str = "none", **extra) -> ModelConfig:
    fields = dict(vocab_size=256, d_model=32, n_heads=2, n_layers=2, mixer=mixer, caching=caching, seq_len=256,
                  chunk_len=16)
    if caching != "none":
        fields["segment_len"] = 16
    fields.update(extra)
    return ModelConfig(**fields)


def meta_model(cfg: ModelConfig, dtype: torch.dtype = torch.float32) -> LanguageModel:
    with torch.device("meta"):
        return LanguageModel(cfg).to(dtype)


# ----------------------------------------------------------------------------- CUDA autocast on meta
def test_the_simulated_policy_gives_the_dtypes_cuda_autocast_gives():
    """The ops the issue names return fp32 from bf16 inputs (as on CUDA, unlike CPU autocast), matmuls
    return bf16 from fp32, unlisted ops keep their inputs' dtype, and a weight is cast once per pass."""
    x32 = torch.empty(2, 8, 16, device="meta")
    x16 = x32.to(torch.bfloat16)
    weight = torch.nn.Parameter(torch.empty(16, 16, device="meta"))
    with _SimulatedCuda(torch.bfloat16) as simulated:
        fp32_from_bf16 = {
            "normalize": F.normalize(x16, dim=-1), "cumsum": x16.cumsum(-1), "exp": torch.exp(x16),
            "softmax": x16.softmax(-1), "F.softmax": F.softmax(x16, dim=-1), "log_softmax": x16.log_softmax(-1),
            "sum": x16.sum(-1), "pow": x16.pow(2), "rsqrt": torch.rsqrt(x16), "norm": x16.norm(dim=-1)}
        bf16_from_fp32 = {"linear": F.linear(x32, weight), "matmul": torch.matmul(x32, x32.transpose(-1, -2)),
                          "@": x32 @ x32.transpose(-1, -2), "einsum": torch.einsum("bld,bmd->blm", x32, x32)}
        unlisted = {"mul": x16 * x16, "mean": x16.mean(-1), "sigmoid": torch.sigmoid(x16), "gelu": F.gelu(x16)}
        promoted = (x16 + x32).dtype
        F.linear(x32, weight)
    assert {k: v.dtype for k, v in fp32_from_bf16.items()} == {k: torch.float32 for k in fp32_from_bf16}
    assert {k: v.dtype for k, v in bf16_from_fp32.items()} == {k: torch.bfloat16 for k in bf16_from_fp32}
    assert {k: v.dtype for k, v in unlisted.items()} == {k: torch.bfloat16 for k in unlisted}
    assert promoted == torch.float32
    assert list(simulated.weight_casts) == [id(weight)]  # two linears, one cached cast


def test_a_recurrent_model_saves_more_under_autocast_than_a_bf16_model_and_q_k_in_fp32():
    """The old estimate ran a bf16 model; under CUDA autocast q and k leave F.normalize in fp32 and are
    saved that way, as are the states and gates, so the simulated pass saves more."""
    cfg = tiny("swla", "grm", n_layers=1, seq_len=64)
    old = saved_bytes(meta_model(cfg, torch.bfloat16), cfg.seq_len, None)
    new = saved_bytes(meta_model(cfg), cfg.seq_len, torch.bfloat16)
    fp32 = saved_bytes(meta_model(cfg), cfg.seq_len, None)
    q_and_k_fp32 = 2 * 4 * cfg.seq_len * cfg.d_model
    assert new.by_dtype[torch.float32] - old.by_dtype.get(torch.float32, 0) >= q_and_k_fp32
    mixer = meta_model(cfg).blocks[0].mixer
    with _SimulatedCuda(torch.bfloat16):
        inputs, keys, _ = mixer.features(torch.empty(1, cfg.seq_len, cfg.d_model, device="meta"))
    assert inputs.q.dtype == keys.dtype == torch.float32
    assert inputs.v.dtype == torch.bfloat16  # v is not normalised: the qkv matmul's bf16
    assert old.block_bytes < new.block_bytes < fp32.block_bytes
    assert new.by_dtype[torch.bfloat16] > 0  # the matmuls' inputs are saved in bf16


def _real_saved_bytes(model: LanguageModel, seq_len: int, dtype: torch.dtype | None) -> int:
    """Distinct storages a real CPU forward saves under the same simulated policy (no meta, no shortcuts)."""
    simulated = _SimulatedCuda(dtype)
    seen = {p.untyped_storage()._cdata for p in model.parameters()}
    kept, total = [], [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage()._cdata
        if key not in seen:
            seen.add(key)
            kept.append(t)
            if key not in simulated.weight_cast_storages:
                total[0] += t.untyped_storage().nbytes()
        return t

    with simulated, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.zeros(1, seq_len, dtype=torch.long))
    return total[0]


SHARED_LAYOUT_BYTES_SLACK = 4096


@pytest.mark.parametrize("mixer, caching, extra, precision", [
    ("swla", "none", {}, "bf16"), ("titans", "none", {}, "bf16"), ("swla", "grm", {}, "bf16"),
    ("titans", "grm", {}, "bf16"), ("dla", "soup", {}, "bf16"), ("swla", "residual", {}, "fp32"),
    ("titans", "grm", {"segment_mode": "independent"}, "fp32"), ("dla", "ssc", {}, "bf16"),
    ("swla", "grm", {"segmentation": "log"}, "bf16"),
])
def test_the_estimate_equals_what_a_real_cpu_model_of_full_depth_and_length_saves(mixer, caching, extra, precision):
    """One meta pass of one block at short lengths, extrapolated in depth and length, gives exactly the
    bytes a real 3-block CPU model saves at the full length under the same autocast policy."""
    cfg = tiny(mixer, caching, n_layers=3, **extra)
    dtype = torch.bfloat16 if precision == "bf16" else None
    shortcut = caching in ("none", "grm", "soup", "residual") and cfg.segmentation == "constant"
    assert (measurement_lengths(cfg) != (cfg.seq_len,)) == shortcut  # the short passes are really used
    estimated = activation_bytes_per_sequence(cfg, bf16=dtype is not None)
    torch.manual_seed(0)
    real = _real_saved_bytes(LanguageModel(cfg), cfg.seq_len, dtype)
    # Exact but for the segment layout's index tensors (cached once per device, so every layer of
    # the real model saves the same storage, while the estimate counts them per block): bytes, not MB.
    assert 0 <= estimated - real <= SHARED_LAYOUT_BYTES_SLACK


def test_attention_measured_short_equals_its_full_length_pass():
    """The Transformer (flash-attention saves, meta only: the CPU has no flash path) is linear in length too."""
    cfg = tiny("attention", seq_len=512)
    assert measurement_lengths(cfg) == (32, 48)
    assert activation_profile(cfg, True) == _measure(cfg, True)


# ----------------------------------------------------------------------------- cross-entropy workspace
class _LiveBytes(TorchDispatchMode):
    """Live bytes of every storage an op creates, freed when the storage dies; keeps the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.seen: set[int] = set()

    def track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = id(storage)
        if key in self.seen:
            return
        self.seen.add(key)
        size = storage.nbytes()
        self.live += size
        self.peak = max(self.peak, self.live)

        def free(key: int = key, size: int = size) -> None:
            self.live -= size
            self.seen.discard(key)

        weakref.finalize(storage, free)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN201
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out


class _HeadOnly(torch.nn.Module):
    """An LM head and nothing else, so the step's peak is the loss's: logits = h W^T."""

    def __init__(self, seq_len: int, width: int, vocab: int) -> None:
        super().__init__()
        self.h = torch.nn.Parameter(torch.randn(1, seq_len, width))
        self.w = torch.nn.Parameter(torch.randn(vocab, width))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.linear(self.h.expand(tokens.shape[0], -1, -1), self.w)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_the_cross_entropy_workspace_is_what_the_trainers_loss_allocates(precision):
    """The trainer's own loss and backward (`_step_loss`, autocast on this CPU) peak at 14 bytes per
    logit in bf16 and 16 in fp32, not the 8 once counted."""
    seq_len, vocab, batch = 64, 8192, 2
    cfg = ModelConfig(vocab_size=vocab, d_model=32, n_heads=2, n_layers=1, seq_len=seq_len)
    config = TrialConfig(model=cfg, tokens=batch * seq_len, batch_tokens=batch * seq_len, precision=precision,
                         compile=False, device="cpu")
    device = torch.device("cpu")
    trainer = _Trainer(_HeadOnly(seq_len, 4, vocab), config, WorkerGroup(), device)
    inputs = torch.zeros(batch, seq_len, dtype=torch.long)
    targets = torch.randint(0, vocab, (batch, seq_len))
    live = _LiveBytes()
    with live:
        _step_loss(trainer, config, inputs, targets, device)
    per_logit = live.peak / (batch * seq_len * vocab)
    assert per_logit == pytest.approx(CROSS_ENTROPY_BYTES_PER_LOGIT[precision], abs=0.25)
    assert estimate_memory(cfg, batch, precision).logits_bytes == CROSS_ENTROPY_BYTES_PER_LOGIT[precision] * (
        batch * seq_len * vocab)


# ----------------------------------------------------------------------------- headroom
def test_auto_micro_batch_leaves_15_percent_of_an_h200_free_at_125m_swla_2k():
    """The issue's example: 125M SWLA at 2K on an H200 got micro-batch 32 at an estimated 107.6 of the
    111.6 GiB allowed. Counted fully, 32 sequences do not fit in 85%; the pick is the largest that does."""
    base = ModelConfig(vocab_size=50304, mixer="swla", seq_len=2048, d_model=64, n_heads=1)
    cfg = shape_for_params(125e6, base, head_dim=64).config
    memory = GPU_PEAKS["H200"]["memory_bytes"]
    micro = fitting_micro_batch(cfg, 256, "bf16", memory)
    assert micro is not None and micro < 32
    assert estimate_memory(cfg, micro, "bf16").total_bytes <= MEMORY_HEADROOM * memory
    assert estimate_memory(cfg, 2 * micro, "bf16").total_bytes > MEMORY_HEADROOM * memory  # the largest that fits
    assert MEMORY_HEADROOM <= 0.85


def test_the_largest_fitting_micro_batch_and_activation_checkpointing_shrink_memory():
    cfg = tiny("swla", "grm", seq_len=256, n_layers=4)
    full = estimate_memory(cfg, 8, "fp32")
    checkpointed = estimate_memory(cfg, 8, "fp32", activation_checkpointing=True)
    assert checkpointed.activation_bytes < full.activation_bytes / 2
    budget = estimate_memory(cfg, 4, "fp32").total_bytes / MEMORY_HEADROOM  # exactly room for 4 sequences
    assert fitting_micro_batch(cfg, 8, "fp32", budget) == 4
    assert fitting_micro_batch(cfg, 8, "fp32", budget / 100) is None


def test_an_unknown_precision_names_the_field():
    with pytest.raises(UserInputError) as err:
        estimate_memory(tiny(), 1, "fp16")
    assert err.value.field == "precision"


# ----------------------------------------------------------------------------- the cache
def test_the_estimate_is_measured_once_per_distinct_shape():
    """Depth, micro-batch, workers, the RoPE base and a non-caching model's segment fields do not change
    the saved bytes per block: one measurement serves them all. C and the strategy do: new ones."""
    _cached_profile.cache_clear()
    cfg = tiny("swla", "grm", seq_len=128)
    first = activation_profile(cfg, True)
    for micro in (1, 2, 4, 8):
        estimate_memory(cfg, micro, "bf16")
        estimate_memory(cfg.replace(n_layers=7, rope_theta=500_000.0), micro, "bf16", workers=2, parallelism="fsdp")
    base = tiny("swla", seq_len=128)
    activation_profile(base, True)
    activation_profile(base.replace(segment_len=32, segment_mode="independent", top_k=5), True)
    assert profile_cache_info().misses == 2 and profile_cache_info().hits == 9
    assert activation_profile(cfg.replace(n_layers=9), True) is first
    activation_profile(cfg.replace(segment_len=32), True)
    activation_profile(cfg.replace(caching="soup"), True)
    activation_profile(cfg, False)
    assert profile_cache_info().misses == 5
