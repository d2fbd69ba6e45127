"""`ModelConfig`: the one description of a model that every stage (plan, train, FLOPs) shares.

Validation lives here so that a bad combination (SSC with top_k 0, a segment length that does
not tile the sequence, caching wrapped around attention) fails when the config is built, with
a message naming the field and the fix, rather than as a shape error deep inside a forward pass.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from scaling.errors import UserInputError

MIXERS: tuple[str, ...] = ("attention", "linear", "swla", "dla", "titans")
RECURRENT_MIXERS: tuple[str, ...] = ("linear", "swla", "dla", "titans")
# Memory kinds each mixer supports; the first is the default.
MEMORY_KINDS: dict[str, tuple[str, ...]] = {
    "attention": ("kv",),
    "linear": ("matrix",),
    "swla": ("matrix",),
    "dla": ("mlp", "matrix"),  # deep linear attention is a deep memory (paper eq. 30); matrix = a variant
    "titans": ("mlp",),
}
CACHING_STRATEGIES: tuple[str, ...] = ("none", "residual", "grm", "soup", "ssc")
#: The strategies that mix their reads with softmax gates (and so carry gate_proj and the online-gate bias).
GATED_STRATEGIES: tuple[str, ...] = ("grm", "soup", "ssc")
SEGMENTATIONS: tuple[str, ...] = ("constant", "log")
SEGMENT_MODES: tuple[str, ...] = ("checkpoint", "independent")


@dataclass(frozen=True)
class ModelConfig:
    """Shape and architecture of one language model.

    Segments (`segment_bounds`): with `segmentation="constant"` the sequence is cut into pieces
    of `segment_len` tokens (N = seq_len / segment_len). With `segmentation="log"` the sequence
    is partitioned as the paper's logarithmic scheme (PAPER.md): the Fenwick decomposition of
    the last token's prefix in units of C = `segment_len`, largest (oldest) segment first and
    the newest, finest segment of C tokens last - L = 4096, C = 256 -> 2048, 1024, 512, 256, 256
    - so a token sees O(log L/C) cached memories and the distant past is coarse.
    `chunk_len` is the block length of the chunk-parallel recurrent scan; for MLP memories it
    is also the mini-batch over which the online gradient is taken at the chunk's starting
    weights (the Titans parallel form), so caching never changes it: an MLP memory's segments
    must be whole chunks. A matrix memory's scan is exact for any chunk, so its scan block
    shrinks to gcd(chunk_len, C) when needed.
    """

    vocab_size: int = 256
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 2
    mixer: str = "attention"
    memory: str = ""  # "" -> the mixer's default memory kind
    caching: str = "none"
    segment_len: int | None = None  # C; None -> seq_len (one segment) unless caching is on
    segmentation: str = "constant"
    segment_mode: str = "checkpoint"
    top_k: int = 2
    # Logit added to the online memory's gate (GRM, Soup, SSC); None -> `online_gate_rule`, 0 -> the
    # paper's plain softmax (no bias parameter at all). PAPER.md, "Online-memory gate bias".
    online_gate_init: float | None = None
    seq_len: int = 512
    chunk_len: int = 64
    mlp_hidden: int = 0  # SwiGLU hidden width; 0 -> ~8/3 d_model rounded up to a multiple of 32
    memory_expansion: int = 4  # hidden width of an MLP memory, in multiples of the head dim
    rope_theta: float = 10_000.0

    def __post_init__(self) -> None:
        if not self.memory:
            object.__setattr__(self, "memory", MEMORY_KINDS.get(self.mixer, ("",))[0])
        if self.mlp_hidden == 0:
            hidden = int(round(8 * self.d_model / 3))
            object.__setattr__(self, "mlp_hidden", max(32, 32 * ((hidden + 31) // 32)))
        self.validate()

    # ----------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise `UserInputError` naming the first bad field and how to fix it."""
        _positive(self, "vocab_size", "d_model", "n_layers", "n_heads", "seq_len", "chunk_len",
                  "mlp_hidden", "memory_expansion")
        if self.mixer not in MIXERS:
            raise UserInputError("mixer", f"unknown mixer {self.mixer!r}", f"use one of {', '.join(MIXERS)}")
        if self.memory not in MEMORY_KINDS[self.mixer]:
            raise UserInputError(
                "memory", f"mixer {self.mixer!r} has no {self.memory!r} memory",
                f"use one of {', '.join(MEMORY_KINDS[self.mixer])}")
        if self.d_model % self.n_heads:
            raise UserInputError("n_heads", f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}",
                                 "choose n_heads dividing d_model")
        if self.caching not in CACHING_STRATEGIES:
            raise UserInputError("caching", f"unknown caching strategy {self.caching!r}",
                                 f"use one of {', '.join(CACHING_STRATEGIES)}")
        if self.mixer == "attention" and self.caching != "none":
            raise UserInputError("caching", "memory caching wraps a recurrent mixer, not attention",
                                 "use caching: none with mixer: attention, or pick one of "
                                 + ", ".join(RECURRENT_MIXERS))
        if self.segmentation not in SEGMENTATIONS:
            raise UserInputError("segmentation", f"unknown segmentation {self.segmentation!r}",
                                 "use constant or log")
        if self.segment_mode not in SEGMENT_MODES:
            raise UserInputError("segment_mode", f"unknown segment mode {self.segment_mode!r}",
                                 "use checkpoint or independent")
        if self.top_k < 1:
            raise UserInputError("top_k", f"top_k must be >= 1, got {self.top_k}",
                                 "set top_k to the number of cached segments SSC may select (e.g. 2)")
        if self.online_gate_init is not None and not (isinstance(self.online_gate_init, (int, float))
                                                      and math.isfinite(self.online_gate_init)):
            raise UserInputError("online_gate_init", f"must be a finite number, got {self.online_gate_init!r}",
                                 "leave it out for the documented rule (log of 3x the caches a token reads), "
                                 "or give 0 for the paper's plain softmax")
        if self.segment_len is not None and self.segment_len < 1:
            raise UserInputError("segment_len", f"segment_len must be >= 1, got {self.segment_len}",
                                 "give a positive segment length C")
        c = self.segment_len_tokens
        if self.segmentation == "constant" and self.seq_len % c:
            raise UserInputError(
                "segment_len", f"segment length C={c} does not divide seq_len={self.seq_len}",
                "pick C dividing seq_len (e.g. a power of two) or use segmentation: log")
        if self.segmentation == "log" and c > self.seq_len:
            raise UserInputError("segment_len", f"finest log segment C={c} is longer than seq_len={self.seq_len}",
                                 "use a smaller segment_len")
        if self.memory == "mlp" and self.caching != "none" and c % self.chunk_len:
            raise UserInputError(
                "chunk_len", f"segment length C={c} is not a multiple of the scan chunk {self.chunk_len}: an MLP "
                "memory takes its online gradient over whole chunks, so a segment boundary inside a chunk "
                "would change the base memory's inner loop",
                f"use a segment_len that is a multiple of chunk_len (e.g. {self.chunk_len * max(1, c // self.chunk_len)}) "
                "or a chunk_len dividing segment_len for the base and cached runs alike")

    # ----------------------------------------------------------------- derived sizes
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def is_recurrent(self) -> bool:
        return self.mixer in RECURRENT_MIXERS

    @property
    def segment_len_tokens(self) -> int:
        """C in tokens: the segment length, or the whole sequence when caching is off."""
        if self.caching == "none" or self.segment_len is None:
            return self.seq_len
        return self.segment_len

    @property
    def scan_chunk_len(self) -> int:
        """Block length of the chunk-parallel scan.

        MLP memories: always `chunk_len` (it is their gradient mini-batch; caching must not
        change it). Matrix memories under caching: gcd(chunk_len, C), so every segment boundary
        falls on a block boundary; the chunked matrix scan is exact for any block length.
        """
        if self.memory == "mlp" or self.caching == "none":
            return self.chunk_len
        return math.gcd(self.chunk_len, self.segment_len_tokens)

    @property
    def gated_caches_max(self) -> int:
        """The most cached memories one token's gate covers at `seq_len`: N - 1 segments, or for SSC
        at most top_k of them (0 without a gated strategy)."""
        if self.caching not in GATED_STRATEGIES:
            return 0
        cached = self.n_segments() - 1
        return min(self.top_k, cached) if self.caching == "ssc" else cached

    @property
    def online_gate_bias(self) -> float:
        """The online gate's initial logit: `online_gate_init`, or `online_gate_rule` when unset."""
        if self.caching not in GATED_STRATEGIES:
            return 0.0
        if self.online_gate_init is not None:
            return float(self.online_gate_init)
        return online_gate_rule(self.gated_caches_max)

    def segment_bounds(self, seq_len: int | None = None) -> list[int]:
        """Token boundaries [0, b1, ..., L] of the segments of a sequence of `seq_len` tokens."""
        return segment_bounds(self.seq_len if seq_len is None else seq_len, self)

    def n_segments(self, seq_len: int | None = None) -> int:
        return len(self.segment_bounds(seq_len)) - 1

    def padded_len(self, seq_len: int) -> int:
        """Length the chunk-parallel model runs at for a `seq_len`-token input.

        Inputs are right-padded to whole scan chunks (and whole C-token tiles under caching):
        padding after the last real token never reaches an earlier output (every memory is
        causal), so any input length works and outputs are sliced back to `seq_len`.
        """
        step = self.scan_chunk_len
        if self.caching != "none":
            step = math.lcm(step, self.segment_len_tokens)
        return -(-seq_len // step) * step

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: The online memory's share of the read at initialisation that `online_gate_rule` guarantees to
#: every token: with all cached logits ~0 (gate_proj starts near 0), a token reading n caches gives
#: its online memory e^b / (e^b + n) >= 3/4 when e^b = 3 n_max. Measured (issue 21, quickstart 48K,
#: C = 32, n_max = 7): a bias of 3 (= log 21) closed the 0.22-nat gap to the base memory.
ONLINE_SHARE_AT_INIT = 0.75


def online_gate_rule(n_caches_max: int) -> float:
    """The documented default online-gate bias: log(3 n_max), so every token starts with at least
    `ONLINE_SHARE_AT_INIT` of its read from its own live memory (0 when no token reads a cache)."""
    if n_caches_max <= 0:
        return 0.0
    return math.log(ONLINE_SHARE_AT_INIT / (1.0 - ONLINE_SHARE_AT_INIT) * n_caches_max)


def log_segment_lengths(seq_len: int, finest: int) -> list[int]:
    """The paper's logarithmic partition of `seq_len` tokens, oldest segment first.

    The last token's own C-token tile (or the partial tile it sits in) is the newest segment;
    the n whole tiles before it are split by the binary expansion of n, largest first - the
    Fenwick decomposition of the last query's prefix that Log-Linear Attention uses, in units
    of C. 37 tokens at C=1 -> [32, 4, 1]; 4096 at C=256 -> [2048, 1024, 512, 256, 256];
    100 at C=8 -> [64, 32, 4].
    """
    whole, rest = divmod(seq_len, finest)
    before, newest = (whole, rest) if rest else (whole - 1, finest)
    lengths = [finest << bit for bit in range(before.bit_length() - 1, -1, -1) if before >> bit & 1]
    return lengths + [newest]


def segment_bounds(seq_len: int, cfg: ModelConfig) -> list[int]:
    """Segment boundaries [0, ..., seq_len] of a `seq_len`-token input under `cfg` (public: the
    kernels and the FLOP model call this; every boundary but the last is a multiple of C)."""
    if seq_len < 1:
        raise UserInputError("seq_len", f"an input must have at least one token, got {seq_len}",
                             "pass a non-empty sequence")
    if cfg.caching == "none":
        return [0, seq_len]
    c = cfg.segment_len_tokens
    if cfg.segmentation == "constant":
        return list(range(0, seq_len, c)) + [seq_len]
    bounds = [0]
    for length in log_segment_lengths(seq_len, c):
        bounds.append(bounds[-1] + length)
    return bounds


def _positive(cfg: ModelConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise UserInputError(name, f"must be a positive integer, got {value!r}", f"set {name} >= 1")
