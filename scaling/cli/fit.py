"""`mcscale fit`: fit a scaling law to any results table, optionally backtest it, print and save.

Thin by design: it parses options, calls `scaling.fit`, and prints. Every bad input surfaces as
`UserInputError` from the library, which `user_errors_exit_2` turns into one paragraph and exit 2.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from scaling.cli.common import err_console, user_errors_exit_2
from scaling.errors import UserInputError
from scaling.formatting import sci
from scaling.fit.backtest import UNCALIBRATED, GroupBacktest, evaluate_holdout
from scaling.fit.degenerate import consolidate, diagnose_fit, interval_refusals
from scaling.fit.estimate import FitOptions, fit
from scaling.fit.io import Columns, keep_after_dropping_highest, read_table, row_mask, to_fit_data
from scaling.fit.laws import LAW_NAMES, get_law
from scaling.fit.result import FitResult, to_jsonable

commands = typer.Typer()  # merged into the `mcscale` app by scaling.cli.app

console = Console()

_X_CHOICES = {"params": "params_nonembed", "compute": "flops"}


def _fmt(value: float | None, digits: int = 4) -> str:
    """Compact number (1.34e9); '-' where a table cell has no value."""
    text = sci(value, digits)
    return "-" if text == "n/a" else text


def _params_table(result: FitResult, degenerate: set[tuple[str, str]] = frozenset()) -> Table:  # type: ignore[assignment]
    """The fitted parameters per group; a parameter the fit cannot identify (``degenerate``:
    (group, name) pairs) shows as "not identified" instead of a number."""
    table = Table(title=f"{result.law} fit: {result.formula}", title_justify="left")
    table.add_column("group", overflow="fold")
    table.add_column("points", justify="right")
    names = result.law_obj.param_names
    for name in names:
        table.add_column(name + (" (shared)" if name in result.shared else ""), justify="right", overflow="fold")
    table.add_column("in-sample |err| mean / max", justify="right", overflow="fold")
    for g, gf in result.groups.items():
        cells = []
        for name in names:
            if (g, name) in degenerate:
                cells.append("[yellow]not identified[/]")
                continue
            cell = _fmt(gf.params[name])
            lo, hi = gf.ci95.get(name, (math.nan, math.nan))
            if math.isfinite(lo) and math.isfinite(hi):
                cell += f"\n[dim][{_fmt(lo, 3)}, {_fmt(hi, 3)}][/]"
            cells.append(cell)
        err = f"{gf.mean_abs_rel_error:.2%} / {gf.max_abs_rel_error:.2%}"
        table.add_row(g, str(gf.n_points), *cells, err)
    if result.n_bootstrap:
        table.caption = (f"brackets: 95% bootstrap intervals of the parameters, uncalibrated ({result.n_bootstrap} "
                         f"resamples of {result.settings['bootstrap_unit'].split(' ')[0]}; the calibration covers "
                         "predicted losses, not parameters)")
    return table


def _backtest_table(backtests: dict[str, GroupBacktest], features: tuple[str, ...], calibrated: bool = True) -> Table:
    kind = "calibrated" if calibrated else "UNCALIBRATED"
    table = Table(title=f"backtest: held-out points ({kind} intervals)", title_justify="left")
    table.add_column("group", overflow="fold")
    short = {"params_nonembed": "N", "tokens": "D", "flops": "C"}
    for f in features:
        table.add_column(short.get(f, f), justify="right", overflow="fold")
    interval_name = "interval" if calibrated else "uncalibrated interval"
    for name, justify in (("actual", "right"), ("pred.", "right"), (interval_name, "right"), ("error", "right"),
                          ("inside", "center")):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for g, bt in backtests.items():
        for p in bt.points:
            interval = ("refused" if bt.refused else "-") if p.low is None else f"{p.low:.3g}–{p.high:.3g}"
            inside = "-" if p.in_interval is None else ("yes" if p.in_interval else "[red]no[/]")
            table.add_row(
                g, *(_fmt(p.inputs.get(f), 3) for f in features), f"{p.actual:.4g}", f"{p.prediction:.4g}",
                interval, f"{p.rel_error:+.2%}", inside,
            )
        cov = "" if bt.coverage is None else f"{bt.coverage:.0%}"
        table.add_row(
            f"[bold]{g}[/]", *([""] * len(features)), "", "", "[bold]mean/max[/]",
            f"[bold]{bt.mean_abs_rel_error:.2%} / {bt.max_abs_rel_error:.2%}[/]", cov, end_section=True,
        )
    table.caption = ("interval: calibrated prediction interval (forms averaged; nested backtests; drift from the "
                     "public suite, scaling.fit.calibration)" if calibrated else
                     "interval: UNCALIBRATED prediction interval (plain bootstrap fit uncertainty plus residual noise; "
                     "on held-out public data its 95% covered 65-82%: drop --plain-bootstrap for calibrated ones)") + \
        "; inside: share of held-out points in it; refused: the fit is not identified (see the warnings)"
    return table


@commands.command("fit")
@user_errors_exit_2
def fit_command(
    data: str = typer.Argument(..., help="Results table: CSV or Parquet, one row per run (or checkpoint)."),
    law: str = typer.Option("chinchilla", "--law", help="Functional form: chinchilla (E + A/N^alpha + B/D^beta) or power (E + A x^-alpha)."),
    n_col: str = typer.Option("params_nonembed", "--n-col", help="Column of non-embedding parameters N."),
    d_col: Optional[str] = typer.Option(None, "--d-col", help="Column of training tokens D (default: 'tokens')."),
    c_col: Optional[str] = typer.Option(None, "--c-col", help="Column of training compute C in FLOPs; without --d-col, D = C / (6 N)."),
    loss_col: str = typer.Option("loss", "--loss-col", help="Column of the loss to fit (nats per token)."),
    group_col: Optional[str] = typer.Option(None, "--group-col", help="Column naming each point's group (architecture); one law per group."),
    run_col: Optional[str] = typer.Option(None, "--run-col", help="Column of run ids: the bootstrap resamples whole runs (default: 'run' if present, else rows)."),
    share: list[str] = typer.Option([], "--share", help="Parameter shared by all groups, e.g. --share E (repeatable)."),
    x: str = typer.Option("params", "--x", help="Input of the power law: params or compute."),
    drop_highest: int = typer.Option(0, "--drop-highest", help="Drop the K highest-loss points of each group of the whole table, before --fit-where/--predict-where (Epoch drop 5 of Chinchilla's)."),
    fit_where: Optional[str] = typer.Option(None, "--fit-where", help="Pandas query selecting the rows to fit, e.g. \"flops < 1e21\"."),
    predict_where: Optional[str] = typer.Option(None, "--predict-where", help="Pandas query selecting held-out rows to predict (a backtest); the fit defaults to the other rows."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for intervals (0: none)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    delta: float = typer.Option(1e-3, "--delta", help="Huber delta on log-loss residuals (Hoffmann et al.: 1e-3)."),
    level: float = typer.Option(0.95, "--level", help="Level of the prediction intervals in the backtest."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Processes for the bootstrap (default: all cores when worthwhile)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the fit (and backtest) as JSON to this path."),
    calibrated: bool = typer.Option(True, "--calibrated/--plain-bootstrap", help="Backtest intervals from the "
                                    "calibrated, form-averaged model (the default: nested leave-top-rung-out backtests, "
                                    "drift calibrated on public scaling-law data; scaling.fit.calibration), or with "
                                    "--plain-bootstrap the old plain bootstrap intervals, labelled uncalibrated: on "
                                    "held-out public data their nominal 95% covered 65-82%."),
) -> None:
    """Fit a scaling law (Hoffmann et al.'s robust fit, batched over the start grid) to a table.

    Example, Epoch AI's Chinchilla points with a backtest on the largest budgets:

        mcscale fit epoch_chinchilla_points.csv --n-col "Model Size" --c-col "Training FLOP"
        --drop-highest 5 --fit-where "`Training FLOP` < 1e21" --predict-where "`Training FLOP` >= 1e21"
    """
    if law not in LAW_NAMES:
        raise UserInputError("--law", f"unknown law {law!r}", f"choose one of: {', '.join(LAW_NAMES)}")
    if x not in _X_CHOICES:
        raise UserInputError("--x", f"unknown input {x!r}", "choose params (non-embedding parameters) or compute (FLOPs)")
    if x == "compute" and law != "power":
        raise UserInputError("--x", f"the {law} law takes both N and D, so --x compute does not apply", "leave --x out, or use --law power")
    if not 0.0 < level < 1.0:
        raise UserInputError("--level", f"{level} is not a probability level", "use e.g. 0.95")
    if not delta > 0:
        raise UserInputError("--delta", f"the Huber threshold must be positive, not {delta}", "use e.g. 1e-3 (Hoffmann et al.)")
    if bootstrap < 0:
        raise UserInputError("--bootstrap", f"cannot take {bootstrap} resamples", "use 0 (no intervals) or more, e.g. 1000")
    if workers is not None and workers < 1:
        raise UserInputError("--workers", f"needs at least one process, not {workers}", "leave it out or pass 1 or more")
    the_law = get_law(law, _X_CHOICES[x])
    table = read_table(data)
    columns = Columns(loss=loss_col, params=n_col, tokens=d_col, flops=c_col, group=group_col, run=run_col)
    points, notes = to_fit_data(table, the_law, columns)
    for name in share:
        try:
            the_law.param(name)
        except KeyError:
            raise UserInputError("--share", f"the {law} law has no parameter {name!r}", f"share one of {', '.join(the_law.param_names)}") from None

    keep = keep_after_dropping_highest(points, drop_highest)
    predict_mask = row_mask(table, predict_where, "--predict-where") if predict_where else None
    if fit_where:
        fit_mask = row_mask(table, fit_where, "--fit-where")
    else:
        fit_mask = np.ones(len(table), dtype=bool) if predict_mask is None else ~predict_mask
    if drop_highest:
        notes.append(f"dropped the {drop_highest} highest-loss point(s) of each group")
    fit_points = points.subset(fit_mask & keep)
    if fit_points.n_points == 0:
        raise UserInputError("--fit-where", "selects no rows to fit", "loosen the expression (or drop fewer points)")

    options = FitOptions(delta=delta, bootstrap=bootstrap, seed=seed, n_workers=workers)
    with Progress(
        TextColumn("bootstrap"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=True, auto_refresh=False, disable=bootstrap == 0,
    ) as bar:
        task = bar.add_task("bootstrap", total=max(bootstrap, 1))

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)
            bar.refresh()

        # the calibration (every form, nested backtests) serves predicted losses: with nothing to
        # predict the plain fit is the same fit (same parameters and bootstrap) at a third of the cost
        if calibrated and bootstrap > 0 and predict_mask is not None:
            from scaling.fit.calibration import calibrate

            model = calibrate(fit_points, the_law, shared=share, options=options, progress=progress)
            result = model.primary
            result.settings["calibration"] = model.summary()
            result.notes.extend(model.notes)  # e.g. a drift taken from the public suite's families
        else:
            model = None
            result = fit(fit_points, the_law, shared=share, options=options, progress=progress)
    result.notes.extend(notes)
    findings = diagnose_fit(result, fit_points)
    result.settings["degenerate"] = [f.to_dict() for f in findings]
    calibrated = model is not None
    result.settings["intervals"] = ("none (--bootstrap 0)" if bootstrap == 0 else
                                    "calibrated" if calibrated else
                                    "none (nothing to predict: pass --predict-where)" if predict_mask is None else
                                    UNCALIBRATED)
    refusals = interval_refusals(findings)
    if refusals:
        result.settings["intervals_refused"] = refusals
    # one sentence per kind of degeneracy, naming every group it hits
    result.settings.setdefault("warnings", []).extend(f"degenerate fit: {t}" for t in consolidate(findings))
    result.settings["data"] = str(data)
    result.settings["fit_where"] = fit_where
    result.settings["columns"] = {k: v for k, v in fit_points.columns.items()}

    backtests: dict[str, GroupBacktest] = {}
    if predict_mask is not None:
        held_out = points.subset(predict_mask & keep)
        if held_out.n_points == 0:
            raise UserInputError("--predict-where", "selects no rows to predict", "loosen the expression")
        backtests = evaluate_holdout(result, held_out, level, calibration=model, findings=findings)
        result.settings["predict_where"] = predict_where
        if np.any(predict_mask & fit_mask & keep):
            result.notes.append("some predicted rows were also fitted: the backtest is partly in-sample")

    console.print(_params_table(result, {(f.scope, p) for f in findings for p in f.params}))
    if backtests:
        console.print(_backtest_table(backtests, the_law.features, calibrated))
    for note in result.notes:
        console.print(f"[dim]note:[/] {note}")
    for warning in result.settings.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}")
    if backtests:
        for g, why in refusals.items():
            console.print(f"[yellow]warning:[/] {'' if g == 'all' else g + ': '}{why}")
    if not calibrated and bootstrap > 0 and backtests:
        console.print("[yellow]warning:[/] the backtest intervals are UNCALIBRATED (--plain-bootstrap): on held-out public "
                      "scaling-law data their nominal 95% covered 65-82%; leave the flag out for calibrated ones")

    if json_out is not None:
        payload: dict[str, Any] = result.to_dict()
        for g, bt in backtests.items():
            payload["groups"][g]["backtest"] = bt.to_dict()
        try:
            json_out.write_text(json.dumps(to_jsonable(payload), indent=2, allow_nan=False) + "\n")
        except OSError as exc:
            raise UserInputError("--json", f"cannot write {str(json_out)!r} ({exc.strerror})", "pass a writable path") from None
        console.print(f"[dim]wrote {json_out}[/]")

