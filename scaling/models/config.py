"""`ModelConfig`: the one description of a model that every stage (plan, train, FLOPs) shares.

Validation lives here so that a bad combination (SSC with top_k 0, a segment length that does
not tile the sequence, caching wrapped around attention) fails when the config is built, with
a message naming the field and the fix, rather than as a shape error deep inside a forward pass.
"""

from __future__ import annotations

import dataclasses
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
    "dla": ("matrix", "mlp"),
    "titans": ("mlp",),
}
CACHING_STRATEGIES: tuple[str, ...] = ("none", "residual", "grm", "soup", "ssc")
SEGMENTATIONS: tuple[str, ...] = ("constant", "log")
SEGMENT_MODES: tuple[str, ...] = ("checkpoint", "independent")


@dataclass(frozen=True)
class ModelConfig:
    """Shape and architecture of one language model.

    Segments: with `segmentation="constant"` the sequence is cut into pieces of `segment_len`
    tokens (N = seq_len / segment_len). With `segmentation="log"` segment lengths grow as
    powers of two starting from `segment_len`: C, C, 2C, 4C, ... (boundaries 0, C, 2C, 4C, ...),
    so a token sees O(log L) cached memories. `chunk_len` is the block length of the
    chunk-parallel recurrent scan; for MLP memories it is also the mini-batch over which the
    online gradient is taken at the chunk's starting weights (the Titans parallel form).
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
        if self.segment_len is not None and self.segment_len < 1:
            raise UserInputError("segment_len", f"segment_len must be >= 1, got {self.segment_len}",
                                 "give a positive segment length C")
        c = self.segment_len_tokens
        if self.segmentation == "constant" and self.seq_len % c:
            raise UserInputError(
                "segment_len", f"segment length C={c} does not divide seq_len={self.seq_len}",
                "pick C dividing seq_len (e.g. a power of two) or use segmentation: log")
        if self.segmentation == "log" and c > self.seq_len:
            raise UserInputError("segment_len", f"first log segment C={c} is longer than seq_len={self.seq_len}",
                                 "use a smaller segment_len")
        chunk = self.scan_chunk_len
        if c % chunk or self.seq_len % chunk:
            raise UserInputError(
                "chunk_len", f"scan chunk {chunk} must divide both segment length {c} and seq_len {self.seq_len}",
                "use powers of two for seq_len, segment_len and chunk_len")

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
        """Block length of the chunk-parallel scan: chunk_len, shrunk to C when C is shorter."""
        return min(self.chunk_len, self.segment_len_tokens)

    def segment_bounds(self, seq_len: int | None = None) -> list[int]:
        """Token boundaries [0, b1, ..., L] of the segments of a sequence of `seq_len` tokens."""
        length = self.seq_len if seq_len is None else seq_len
        c = self.segment_len_tokens
        if self.caching == "none":
            return [0, length]
        if self.segmentation == "constant":
            return list(range(0, length + 1, c)) if length % c == 0 else list(range(0, length, c)) + [length]
        bounds, end = [0], c
        while end < length:
            bounds.append(end)
            end *= 2
        bounds.append(length)
        return bounds

    def n_segments(self, seq_len: int | None = None) -> int:
        return len(self.segment_bounds(seq_len)) - 1

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _positive(cfg: ModelConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise UserInputError(name, f"must be a positive integer, got {value!r}", f"set {name} >= 1")
