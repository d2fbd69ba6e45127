"""`mcscale report`: fit a study's results, backtest, extrapolate and write the report."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from scaling.cli.common import (LAW_OPTION, S3_ENDPOINT_OPTION, STORAGE_OPTION, STUDY_ARGUMENT, output_console,
                                user_errors_exit_2)
from scaling.errors import UserInputError

commands = typer.Typer()  # merged into the `mcscale` app by scaling.cli.app

def print_report_summary(console: Console, report, files) -> None:  # noqa: ANN001 - Report, ReportFiles
    """The verdict, the predictions at the largest target and where the files are."""
    from scaling.report.verdict import describe_target, headline_targets
    from scaling.formatting import interval, loss, percent, signed

    console.print()
    console.print("[bold]Verdict[/]")
    console.print(report.verdict, soft_wrap=True)
    if report.recall:  # the recall phase's table (scaling.report.recall)
        from scaling.report.recall import table_rows

        headers, rows = table_rows(report)
        recall = Table(title="recall after training on MQAR (accuracy [95% sampling interval], bytes per sequence)",
                       title_justify="left")
        for col in headers:
            recall.add_column(col, justify="left" if col == "series" else "right")
        for row in rows:
            recall.add_row(*row)
        console.print(recall)
    from scaling.report.in_range import measured_sentence, sentence

    for paragraph in (measured_sentence(report), sentence(report)):
        if paragraph:
            console.print(paragraph, soft_wrap=True)
    large, _ = headline_targets(report)
    if large is not None:
        table = Table(title=f"predictions at {describe_target(report, large)}", title_justify="left")
        for col in ("series", "loss", "95% interval", "95% interval (a new run)", f"minus {report.baseline}", "P(lower)"):
            table.add_column(col, justify="left" if col == "series" else "right")
        versus = {v.series: v for v in report.versus if v.target == large}
        bound = large in (report.settings.get("floor_bound_targets") or [])
        for t in (t for t in report.targets if t.target == large):
            v = versus.get(t.series)
            table.add_row(t.series, loss(t.loss), interval(t.low, t.high), interval(t.pred_low, t.pred_high),
                          "baseline" if t.series == report.baseline else
                          ("withheld (shared floor)" if bound else "n/a") if v is None else
                          f"{signed(v.difference)} ({interval(v.low, v.high, signed)})",
                          "" if v is None or v.p_better is None else percent(v.p_better))
        console.print(table)
    console.print("[bold]Caveats[/]")
    for caveat in report.caveats:
        console.print(f"- {caveat}", soft_wrap=True)
    console.print(f"Report: {files.uri('report.html')} (also report.md, report.json)"
                  + (f"; MLflow run {files.run_id} (phase 'report')" if files.run_id else ""))


def _sizes(text: Optional[str]) -> Optional[tuple[float, ...]]:
    if text is None:
        return None
    from scaling.models.ladder import parse_size

    sizes = tuple(parse_size(part.strip(), "--target-sizes") for part in text.split(",") if part.strip())
    if not sizes:
        raise UserInputError("--target-sizes", "no sizes given", "list sizes like 1.3B,7B,70B")
    return sizes


@commands.command("report")
@user_errors_exit_2
def report(
    study: str = STUDY_ARGUMENT,
    storage: str = STORAGE_OPTION,
    s3_endpoint: Optional[str] = S3_ENDPOINT_OPTION,
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: the study's own, as "
                                               "recorded in its study.json when it was created)."),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Also log the report to the study's MLflow 'report' run."),
    law: Optional[str] = LAW_OPTION,
    x: Optional[str] = typer.Option(None, help="Override fit.x (input of the power law): compute or params."),
    bootstrap: Optional[int] = typer.Option(None, help="Override fit.bootstrap (resamples of whole runs; 0: no intervals)."),
    target_sizes: Optional[str] = typer.Option(None, help="Override fit.target_sizes, e.g. 1.3B,7B,70B."),
    holdout_sizes: Optional[int] = typer.Option(None, help="Override fit.backtest_holdout_sizes (largest sizes held out)."),
    shared_e: Optional[bool] = typer.Option(None, "--shared-e/--separate-e", help="Override fit.shared_E."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    workers: Optional[int] = typer.Option(None, help="Processes for the bootstrap (default: all cores when worthwhile)."),
) -> None:
    """Fit scaling laws to a study's finished runs, backtest them, extrapolate past 1.3B to 70B and write
    report.html (self-contained), report.md and report.json under <storage>/<study>/report/.

    Settings come from the spec's `fit:` block; the options override them for this report only.
    Nothing but the report files (and the MLflow 'report' run) is written.
    """
    from scaling.report.analysis import ReportOptions
    from scaling.report.inputs import load_study
    from scaling.report.stage import make_report
    from scaling.study.store import ResultStore

    if law is not None and law not in ("power", "chinchilla"):
        raise UserInputError("--law", f"unknown law {law!r}", "choose power or chinchilla")
    if x is not None and x not in ("compute", "params"):
        raise UserInputError("--x", f"unknown input {x!r}", "choose compute (FLOPs) or params")
    if bootstrap is not None and bootstrap < 0:
        raise UserInputError("--bootstrap", f"cannot take {bootstrap} resamples", "use 0 (no intervals) or more, e.g. 200")
    if holdout_sizes is not None and holdout_sizes < 0:
        raise UserInputError("--holdout-sizes", f"cannot hold out {holdout_sizes} sizes", "use 0 (no backtest) or more")
    if workers is not None and workers < 1:
        raise UserInputError("--workers", f"needs at least one process, not {workers}", "leave it out or pass 1 or more")
    sizes = _sizes(target_sizes)  # before reading the study: a typo here is reported as itself
    console = output_console()
    store = ResultStore(storage, study, s3_endpoint)
    results = load_study(store)
    options = ReportOptions.from_settings(results.fit_settings, law=law, x=x, bootstrap=bootstrap,
                                          target_sizes=sizes, holdout_sizes=holdout_sizes,
                                          shared_E=shared_e, seed=seed, workers=workers)
    made, files = make_report(store, console, options, tracking_uri=tracking_uri, use_mlflow=mlflow, results=results)
    print_report_summary(console, made, files)
