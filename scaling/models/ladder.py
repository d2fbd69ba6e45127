"""Size ladder: from a target non-embedding parameter count to a model shape, and exact counts.

Rule (documented so ladders are reproducible): the head dimension is fixed for a ladder
(default 64) and d_model is a multiple of it; each (d_model, n_layers >= 2) scores

    |ln(params_nonembed / target)| + 0.05 * |ln((d_model / n_layers) / aspect)|

with aspect = 64 and the 0.05 weight by default (both settable per ladder; tiny ladders, where
one step of d_model changes parameters by 2x, want a larger weight to keep sensible shapes) (GPT-3's
125M and 760M shapes have d_model / n_layers = 64). The shape picked is the best-scoring one among
the shapes within `EQUAL_SIZE_BAND` (10%) of the target; only when the grid has none there does the
best-scoring shape overall win.

Why the band: the series of one rung are compared at equal size (issue 21, "A fair comparison").
The score alone traded size for aspect per architecture, so with coarse grids (head dim 8) one rung
built SWLA at +41% and SWLA + GRM at -5% of its target; the band makes every series of a rung land
within 10% of the target wherever the grid allows, and a rung already inside the band keeps the shape
the score alone picks (the best score overall is then inside the band), so fine ladders do not move.
Parameter counts are analytic and exact (tests hold them equal to sum(p.numel())).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from scaling.errors import UserInputError
from scaling.models.config import GATED_STRATEGIES, ModelConfig
from scaling.models.gates import GATES

DEFAULT_HEAD_DIM = 64
#: A target is honoured when the model the ladder builds is within this factor of it. 1.5 is the
#: ladder's coarsest step: at the narrowest width, going from 2 to 3 layers adds 50% (finer above).
SIZE_TOLERANCE = 1.5
MAX_WIDTH = 65536  # the widest d_model the shape search tries
DEFAULT_ASPECT = 64.0
ASPECT_WEIGHT = 0.05
#: Every series of a rung is built within this fraction of the rung's target where the grid allows.
EQUAL_SIZE_BAND = 0.10
_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


def parse_size(text: str, field: str = "sizes") -> float:
    """'125M' -> 1.25e8; accepts K, M, B (or G), T suffixes and plain numbers."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMBGT]?)\s*", text.upper())
    if not match:
        raise UserInputError(field, f"cannot read size {text!r}", "write sizes like 100K, 10M, 1.3B or 7e9")
    value = float(match.group(1)) * _SUFFIX[match.group(2)]
    if value <= 0:
        raise UserInputError(field, f"size {text!r} is not positive", "give a positive parameter count")
    return value


def format_count(value: float) -> str:
    if abs(value) >= 1e15 or not math.isfinite(value):  # past T a suffix only hides the exponent (1e+18T)
        return f"{value:.3g}"
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def mixer_params(cfg: ModelConfig) -> int:
    """Parameters of one layer's token mixer."""
    dm, h, d = cfg.d_model, cfg.n_heads, cfg.head_dim
    if cfg.mixer == "attention":
        return 4 * dm * dm
    n_gates = len(GATES[(cfg.mixer, cfg.memory)])
    count = 3 * dm * dm + dm * dm + d  # qkv, output projection, per-head output norm
    count += n_gates * h * (dm + 1)  # gate projection with bias
    if cfg.caching in GATED_STRATEGIES:
        count += dm * dm  # u_t = x_t W_u
        if cfg.online_gate_bias:
            count += h  # the online-memory gate bias, one logit per head
    if cfg.memory == "mlp":
        count += 2 * h * d * (cfg.memory_expansion * d)  # learned initial memory weights
        count += h * d  # per-head gain of the deep memory's LayerNorm branch
    return count


def count_params(cfg: ModelConfig) -> dict[str, int]:
    """Exact parameter counts: embedding (tied with the LM head) and non-embedding."""
    per_layer = mixer_params(cfg) + 3 * cfg.d_model * cfg.mlp_hidden + 2 * cfg.d_model
    nonembed = cfg.n_layers * per_layer + cfg.d_model  # + final norm
    embedding = cfg.vocab_size * cfg.d_model
    return {"params_nonembed": nonembed, "params_embedding": embedding, "params_total": nonembed + embedding}


@dataclass(frozen=True)
class LadderRung:
    target_params_nonembed: float
    config: ModelConfig
    params_nonembed: int
    params_total: int


def _past_best_aspect(width: int, most_layers: int, aspect: float, aspect_weight: float, best_score: float) -> bool:
    """True when every candidate at this width (and, since layers only shrink as width grows, at
    every wider one) is already too wide for its depth to score below `best_score`."""
    ratio = width / most_layers
    return aspect_weight > 0 and ratio > aspect and aspect_weight * math.log(ratio / aspect) > best_score


def _score(params: int, width: int, layers: int, target: float, aspect: float, aspect_weight: float) -> float:
    return abs(math.log(params / target)) + aspect_weight * abs(math.log((width / layers) / aspect))


def _band_layers(width: int, per_layer: int, target: float, layers_guess: int, aspect: float) -> set[int]:
    """The layer counts at `width` that can score best among the shapes within the band: the score is
    V-shaped in ln(layers) around the parameter match and around the aspect match, so over the band's
    layers its minimum sits at one of those kinks or at an end of the band."""
    low = max(2, math.ceil((target * (1 - EQUAL_SIZE_BAND) - width) / per_layer))
    high = math.floor((target * (1 + EQUAL_SIZE_BAND) - width) / per_layer)
    if high < low:
        return set()
    kinks = {layers_guess - 1, layers_guess, layers_guess + 1, math.floor(width / aspect), math.ceil(width / aspect)}
    return {low, high} | {n for n in kinks if low <= n <= high}


