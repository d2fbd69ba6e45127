"""Study commands: run, resume, sync, ls, show, ui (submit/status/logs/stop live in submit.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from scaling.cli.common import DEFAULT_STORAGE, err_console, output_console, user_errors_exit_2
from scaling.errors import UserInputError
from scaling.spec import load_spec, parse_spec

commands = typer.Typer()  # merged into the `mcscale` app by scaling.cli.app

def _trial_table(trials, title: str) -> Table:  # noqa: ANN001
    table = Table(title=title)
    columns = ["trial_id", "status", "arch", "size_label", "n_segments", "params_nonembed", "step", "tokens",
               "val_loss", "val_bpb", "mqar_acc", "wall_seconds"]
    for col in columns:
        table.add_column(col.replace("_", " "), justify="left" if col in ("trial_id", "status", "arch") else "right")
    for _, row in trials.iterrows():
        cells = []
        for col in columns:
            value = row.get(col)
            if value is None or (isinstance(value, float) and value != value):
                cells.append("-")
            elif isinstance(value, float):
                cells.append(f"{value:.4g}")
            else:
                cells.append(str(value))
        table.add_row(*cells)
    return table


def _print_summary(console: Console, summary) -> None:  # noqa: ANN001
    """The study's table and outcome; an interrupted study exits 128 + the signal (130 SIGINT, 143 SIGTERM)."""
    trials = summary.trials
    console.print(_trial_table(trials, f"study {summary.name}"))
    if summary.mlflow_pending:
        err_console.print(f"[yellow]MLflow:[/] {summary.mlflow_pending} records wait in {summary.outbox} "
                          f"({summary.mlflow_problem or 'not yet replayed'}); `mcscale sync {summary.name}` "
                          "replays them (and backfills from the results) once the tracking store answers.",
                          highlight=False, soft_wrap=True)
    if summary.interrupted is not None:
        import signal

        done = int(trials["status"].isin(["completed", "diverged"]).sum()) if len(trials) else 0
        err_console.print(f"[bold yellow]interrupted[/] by {signal.Signals(summary.interrupted).name}: {done} of "
                          f"{summary.planned} trials finished; no report was made. `mcscale resume {summary.name} "
                          f"--storage ...` finishes the study.", highlight=False, soft_wrap=True)
        raise typer.Exit(code=128 + int(summary.interrupted))
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    console.print(f"{len(trials)} trials ({', '.join(f'{v} {k}' for k, v in counts.items())}) in "
                  f"{summary.seconds:.0f} s. Results: {summary.root}; MLflow: {summary.tracking_uri} "
                  f"(browse with `mcscale ui {summary.name}`).")
    if summary.report is not None:
        from scaling.cli.report import print_report_summary

        print_report_summary(console, summary.report, summary.report_files)
    elif summary.report_error:
        console.print(f"[yellow]no report yet:[/] {summary.report_error}", soft_wrap=True)
        console.print(f"The results are kept; once the cause is fixed, `mcscale report {summary.name}` makes the report.")


@commands.command("run")
@user_errors_exit_2
def run(spec: str = typer.Argument(..., help="Study spec (YAML), e.g. studies/quickstart.yaml."),
        address: Optional[str] = typer.Option(None, help="Ray cluster address (default: embedded local Ray)."),
        report: bool = typer.Option(True, "--report/--no-report", help="Fit, backtest and write the report after the ladder.")) -> None:
    """Run a study end to end on Ray: tune (if the spec asks), the ladder, then the scaling-law fit and
    report (<storage>/<name>/report/report.html); resumable."""
    study = load_spec(spec)
    from scaling.study.tune import run_study

    console = output_console()
    summary = run_study(study, address=address, spec_text=open(spec).read(), console=console, report=report)
    _print_summary(console, summary)


@commands.command("resume")
@user_errors_exit_2
def resume(study: str = typer.Argument(..., help="Study name (as in the spec's `name`)."),
           storage: str = typer.Option(DEFAULT_STORAGE, help="Storage location: a folder or s3://bucket/prefix."),
           s3_endpoint: Optional[str] = typer.Option(None, help="Endpoint of an S3-compatible store."),
           address: Optional[str] = typer.Option(None, help="Ray cluster address (default: embedded local Ray)."),
           report: bool = typer.Option(True, "--report/--no-report", help="Fit, backtest and write the report after the ladder.")) -> None:
    """Continue an interrupted study from its storage; finished trials are not rerun; the report is remade."""
    from scaling.study.store import ResultStore
    from scaling.study.tune import run_study

    store = ResultStore(storage, study, s3_endpoint)
    text = store.read_text("spec.yaml")
    if text is None:
        raise UserInputError("STUDY", f"no study {study!r} under {store.root}",
                             "check the name with `mcscale ls --storage ...` or start it with `mcscale run SPEC`")
    import yaml

    spec = parse_spec(yaml.safe_load(text), source=f"{store.root}/spec.yaml")
    console = output_console()
    summary = run_study(spec, address=address, console=console, report=report)
    _print_summary(console, summary)


