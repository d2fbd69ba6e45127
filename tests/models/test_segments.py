"""The paper's logarithmic segmentation, read counts, and fp32 segment descriptors under bf16."""

import pytest
import torch
import torch.nn.functional as F

from kernels import gated_cached_read
from scaling.models import ModelConfig
from scaling.models.caching import segment_summaries, tile_layout
from scaling.models.config import log_segment_lengths, segment_bounds
from scaling.models.flops import cached_read_pairs, cached_reads_per_token, counting_mode


@pytest.mark.parametrize("length, finest, expected", [
    (37, 1, [32, 4, 1]),  # the paper's example: the binary expansion, oldest (largest) first
    (4096, 256, [2048, 1024, 512, 256, 256]),  # a power of two: the newest C-tile is its own segment
    (96, 8, [64, 16, 8, 8]),  # 12 tiles: 11 = 8 + 2 + 1 before the last tile
    (100, 8, [64, 32, 4]),  # not a multiple of C: the partial tile is the newest segment
    (36, 1, [32, 2, 1, 1]),  # Fenwick of the last query (prefix 35 = 32 + 2 + 1), not 36 = 32 + 4
    (8, 8, [8]),
    (5, 8, [5]),
])
def test_log_partition_hand_worked(length, finest, expected):
    assert log_segment_lengths(length, finest) == expected


def _fenwick_buckets(query_tile: int) -> list[int]:
    """Log-Linear Attention's buckets for a query in tile t: tile s < t is at level
    bit_length(t XOR s) (level 0 = the query's own tile); returns bucket sizes, oldest first."""
    levels = [(query_tile ^ s).bit_length() for s in range(query_tile)] + [0]
    sizes: list[int] = []
    for i, level in enumerate(levels):
        if i == 0 or level != levels[i - 1]:
            sizes.append(0)
        sizes[-1] += 1
    return sizes


@pytest.mark.parametrize("length", [1, 7, 64, 100, 255, 256, 257, 1000, 4096])
@pytest.mark.parametrize("finest", [1, 4, 16])
def test_log_partition_is_the_fenwick_decomposition_of_the_last_query(length, finest):
    lengths = log_segment_lengths(length, finest)
    assert sum(lengths) == length
    last_tile = (length - 1) // finest
    tiles = _fenwick_buckets(last_tile)
    assert [t * finest for t in tiles[:-1]] == lengths[:-1]
    assert lengths[-1] == length - last_tile * finest  # the query's own (possibly partial) tile
    assert all(a > b for a, b in zip(lengths[:-2], lengths[1:-1]))  # strictly coarser into the past


def test_log_reads_per_token_and_the_reversed_scheme_they_replace():
    cfg = ModelConfig(mixer="swla", caching="grm", segmentation="log", segment_len=256, seq_len=4096, chunk_len=64)
    assert cfg.segment_bounds() == [0, 2048, 3072, 3584, 3840, 4096]
    assert cached_reads_per_token(cfg) == pytest.approx(0.9375)  # (1024 + 2*512 + 3*256 + 4*256) / 4096
    reversed_bounds = [0, 256, 512, 1024, 2048, 4096]  # the former doubling-from-C scheme
    reversed_reads = sum(s * (b - a) for s, (a, b) in enumerate(zip(reversed_bounds[:-1], reversed_bounds[1:])))
    assert reversed_reads / 4096 == pytest.approx(3.0625)
    constant = cfg.replace(segmentation="constant")
    assert cached_reads_per_token(constant) == pytest.approx(7.5)  # (N - 1) / 2 with N = 16


