"""`FitResult`: what a scaling-law fit returns, as plain data that round-trips through JSON.

Why plain data: the report, the comparison and `mcscale fit --json` all consume fits, possibly
in another process or days later; a dataclass of floats, lists and dicts (no numpy, no
callables) can be written, read back and compared exactly. The bootstrap draws are kept so that
intervals for any new target (prediction intervals, crossovers, win probabilities) can be
computed from a saved fit without refitting.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from numpy.typing import ArrayLike

from scaling.fit.laws import Law, get_law


@dataclass
class GroupFit:
    """One group's (architecture's) fitted law.

    ``params``: reported parameters (``E``, ``A``, ``B``, ``alpha``, ``beta`` as applicable);
    ``ci95``: bootstrap percentile interval per parameter (NaN, null in JSON, without a bootstrap);
    ``residuals_log``: ``log(actual) - log(predicted)`` per fitted point, the noise model for
    prediction intervals; ``bootstrap``: the refitted parameters, one list entry per resample.
    """

    params: dict[str, float]
    n_points: int
    ci95: dict[str, list[float]] = field(default_factory=dict)
    residuals_log: list[float] = field(default_factory=list)
    mean_abs_rel_error: float = math.nan
    max_abs_rel_error: float = math.nan
    bootstrap: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class FitResult:
    """A fitted law for one or more groups plus the settings that produced it."""

    law: str
    law_input: str | None
    formula: str
    groups: dict[str, GroupFit]
    shared: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    # --- the law -------------------------------------------------------------------------
    @property
    def law_obj(self) -> Law:
        return get_law(self.law, self.law_input or "params_nonembed")

    @property
    def n_bootstrap(self) -> int:
        first = next(iter(self.groups.values()))
        return len(next(iter(first.bootstrap.values()), []))

    def predict(self, group: str, X: Mapping[str, ArrayLike]) -> np.ndarray:
        """Point prediction of the loss for ``group`` at inputs ``X``."""
        return self.law_obj.predict(self.groups[group].params, X)

    def draws(self, group: str) -> dict[str, np.ndarray]:
        """Bootstrap parameter draws as column arrays ``(B, 1)`` ready to broadcast."""
        boot = self.groups[group].bootstrap
        if not boot:
            raise ValueError("this fit has no bootstrap draws; refit with bootstrap > 0")
        return {k: np.asarray(v, dtype=float)[:, None] for k, v in boot.items()}

    def predict_draws(self, group: str, X: Mapping[str, ArrayLike]) -> np.ndarray:
        """Predictions of every bootstrap draw, ``(B, n)``."""
        return self.law_obj.predict(self.draws(group), X)

    def param_interval(self, group: str, name: str, level: float = 0.95) -> tuple[float, float]:
        """Percentile bootstrap interval of one parameter at ``level``."""
        values = np.asarray(self.groups[group].bootstrap[name], dtype=float)
        tail = (1.0 - level) / 2.0
        return float(np.quantile(values, tail)), float(np.quantile(values, 1.0 - tail))

    # --- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FitResult":
        groups = {name: GroupFit(**_restore(g)) for name, g in data["groups"].items()}
        return cls(
            law=data["law"],
            law_input=data.get("law_input"),
            formula=data.get("formula", ""),
            groups=groups,
            shared=list(data.get("shared", [])),
            settings=dict(data.get("settings", {})),
            notes=list(data.get("notes", [])),
        )

    def to_json(self, path: str | Path | None = None, **extra: Any) -> str:
        """JSON text (non-finite floats as null); written to ``path`` when given."""
        payload = self.to_dict()
        payload.update(to_jsonable(extra))
        text = json.dumps(payload, indent=2, allow_nan=False)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "FitResult":
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        return cls.from_dict(json.loads(text))


def to_jsonable(value: Any) -> Any:
    """numpy -> Python, NaN/inf -> None, recursively, so ``json.dumps`` is strict JSON."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _restore(group: Mapping[str, Any]) -> dict[str, Any]:
    """Undo `to_jsonable` for the float fields of a `GroupFit` (None -> NaN)."""
    known = {f.name for f in fields(GroupFit)}
    out = {k: v for k, v in group.items() if k in known}  # e.g. a CLI "backtest" entry is not part of the fit
    for key in ("mean_abs_rel_error", "max_abs_rel_error"):
        out[key] = math.nan if out.get(key) is None else float(out[key])
    out["params"] = {k: (math.nan if v is None else float(v)) for k, v in out["params"].items()}
    out["residuals_log"] = [math.nan if v is None else float(v) for v in out.get("residuals_log", [])]
    out["bootstrap"] = {k: [math.nan if v is None else float(v) for v in vs] for k, vs in out.get("bootstrap", {}).items()}
    out["ci95"] = {k: [math.nan if v is None else float(v) for v in vs] for k, vs in out.get("ci95", {}).items()}
    return out
