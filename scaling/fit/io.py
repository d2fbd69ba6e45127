"""Results tables -> `FitData`: reading CSV/Parquet, picking columns, row filters.

Why here and not in the CLI: `mcscale fit` must work on any table (our own ladders, Epoch's
Chinchilla points, Gadre's grid), and every way a table can be wrong (missing file, corrupt
bytes, a misspelt column, a query that does not parse) must end in a `UserInputError` that
names the option and the fix. Keeping that in one library module lets the report and the tests
use exactly the same rules as the command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.errors import UserInputError
from scaling.fit.data import FitData, make_fit_data
from scaling.fit.laws import Law

FLOPS_PER_PARAM_TOKEN = 6.0  # training FLOPs ~ 6 N D (forward + backward), Kaplan et al.


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file (chosen by suffix, else by content), or a folder of Parquet files
    such as a study's `trials/` (every `*.parquet` in it, as one table)."""
    p = Path(path)
    if not p.exists():
        raise UserInputError("DATA", f"no file at {str(p)!r}", "pass the path of an existing CSV or Parquet results table")
    if p.is_dir():
        parts = sorted(p.glob("*.parquet"))
        if not parts:
            raise UserInputError("DATA", f"{str(p)!r} is a folder without Parquet files",
                                 "pass one CSV or Parquet file, or a folder of Parquet files (a study's trials/)")
        return pd.concat([read_table(part) for part in parts], ignore_index=True)
    with p.open("rb") as fh:
        head = fh.read(4)
    is_parquet = p.suffix.lower() in (".parquet", ".pq") or head == b"PAR1"
    try:
        if is_parquet:
            df = pd.read_parquet(p)
        else:
            df = pd.read_csv(p, sep="\t" if p.suffix.lower() == ".tsv" else ",")
    except Exception as exc:  # noqa: BLE001 - any parser failure is a bad file, reported as such
        kind = "Parquet" if is_parquet else "CSV"
        raise UserInputError(
            "DATA", f"{str(p)!r} could not be read as {kind} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
            "check the file is a complete CSV with a header row, or a Parquet file",
        ) from None
    if df.empty or len(df.columns) == 0:
        raise UserInputError("DATA", f"{str(p)!r} has no rows", "point at a results table with one row per run or checkpoint")
    return df.reset_index(drop=True)


def row_mask(df: pd.DataFrame, expr: str, option: str) -> np.ndarray:
    """Boolean mask of the rows where the pandas-query expression ``expr`` holds."""
    try:
        result = df.eval(expr)
    except Exception as exc:  # noqa: BLE001 - whatever pandas raises, the expression is at fault
        raise UserInputError(
            option, f"the expression {expr!r} could not be evaluated ({type(exc).__name__}: {exc})",
            "use pandas query syntax over the table's columns, e.g. \"params < 1e9\"; quote names with "
            f"spaces in backticks (`Model Size`). Columns: {_column_list(df)}",
        ) from None
    if not isinstance(result, pd.Series) or result.dtype != bool or len(result) != len(df):
        raise UserInputError(
            option, f"the expression {expr!r} does not give true/false per row",
            "write a condition, e.g. \"params_nonembed < 1e9\" or \"flops >= 1e21\"",
        )
    return result.to_numpy(dtype=bool)


@dataclass(frozen=True)
class Columns:
    """Which table columns hold what. ``tokens``/``flops`` may be derived (see `to_fit_data`)."""

    loss: str = "loss"
    params: str = "params_nonembed"
    tokens: str | None = None
    flops: str | None = None
    group: str | None = None
    run: str | None = None


def _column_list(df: pd.DataFrame, limit: int = 30) -> str:
    names = [str(c) for c in df.columns]
    return ", ".join(repr(n) for n in names[:limit]) + (", ..." if len(names) > limit else "")


def _numeric(df: pd.DataFrame, name: str, option: str) -> np.ndarray:
    if name not in df.columns:
        raise UserInputError(
            f"{option} {name!r}", f"the table has no column {name!r}",
            f"pass {option} with one of the table's columns: {_column_list(df)}",
        )
    values = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=float)
    bad = np.isnan(values) & df[name].notna().to_numpy()
    if bad.any():
        raise UserInputError(
            f"{option} {name!r}", f"column {name!r} holds non-numeric values (e.g. {df[name][bad].iloc[0]!r})",
            "point the option at a numeric column",
        )
    return values


