"""`mcscale advise STUDY`: which next run most narrows the headline difference per device-hour.

Thin: it loads the study, runs the report's analysis in memory (the calibrated, form-averaged
fit; nothing is written), and prints the ranked candidates of `scaling.fit.advise`.
"""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from scaling.cli.common import (LAW_OPTION, S3_ENDPOINT_OPTION, STORAGE_OPTION, STUDY_ARGUMENT, output_console,
                                user_errors_exit_2)
from scaling.errors import UserInputError

commands = typer.Typer()  # merged into the `mcscale` app by scaling.cli.app


@commands.command("advise")
@user_errors_exit_2
def advise_command(
    study: str = STUDY_ARGUMENT,
    storage: str = STORAGE_OPTION,
    s3_endpoint: Optional[str] = S3_ENDPOINT_OPTION,
    law: Optional[str] = LAW_OPTION,
    bootstrap: Optional[int] = typer.Option(None, help="Override fit.bootstrap (resamples of whole runs)."),
    device_tflops: Optional[float] = typer.Option(None, "--device-tflops", help="Sustained training throughput of one "
                                                  "device in TFLOP/s, to price runs on another device (default: the "
                                                  "study's own, measured from its trials: CPU core-hours for a CPU "
                                                  "study, GPU-hours for a GPU one)."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
) -> None:
    """Rank candidate next runs (next rung up, more tokens, another seed, another segment length)
    by the expected shrinkage of the calibrated interval of the headline difference per device-hour.
    Reads the study; writes nothing."""
    from scaling.report.analysis import ReportOptions, build_report
    from scaling.report.document import advice_table
    from scaling.report.inputs import load_study
    from scaling.study.store import ResultStore

    if law is not None and law not in ("power", "chinchilla"):
        raise UserInputError("--law", f"unknown law {law!r}", "choose power or chinchilla")
    if bootstrap is not None and bootstrap < 1:
        raise UserInputError("--bootstrap", f"advice needs calibrated intervals, not {bootstrap} resamples",
                             "use 1 or more, e.g. 200")
    if device_tflops is not None and not device_tflops > 0:
        raise UserInputError("--device-tflops", f"a device's throughput must be positive, not {device_tflops}",
                             "pass e.g. 400 (TFLOP/s)")
    console = output_console()
    results = load_study(ResultStore(storage, study, s3_endpoint))
    options = ReportOptions.from_settings(results.fit_settings, law=law, bootstrap=bootstrap, seed=seed,
                                          device_flops_per_second=None if device_tflops is None else device_tflops * 1e12)
    report = build_report(results, options)
    advice = report.settings.get("advice") or {}
    table = advice_table(advice)
    if table is None:
        console.print(f"No advice: {advice.get('why', 'nothing to compare')}.")
        return
    out = Table(title=f"next runs for {advice['series']} minus {advice['baseline']} at {advice['target']}",
                title_justify="left", caption=table.caption)
    for header in table.headers:  # folded cells: the table fits the console's width (COLUMNS), never spills
        out.add_column(header, overflow="fold")
    for row in table.rows:
        out.add_row(*row)
    console.print(out)
