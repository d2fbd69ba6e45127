"""`FitData`: the validated points a fit sees, independent of where they came from.

Why a typed value: the estimator, the backtest and the comparison all need the same things
(the law's inputs with units, the loss, the group of each point and the unit a bootstrap
resamples), and checking them once here means every entry point (CLI, report, tests) gets the
same clear errors for the same bad input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scaling.errors import UserInputError
from scaling.fit.laws import Law


@dataclass(frozen=True)
class FitData:
    """Points for a fit.

    ``features`` maps a law input (``params_nonembed``, ``tokens``, ``flops``) to positive
    values; ``group`` labels each point's architecture; ``unit`` labels what the bootstrap
    resamples (a run id, so checkpoints of one run move together; or the row itself);
    ``columns`` names the source column of each feature and of ``loss`` for error messages.
    """

    features: dict[str, np.ndarray]
    loss: np.ndarray
    group: np.ndarray
    unit: np.ndarray
    columns: dict[str, str] = field(default_factory=dict)
    row: np.ndarray | None = None  # row number in the source table, for messages

    @property
    def n_points(self) -> int:
        return int(self.loss.shape[0])

    @property
    def groups(self) -> tuple[str, ...]:
        """Group labels, sorted, so results are ordered the same on every run."""
        return tuple(sorted({str(g) for g in self.group}))

    def subset(self, mask: np.ndarray) -> "FitData":
        """The points where ``mask`` is true."""
        mask = np.asarray(mask, dtype=bool)
        return FitData(
            features={k: v[mask] for k, v in self.features.items()},
            loss=self.loss[mask],
            group=self.group[mask],
            unit=self.unit[mask],
            columns=dict(self.columns),
            row=self.rows[mask],
        )

    @property
    def rows(self) -> np.ndarray:
        """Source-table row of each point (0-based)."""
        return np.arange(self.n_points) if self.row is None else self.row

    def of_group(self, group: str) -> "FitData":
        return self.subset(self.group == group)

    def column(self, name: str) -> str:
        """Where ``name`` came from, for messages."""
        return self.columns.get(name, name)


def make_fit_data(
    features: dict[str, np.ndarray],
    loss: np.ndarray,
    group: np.ndarray | None = None,
    unit: np.ndarray | None = None,
    columns: dict[str, str] | None = None,
) -> FitData:
    """Build `FitData` from arrays; ``group`` defaults to one group ``"all"``, ``unit`` to rows."""
    loss = np.asarray(loss, dtype=float)
    n = loss.shape[0]
    for name, values in features.items():
        if np.shape(values) != (n,):
            raise ValueError(f"feature {name!r} has shape {np.shape(values)}, expected ({n},) like the loss")
    group = np.full(n, "all", dtype=object) if group is None else np.asarray(group).astype(str).astype(object)
    unit = np.arange(n).astype(str).astype(object) if unit is None else np.asarray(unit).astype(str).astype(object)
    return FitData(
        features={k: np.asarray(v, dtype=float) for k, v in features.items()},
        loss=loss,
        group=group,
        unit=unit,
        columns=dict(columns or {}),
    )


def validate_for_law(data: FitData, law: Law) -> None:
    """Raise `UserInputError` unless every group can identify ``law``'s parameters.

    Checks: the law's inputs are present; values are finite and positive (the law works on
    logarithms); each group has at least as many points as the law has parameters; the loss is
    not constant; each input takes enough distinct values to pin its exponent and the floor.
    """
    for name in law.features:
        if name not in data.features:
            raise UserInputError(
                name, f"the {law.name} law needs input {name!r} and none was given",
                f"provide a column for {name}",
            )
    check_finite_positive(data, law)
    n_params = len(law.params)
    if data.n_points == 0:
        raise UserInputError("data", "no points are left to fit", "check --fit-where and --drop-highest")
    for g in data.groups:
        sub = data.of_group(g)
        label = "the data" if len(data.groups) == 1 else f"group {g!r}"
        if sub.n_points < n_params:
            raise UserInputError(
                label,
                f"has {sub.n_points} point(s) but the {law.name} law has {n_params} parameters "
                f"({', '.join(law.param_names)})",
                f"give at least {n_params} points per group (more for a useful fit), or use a law with fewer "
                "parameters (--law power)",
            )
        if np.ptp(sub.loss) <= 1e-12 * np.abs(sub.loss).max():
            raise UserInputError(
                f"column {data.column('loss')!r}",
                f"the loss of {label} is constant ({sub.loss[0]:g}), so there is no scaling to fit",
                "check --loss-col names the loss that changes with scale",
            )
        # E + A x^-alpha needs 3 distinct x; in E + A N^-alpha + B D^-beta only differences between
        # sizes (and between token counts) separate the terms from E, so each also needs 3.
        min_distinct = 3
        for name in law.features:
            distinct = np.unique(sub.features[name]).size
            if distinct < min_distinct:
                raise UserInputError(
                    f"column {data.column(name)!r}",
                    f"{label} has only {distinct} distinct value(s) of {name}; the exponent of {name} cannot be "
                    f"estimated from fewer than {min_distinct}",
                    "include runs at more sizes / token counts, or fit a law over a single input (--law power)",
                )


def check_finite_positive(data: FitData, law: Law) -> None:
    """Raise `UserInputError` if a law input or the loss is missing, non-finite or not positive."""
    for name, values in [*((n, data.features[n]) for n in law.features), ("loss", data.loss)]:
        col = data.column(name)
        bad = ~np.isfinite(values)
        if bad.any():
            raise UserInputError(
                f"column {col!r}", f"{int(bad.sum())} value(s) are missing or not finite (first at table row {int(data.rows[bad][0])})",
                "drop or fill those rows before fitting",
            )
        bad = values <= 0
        if bad.any():
            raise UserInputError(
                f"column {col!r}",
                f"{int(bad.sum())} value(s) are zero or negative (e.g. {values[bad][0]:g} at table row {int(data.rows[bad][0])}); "
                "scaling laws are fitted on logarithms and need positive values",
                "drop those rows (e.g. with --fit-where) or point the option at the right column",
            )