def to_fit_data(df: pd.DataFrame, law: Law, columns: Columns) -> tuple[FitData, list[str]]:
    """Pick the law's inputs from ``df``; returns the data and notes on derived columns.

    ``tokens`` come from ``columns.tokens`` or, when only compute is given, D = C / (6 N).
    ``flops`` come from ``columns.flops`` or C = 6 N D. A ``run`` column (or ``columns.run``)
    makes the bootstrap resample whole runs; without one it resamples rows.
    """
    notes: list[str] = []
    source: dict[str, str] = {"loss": columns.loss}
    loss = _numeric(df, columns.loss, "--loss-col")
    needs = set(law.features)
    params = tokens = flops = None
    if needs & {"params_nonembed", "tokens"} or (needs == {"flops"} and columns.flops is None):
        params = _numeric(df, columns.params, "--n-col")
        source["params_nonembed"] = columns.params
    if columns.flops is not None:
        flops = _numeric(df, columns.flops, "--c-col")
        source["flops"] = columns.flops
    wants_tokens = "tokens" in needs or ("flops" in needs and flops is None)
    if wants_tokens:
        if columns.tokens is not None:
            tokens = _numeric(df, columns.tokens, "--d-col")
            source["tokens"] = columns.tokens
        elif flops is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                tokens = flops / (FLOPS_PER_PARAM_TOKEN * params)
            source["tokens"] = f"{columns.flops} / (6 * {columns.params})"
            notes.append(
                f"tokens D = C / (6 N), from compute column {columns.flops!r} and parameter column {columns.params!r}"
            )
        elif "tokens" in df.columns:
            tokens = _numeric(df, "tokens", "--d-col")
            source["tokens"] = "tokens"
        else:
            raise UserInputError(
                "--d-col", "no tokens column was given and the table has no column 'tokens'",
                f"pass --d-col with the tokens column, or --c-col with a compute (FLOPs) column so that "
                f"D = C / (6 N). Columns: {_column_list(df)}",
            )
    if flops is None and params is not None and tokens is not None:
        flops = FLOPS_PER_PARAM_TOKEN * params * tokens
        if "flops" in needs:
            notes.append(f"compute C = 6 N D, from columns {columns.params!r} and {source['tokens']!r}")
        source["flops"] = f"6 * {columns.params} * {source['tokens']}"
    features = {k: v for k, v in (("params_nonembed", params), ("tokens", tokens), ("flops", flops)) if v is not None}

    group = None
    if columns.group is not None:
        if columns.group not in df.columns:
            raise UserInputError(
                f"--group-col {columns.group!r}", f"the table has no column {columns.group!r}",
                f"pass --group-col with one of: {_column_list(df)}",
            )
        group = df[columns.group].astype(str).to_numpy()
    run_col = columns.run if columns.run is not None else ("run" if "run" in df.columns else None)
    unit = None
    if run_col is not None:
        if run_col not in df.columns:
            raise UserInputError(
                f"--run-col {run_col!r}", f"the table has no column {run_col!r}",
                f"pass --run-col with one of: {_column_list(df)}, or leave it out to resample rows",
            )
        unit = df[run_col].astype(str).to_numpy()
        notes.append(f"bootstrap resamples whole runs (column {run_col!r})")
    return make_fit_data(features, loss, group=group, unit=unit, columns=source), notes


def keep_after_dropping_highest(data: FitData, k: int) -> np.ndarray:
    """Mask that drops the ``k`` highest-loss points of each group.

    Epoch AI drop the 5 highest losses of Chinchilla's points (small models at tiny compute,
    far off the law). Per group, so each architecture loses its own outliers.
    """
    if k < 0:
        raise UserInputError("--drop-highest", f"cannot drop a negative number of points ({k})", "use 0 or more")
    keep = np.ones(data.n_points, dtype=bool)
    if k == 0:
        return keep
    for g in data.groups:
        rows = np.flatnonzero(data.group == g)
        order = rows[np.argsort(-data.loss[rows], kind="stable")]
        keep[order[:k]] = False
    return keep