@pytest.mark.parametrize("segmentation", ["constant", "log"])
@pytest.mark.parametrize("length", [64, 100, 37, 8])
def test_the_reads_the_code_performs_are_the_causal_reads_counted(segmentation, length):
    """The cached-read op the model calls reads segment i with exactly the tokens after it, and
    the reads of the real (unpadded) tokens are what the FLOP model charges."""
    cfg = ModelConfig(mixer="swla", caching="grm", segmentation=segmentation, segment_len=8, seq_len=64, chunk_len=4)
    bounds = segment_bounds(length, cfg)
    padded = cfg.padded_len(length)
    model_bounds = tuple(bounds[:-1] + [padded])
    n_seg, d = len(model_bounds) - 1, 4
    states = torch.randn(1, 1, n_seg, d, d)
    q = torch.zeros(1, 1, padded, d, requires_grad=True)
    with counting_mode() as counter:
        gated_cached_read(q, states, torch.ones(1, 1, padded, n_seg), model_bounds, backend="reference")
    reads = counter.get_total_flops() // (2 * d * d)
    seg_of = tile_layout(model_bounds).segment_of_token
    assert reads == sum(seg_of)  # token t reads its seg(t) earlier segments, nothing more
    assert sum(seg_of[:length]) == cached_read_pairs(cfg, length)
    assert all(seg_of[t] == next(s for s in range(len(bounds) - 1) if bounds[s] <= t < bounds[s + 1])
               for t in range(length))
    # causal: a token's read changes with the states of earlier segments only
    for i in range(n_seg):
        only_i = torch.zeros(1, 1, n_seg, d, d)
        only_i[:, :, i] = torch.eye(d)
        out = gated_cached_read(torch.ones(1, 1, padded, d), only_i, torch.ones(1, 1, padded, n_seg), model_bounds,
                                backend="reference")
        assert torch.equal(out[0, 0, :, 0] != 0, torch.tensor(seg_of) > i)


def _fp64_summaries(keys: torch.Tensor, bounds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    k = keys.double()
    cached = torch.stack([k[:, :, a:b].mean(2) for a, b in zip(bounds[:-1], bounds[1:])], dim=2)
    online = torch.cat([k[:, :, a:b].cumsum(2) / torch.arange(1, b - a + 1, dtype=torch.float64)[:, None]
                        for a, b in zip(bounds[:-1], bounds[1:])], dim=2)
    return cached, online


@pytest.mark.parametrize("segmentation", ["constant", "log"])
def test_descriptors_stay_accurate_in_bf16_at_8k(segmentation):
    """L = 8192, C = 64, correlated keys in bf16 under autocast (descriptor norm ~0.7, as in the
    review): the descriptors (means of unit keys) are within 1e-5 (absolute, per component) of
    an fp64 computation on the same bf16 keys. A whole-sequence bf16 running sum - what this
    replaced - is off by more than 0.1 (norm of the error) on the last segment here on CPU."""
    torch.manual_seed(0)
    length, c = 8192, 64
    keys = F.normalize(torch.randn(1, 2, length, 64) + 1.0, dim=-1).to(torch.bfloat16)
    bounds = segment_bounds(length, ModelConfig(mixer="swla", caching="grm", segmentation=segmentation,
                                                segment_len=c, seq_len=length))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cached, online = segment_summaries(keys, tuple(bounds))
    assert cached.dtype == online.dtype == torch.float32
    want_cached, want_online = _fp64_summaries(keys, bounds)
    assert (cached.double() - want_cached).abs().max() < 1e-5
    assert (online.double() - want_online).abs().max() < 1e-5
    running = torch.cat([keys.new_zeros(1, 2, 1, 64), keys.cumsum(2)], dim=2)  # the old whole-sequence sum
    start = torch.tensor(bounds[-2])
    old_last = (running[:, :, length] - running[:, :, start]).double() / (length - bounds[-2])
    assert 0.6 < want_cached[:, :, -1].norm(dim=-1).min() < 0.8
    assert (old_last - want_cached[:, :, -1]).norm(dim=-1).max() > 0.1


@pytest.mark.parametrize("mixer, memory, caching", [("swla", "matrix", "grm"), ("titans", "mlp", "ssc"),
                                                    ("dla", "mlp", "soup"), ("linear", "matrix", "residual")])
def test_mc_models_train_under_bf16_autocast(mixer, memory, caching):
    from scaling.models import LanguageModel

    from .conftest import small_config

    cfg = small_config(mixer, memory, caching, segmentation="log")
    model = LanguageModel(cfg)
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(tokens)
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())
    loss.backward()
    with torch.no_grad():
        exact = torch.nn.functional.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten())
    assert torch.isfinite(loss) and abs(loss.item() - exact.item()) < 0.05
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