def shape_for_params(target_params_nonembed: float, base: ModelConfig, head_dim: int = DEFAULT_HEAD_DIM,
                     aspect: float = DEFAULT_ASPECT, aspect_weight: float = ASPECT_WEIGHT) -> LadderRung:
    """The ladder shape for `target_params_nonembed`, keeping every non-shape field of `base`: the best
    score within `EQUAL_SIZE_BAND` of the target, else (a grid too coarse there) the best score overall."""
    if target_params_nonembed <= 0:
        raise UserInputError("sizes", f"target size {target_params_nonembed} is not positive", "use a positive size")
    target = target_params_nonembed
    best_any: tuple[float, int, int] | None = None  # (score, width, layers): today's rule, the fallback
    best_band: tuple[float, int, int] | None = None  # the same score over the shapes within the band
    width = head_dim
    while True:
        probe = base.replace(d_model=width, n_heads=width // head_dim, n_layers=1, mlp_hidden=0)
        one = count_params(probe)["params_nonembed"]
        per_layer = max(one - width, 1)  # params_nonembed = layers * per_layer + width (the final norm)
        if one > 4 * target and best_any is not None:
            break  # two layers here (and at every wider width) are over 8x the target: none in the band
        layers_guess = max(2, round((target - width) / per_layer))
        band = _band_layers(width, per_layer, target, layers_guess, aspect)
        if best_band is not None and _past_best_aspect(width, max(band | {layers_guess + 1}), aspect, aspect_weight,
                                                       best_band[0]):
            break  # wider shapes only stretch the aspect further: none can beat the best (saves ~0.4 s at 70B)
        for layers in {max(2, layers_guess - 1), layers_guess, layers_guess + 1}:
            score = _score(layers * per_layer + width, width, layers, target, aspect, aspect_weight)
            if best_any is None or score < best_any[0]:
                best_any = (score, width, layers)
        for layers in sorted(band):
            score = _score(layers * per_layer + width, width, layers, target, aspect, aspect_weight)
            if best_band is None or score < best_band[0]:
                best_band = (score, width, layers)
        width += head_dim
        if width > MAX_WIDTH:
            break
    assert best_any is not None
    _, width, layers = best_band if best_band is not None else best_any
    cfg = base.replace(d_model=width, n_heads=width // head_dim, n_layers=layers, mlp_hidden=0)
    counts = count_params(cfg)
    return LadderRung(target_params_nonembed, cfg, counts["params_nonembed"], counts["params_total"])


def _shape_counts(base: ModelConfig, width: int, layers: int, head_dim: int) -> int:
    cfg = base.replace(d_model=width, n_heads=width // head_dim, n_layers=layers, mlp_hidden=0)
    return count_params(cfg)["params_nonembed"]


def honoured_shape(target_params_nonembed: float, base: ModelConfig, head_dim: int = DEFAULT_HEAD_DIM,
                   aspect: float = DEFAULT_ASPECT, aspect_weight: float = ASPECT_WEIGHT,
                   field: str = "sizes") -> LadderRung:
    """`shape_for_params`, refusing (UserInputError naming `field`) a target it cannot honour.

    Why: below the narrowest 2-layer model every target silently became that model (8K, 16K and
    50K all trained the same 115K model at head dim 64), and past the widest width the search only
    stacks layers (1e30 gave ~1e19 layers). A target is honoured when the built model is within a
    factor `SIZE_TOLERANCE` of it; the message names the nearest size the ladder can build.
    """
    if not math.isfinite(target_params_nonembed) or target_params_nonembed <= 0:
        raise UserInputError(field, f"size {target_params_nonembed!r} is not a positive, finite parameter count",
                             "write sizes like 100K, 10M, 1.3B or 7e9")
    widest_layers = max(2, round(MAX_WIDTH / aspect))
    largest = _shape_counts(base, MAX_WIDTH, widest_layers, head_dim)
    if target_params_nonembed > largest:
        raise UserInputError(field, f"{format_count(target_params_nonembed)} non-embedding parameters is beyond the "
                             f"largest shape the ladder builds ({widest_layers} layers x {MAX_WIDTH} = "
                             f"{format_count(largest)})", f"use a size of at most {format_count(largest)}")
    rung = shape_for_params(target_params_nonembed, base, head_dim, aspect, aspect_weight)
    ratio = rung.params_nonembed / target_params_nonembed
    if ratio > SIZE_TOLERANCE or ratio < 1 / SIZE_TOLERANCE:
        cfg = rung.config
        smallest = _shape_counts(base, head_dim, 2, head_dim)
        hint = (f"the smallest model at head dim {head_dim} is {format_count(smallest)} (2 layers x {head_dim}): use "
                f"a size of at least {format_count(smallest / SIZE_TOLERANCE)}, or a smaller head dim"
                if target_params_nonembed < smallest else f"use {format_count(rung.params_nonembed)}")
        raise UserInputError(field, f"the ladder cannot build {format_count(target_params_nonembed)} within a factor "
                             f"{SIZE_TOLERANCE:g}: the nearest model it builds is {format_count(rung.params_nonembed)} "
                             f"({cfg.n_layers} layers x {cfg.d_model})", hint)
    return rung
