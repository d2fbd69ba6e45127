"""`mcscale report`: fit a study's results, backtest, extrapolate and write the report."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from scaling.cli.common import (LAW_OPTION, S3_ENDPOINT_OPTION, STORAGE_OPTION, STUDY_ARGUMENT, output_console,
                                user_errors_exit_2)
from scaling.errors import UserInputError

REPORT_FOLDER = "report"  # scaling.report.publish.REPORT_DIR, not imported: it pulls matplotlib into --help

commands = typer.Typer()  # merged into the `mcscale` app by scaling.cli.app

def print_headline(console: Console, report) -> None:  # noqa: ANN001 - Report
    """The report's headline, set apart: the last thing `mcscale run` and `mcscale report` print, so the
    answer is what a user sees when the command returns."""
    if not report.headline:
        return
    console.print()
    console.print("[bold]In short[/]")
    for sentence in report.headline:
        console.print(sentence, soft_wrap=True)


def print_report_summary(console: Console, report, files) -> None:  # noqa: ANN001 - Report, ReportFiles
    """The verdict, the predictions at the largest target and where the files are."""
    from scaling.report.verdict import describe_target, headline_targets
    from scaling.formatting import interval, loss, percent, signed

    console.print()
    console.print("[bold]Details[/]")
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
    print_headline(console, report)
    console.print(f"Report: {files.uri('report.html')} (also report.md, report.json)"
                  + (f"; MLflow run {files.run_id} (phase '{getattr(files, 'phase', REPORT_FOLDER)}')" if files.run_id else ""))
    if getattr(files, "folder", REPORT_FOLDER) != REPORT_FOLDER:
        console.print(f"This is a separate report made with overrides; the study's own report ({REPORT_FOLDER}/report.html) "
                      "is unchanged.", soft_wrap=True)


def variant_name(spec_options, options) -> str | None:  # noqa: ANN001 - ReportOptions
    """The folder name of a report made with overrides, from the settings that differ from the spec's
    (``law-chinchilla``, ``bootstrap-0_targets-1B-10B``); None when nothing differs (the study's own report).

    Why from the resolved values and not the options typed: `--law power` on a power-law spec changes
    nothing and must not make a second report that is the first one under another name."""
    from scaling.models.ladder import format_count

    parts: list[str] = []
    if options.law != spec_options.law:
        parts.append(f"law-{options.law}")
    if options.x != spec_options.x:
        parts.append(f"x-{options.x}")
    if options.shared_E != spec_options.shared_E:
        parts.append("shared-e" if options.shared_E else "separate-e")
    if options.bootstrap != spec_options.bootstrap:
        parts.append(f"bootstrap-{options.bootstrap}")
    if tuple(options.target_sizes) != tuple(spec_options.target_sizes):
        parts.append("targets-" + "-".join(format_count(n) for n in options.target_sizes))
    if options.holdout_sizes != spec_options.holdout_sizes:
        parts.append(f"holdout-{options.holdout_sizes}")
    if options.seed != spec_options.seed:
        parts.append(f"seed-{options.seed}")
    return "_".join(parts) or None


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
    replace: bool = typer.Option(False, "--replace", help="Remake the study's own report (report/report.html) from "
                                 "its spec's fit settings; without it an existing one is kept."),
) -> None:
    """Fit scaling laws to a study's finished runs, backtest them, extrapolate past 1.3B to 70B and write
    report.html (self-contained), report.md and report.json under <storage>/<study>/report/.

    Settings come from the spec's `fit:` block. Overrides (--law, --x, --bootstrap, --target-sizes,
    --holdout-sizes, --shared-e/--separate-e, --seed) make a separate report in its own folder,
    report/<overrides>/ (e.g. report/law-chinchilla/), with its own MLflow run; the study's own report
    is only remade by `mcscale run`/`resume` or `mcscale report --replace`. Nothing but report files
    (and their MLflow runs) is written.
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
    variant = variant_name(ReportOptions.from_settings(results.fit_settings), options)
    if variant and replace:
        raise UserInputError("--replace", f"--replace remakes the study's own report from its spec, but overrides "
                             f"were given ({variant})", "drop --replace to write them as a separate report under "
                             f"report/{variant}/, or drop the overrides to remake the study's own report")
    if variant is None and not replace and store.read_text(f"{REPORT_FOLDER}/report.json") is not None:
        raise UserInputError("--replace", f"the study's report already exists ({store.root.rstrip('/')}/"
                             f"{REPORT_FOLDER}/report.html) and is kept",
                             "pass --replace to remake it, or an override such as --law chinchilla or --bootstrap 1000 "
                             "to write a separate report beside it")
    made, files = make_report(store, console, options, tracking_uri=tracking_uri, use_mlflow=mlflow, results=results,
                              variant=variant)
    print_report_summary(console, made, files)
