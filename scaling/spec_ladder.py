"""The ladder's blocks of a study spec: sizes and shapes (`ladder:`), the token budget (`budget:`) and
the extra seeds of chosen rungs (`seeds_at:`), with the strict base every spec block shares.

Why a module of its own: `scaling/spec.py` validates the whole study and had grown past 700 lines;
the size-related blocks are one coherent part. `scaling.spec` imports them back, so
`from scaling.spec import LadderSettings` (and every other name) keeps working. This module imports
nothing of `scaling.spec` (no import cycle).
"""

from __future__ import annotations

import math
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scaling.errors import UserInputError
from scaling.models.ladder import format_count, parse_size

SEED_LIMIT = 2**32  # seeds are numpy/torch generator seeds: 0 <= seed < 2**32


class StrictBlock(BaseModel):
    """Every spec block: unknown fields are errors (a misspelt key must not be ignored), values are frozen."""

    # allow_inf_nan=False: `.inf` or `.nan` in YAML is never a learning rate, a budget or a size
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def size_value(value: Any) -> float:
    """A size as the spec writes it (100K, 1.3B, 7e9 or a number) -> parameters; ValueError (for pydantic,
    which names the field) when it is not a positive, finite count."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{value!r} is not a size; write sizes like 100K, 10M, 1.3B or 7e9")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"size {value!r} must be a positive, finite parameter count")
        return float(value)
    try:
        size = parse_size(str(value))
    except UserInputError as exc:
        raise ValueError(exc.problem) from None
    if not math.isfinite(size):
        raise ValueError(f"size {value!r} must be a positive, finite parameter count")
    return size


class ShapeOverride(StrictBlock):
    """An explicit shape for one ladder size (e.g. the paper's 760M: 24 layers x 1536)."""

    size: float
    n_layers: int = Field(ge=1)
    d_model: int = Field(ge=8)

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> float:
        return size_value(value)


class LadderSettings(StrictBlock):
    sizes: list[float] = Field(min_length=1)
    head_dim: int = Field(default=64, ge=4)
    aspect: float = Field(default=64.0, gt=0)
    aspect_weight: float = Field(default=0.05, ge=0)
    shapes: list[ShapeOverride] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shapes_match_sizes(self) -> "LadderSettings":
        for i, shape in enumerate(self.shapes):
            if shape.size not in self.sizes:
                raise ValueError(f"shapes[{i}].size: {shape.size:g} is not one of ladder.sizes; list it in sizes too")
            if shape.d_model % self.head_dim:
                raise ValueError(f"shapes[{i}].d_model: {shape.d_model} is not a multiple of head_dim {self.head_dim}")
        return self

    @field_validator("sizes", mode="before")
    @classmethod
    def _sizes(cls, sizes: Any) -> list[float]:
        if not isinstance(sizes, list):
            raise ValueError("give a list of non-embedding parameter targets, e.g. [1M, 3M, 10M]")
        out = []
        for i, value in enumerate(sizes):
            try:
                out.append(size_value(value))
            except ValueError as exc:
                raise ValueError(f"[{i}]: {exc}") from None
        repeated = sorted({s for s in out if out.count(s) > 1})
        if repeated:
            raise ValueError(f"size {format_count(repeated[0])} is listed twice; list each size once")
        return out


class BudgetSettings(StrictBlock):
    tokens: Optional[float] = None
    tokens_per_param: Optional[float] = Field(default=None, gt=0)

    @field_validator("tokens", mode="before")
    @classmethod
    def _tokens(cls, value: Any) -> Optional[float]:
        return None if value is None else size_value(value)

    @model_validator(mode="after")
    def _one(self) -> "BudgetSettings":
        if (self.tokens is None) == (self.tokens_per_param is None):
            raise ValueError("give exactly one of tokens and tokens_per_param (e.g. tokens_per_param: 20)")
        return self



def seeds_at_value(value: Any) -> dict[float, list[int]]:
    """`seeds_at: {48K: [0, 1, 2]}` -> {48000.0: [0, 1, 2]}: the extra seeds of chosen ladder rungs.

    Why: seed noise must be measured from real seeds (checkpoint scatter underestimated it ~6x),
    but repeating every rung costs the whole ladder again; the rungs the comparison leans on (the
    largest) can have their seeds repeated alone. Sizes are read like `ladder.sizes` (whether they
    are among them is checked with the whole spec, `check_seeds_at`).
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("give a mapping of ladder size to seeds, e.g. seeds_at: {48K: [0, 1, 2]}")
    out: dict[float, list[int]] = {}
    for key, seeds in value.items():
        try:
            size = size_value(key)
        except ValueError as exc:
            raise ValueError(f"size {key!r}: {exc}") from None
        label = format_count(size)
        if size in out:
            raise ValueError(f"size {label} is listed twice; list each size once")
        if not isinstance(seeds, list) or not seeds:
            raise ValueError(f"{label}: give a non-empty list of seeds, e.g. {label}: [0, 1, 2]")
        for seed in seeds:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ValueError(f"{label}: seed {seed!r} is not a whole number; seeds are integers such as 0, 1, 2")
            if not 0 <= seed < SEED_LIMIT:
                raise ValueError(f"{label}: seed {seed} is outside 0 to 2**32 - 1; use a non-negative seed")
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            raise ValueError(f"{label}: seed {repeated[0]} is listed twice; list each seed once")
        out[size] = list(seeds)
    return out


def check_seeds_at(seeds_at: dict[float, list[int]], ladder: Optional[LadderSettings]) -> None:
    """Every rung named in `seeds_at` must be a ladder size: ValueError('seeds_at: ...; fix') otherwise."""
    if not seeds_at:
        return
    if ladder is None:
        raise ValueError("seeds_at: names ladder rungs, but the study has no ladder; remove seeds_at (the recall "
                         "phase takes its seeds from recall.seeds)")
    for size in seeds_at:
        if size not in ladder.sizes:
            sizes = ", ".join(format_count(s) for s in ladder.sizes)
            raise ValueError(f"seeds_at: {format_count(size)} is not one of ladder.sizes ({sizes}); use one of "
                             "those sizes, or add it to ladder.sizes")


def seeds_for(size: float, seeds: list[int], seeds_at: dict[float, list[int]]) -> list[int]:
    """The seeds the rung `size` trains: `seeds`, then its extra seeds from `seeds_at` (each seed once)."""
    extra = seeds_at.get(size, [])
    return list(seeds) + [s for s in extra if s not in seeds]