@commands.command("sync")
@user_errors_exit_2
def sync(study: str = typer.Argument(..., help="Study name (as in the spec's `name`)."),
         storage: str = typer.Option(DEFAULT_STORAGE, help="Storage location: a folder or s3://bucket/prefix."),
         s3_endpoint: Optional[str] = typer.Option(None, help="Endpoint of an S3-compatible store."),
         tracking_uri: Optional[str] = typer.Option(None, help="Tracking URI (default: the study's own).")) -> None:
    """Bring MLflow up to date with the study: replay MLflow records the driver could not deliver, then
    backfill every trial's run, curves and status from the result store. Safe to repeat."""
    import yaml

    from scaling.study.store import ResultStore
    from scaling.study.sync import sync_study
    from scaling.study.tracking import redact_uri
    from scaling.study.tune import tracking_uri_for

    store = ResultStore(storage, study, s3_endpoint)
    if not store.exists():
        raise UserInputError("STUDY", f"no study {study!r} under {store.root}",
                             "check the name with `mcscale ls --storage ...`")
    if tracking_uri is None:
        text = store.read_text("spec.yaml")
        spec = parse_spec(yaml.safe_load(text), source=f"{store.root}/spec.yaml") if text else None
        if spec is None:
            raise UserInputError("--tracking-uri", f"the study under {store.root} has no spec.yaml to take its "
                                 "tracking URI from", "pass --tracking-uri")
        tracking_uri = tracking_uri_for(spec.model_copy(update={"storage": storage, "s3_endpoint": s3_endpoint
                                                                 or spec.s3_endpoint}))
    result = sync_study(store, storage, tracking_uri)
    console = output_console()
    console.print(f"MLflow ({redact_uri(tracking_uri)}) for {study}: {result.outbox_replayed} outbox records "
                  f"replayed, {result.runs_created} runs created, {result.points_added} metric points added, "
                  f"{result.runs_closed} runs closed, over {result.trials} trials in the store.", highlight=False,
                  soft_wrap=True)
    for change in result.closed:
        console.print(f"  closed {change}", highlight=False)
    for problem in result.problems:
        err_console.print(f"[yellow]not synced:[/] {problem}", highlight=False, soft_wrap=True)
    if result.outbox_pending:
        err_console.print(f"[yellow]{result.outbox_pending} outbox records still wait[/] (the tracking store "
                          "stopped answering); run `mcscale sync` again.", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1)


@commands.command("ls")
@user_errors_exit_2
def ls(storage: str = typer.Option(DEFAULT_STORAGE, help="Storage location: a folder or s3://bucket/prefix."),
       s3_endpoint: Optional[str] = typer.Option(None, help="Endpoint of an S3-compatible store.")) -> None:
    """List the studies in a storage location with their trial counts."""
    from scaling.study.store import ResultStore, list_studies

    table = Table(title=f"studies in {storage}")
    for col in ("study", "status", "trials", "completed", "diverged", "other"):
        table.add_column(col)
    for name in list_studies(storage, s3_endpoint):
        store = ResultStore(storage, name, s3_endpoint)
        state = store.read_json("study.json") or {}
        trials = store.read_trials()
        counts = trials["status"].value_counts().to_dict() if len(trials) else {}
        other = len(trials) - counts.get("completed", 0) - counts.get("diverged", 0)
        table.add_row(name, str(state.get("status", "-")), str(len(trials)), str(counts.get("completed", 0)),
                      str(counts.get("diverged", 0)), str(other))
    output_console().print(table)


@commands.command("show")
@user_errors_exit_2
def show(study: str = typer.Argument(..., help="Study name."),
         storage: str = typer.Option(DEFAULT_STORAGE, help="Storage location: a folder or s3://bucket/prefix."),
         s3_endpoint: Optional[str] = typer.Option(None, help="Endpoint of an S3-compatible store.")) -> None:
    """Show a study's trial table."""
    from scaling.study.store import ResultStore

    store = ResultStore(storage, study, s3_endpoint)
    if not store.exists():
        raise UserInputError("STUDY", f"no study {study!r} under {store.root}", "list studies with `mcscale ls`")
    output_console().print(_trial_table(store.read_trials(), f"study {study} ({store.root})"))


@commands.command("ui")
@user_errors_exit_2
def ui(study: str = typer.Argument(..., help="Study name."),
       storage: str = typer.Option(DEFAULT_STORAGE, help="Local storage folder of the study."),
       port: int = typer.Option(5000, help="Port for the MLflow UI (bound to 127.0.0.1)."),
       tracking_uri: Optional[str] = typer.Option(None, help="Tracking URI if the study used a server.")) -> None:
    """Start the MLflow UI on the study's tracking store, bound to 127.0.0.1."""
    from pathlib import Path

    if tracking_uri is None:
        db = Path(storage).expanduser().resolve() / study / "mlflow.db"
        if not db.exists():
            raise UserInputError("STUDY", f"no MLflow store for study {study!r} at {db}",
                                 "pass --storage where the study ran, or --tracking-uri for a server")
        tracking_uri = f"sqlite:///{db}"
    if tracking_uri.startswith("http"):
        output_console().print(f"The study is tracked on a server: open {tracking_uri} in a browser.")
        return
    output_console().print(f"MLflow UI for {study} at http://127.0.0.1:{port} (Ctrl-C to stop)")
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    raise typer.Exit(subprocess.call([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
                                      "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], env=env))
