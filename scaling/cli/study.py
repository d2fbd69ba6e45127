"""Study commands: run, resume, sync, ls, show, ui (submit/status/logs/stop live in submit.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from scaling.cli.common import DEFAULT_STORAGE, err_console, output_console, user_errors_exit_2, verbose
from scaling.errors import UserInputError
from scaling.spec import load_spec, parse_spec_text

commands = typer.Typer()  # merged into the `mcscale` app by scaling.cli.app

_TABLE_COLUMNS = (  # (column, header, justify): what fits 120 terminal columns
    ("series", "series", "left"), ("size_label", "size", "right"), ("seed", "seed", "right"),
    ("status", "status", "left"), ("params_nonembed", "params", "right"), ("tokens", "tokens", "right"),
    ("step", "step", "right"), ("val_loss", "val loss", "right"), ("val_bpb", "bpb", "right"),
    ("mqar_acc", "mqar", "right"), ("wall_seconds", "seconds", "right"))


def _size_value(row) -> float:  # noqa: ANN001
    """A trial's rung for sorting: its size label read as a number (1M after 200K), else its parameters."""
    from scaling.models.ladder import parse_size

    try:
        return parse_size(str(row.get("size_label")))
    except UserInputError:
        value = row.get("params_nonembed")
        return float("inf") if _missing(value) else float(value)


def _cell(column: str, value) -> str:  # noqa: ANN001
    from scaling.models.ladder import format_count

    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if column in ("params_nonembed", "tokens"):
        return format_count(float(value))
    if column in ("step", "seed"):
        return str(int(value))
    if column == "wall_seconds":
        return f"{float(value):.0f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _trial_table(trials, title: str) -> Table:  # noqa: ANN001
    """One row per trial, grouped by series (the curve it belongs to) with sizes in order of value;
    the seed column only when the study has several seeds, the phase only when it tuned."""
    table = Table(title=title)
    rows = [{k: (None if _missing(v) else v) for k, v in row.items()} for _, row in trials.iterrows()]
    for row in rows:
        row["series"] = row.get("series") or row.get("arch")
    series_order = {s: i for i, s in enumerate(dict.fromkeys(str(r["series"]) for r in rows))}
    rows.sort(key=lambda r: (r.get("phase") != "tune", series_order[str(r["series"])], _size_value(r),
                             r.get("seed") or 0, str(r.get("trial_id"))))
    columns = [c for c in _TABLE_COLUMNS if c[0] != "seed" or len({r.get("seed") for r in rows}) > 1]
    if len({r.get("phase") for r in rows}) > 1:
        columns.insert(0, ("phase", "phase", "left"))
    for name, header, justify in columns:
        table.add_column(header, justify=justify, no_wrap=name == "series")
    for row in rows:
        table.add_row(*[_cell(name, row.get(name)) for name, _, _ in columns])
    return table


def _missing(value) -> bool:  # noqa: ANN001
    return value is None or (isinstance(value, float) and value != value)


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
        report: bool = typer.Option(True, "--report/--no-report", help="Fit, backtest and write the report after the ladder."),
        extend: bool = typer.Option(False, "--extend", help="Let a changed spec extend the recorded study: only "
                                    "added architectures, segment lengths, sizes or seeds (existing trials keep "
                                    "their settings and results).")) -> None:
    """Run a study end to end on Ray: tune (if the spec asks), the ladder, then the scaling-law fit and
    report (<storage>/<name>/report/report.html); resumable. A spec that differs from the one the study
    recorded is refused (exit 2, naming the fields) unless it gets a new name or --extend applies."""
    study = load_spec(spec)
    from scaling.study.tune import run_study

    console = output_console()
    summary = run_study(study, address=address, spec_text=open(spec).read(), console=console, report=report,
                        extend=extend)
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
    spec = parse_spec_text(text, source=f"{store.root}/spec.yaml", field=f"{store.root}/spec.yaml")
    from scaling.study.identity import check_resume

    check_resume(store, study, spec)  # the folder holds NAME's spec, and NAME is read and written at --storage
    spec = spec.model_copy(update={"storage": store.base_uri, "s3_endpoint": s3_endpoint or spec.s3_endpoint})
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
    from scaling.redact import redact_uri
    from scaling.study.mlflow_location import artifact_env, resolve_location
    from scaling.study.store import ResultStore
    from scaling.study.sync import sync_study

    store = ResultStore(storage, study, s3_endpoint)
    if not store.exists():
        raise UserInputError("STUDY", f"no study {study!r} under {store.root}",
                             "check the name with `mcscale ls --storage ...`")
    # The study's own MLflow location (recorded in its study.json), from whatever folder this runs in.
    location = resolve_location(store.root, study, store.read_json("study.json"), explicit=tracking_uri)
    for key, value in artifact_env(store.root, store.storage.endpoint).items():
        os.environ.setdefault(key, value)
    tracking_uri = location.uri
    result = sync_study(store, storage, tracking_uri, location.artifact_location)
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

    _check_local_storage(storage, "--storage")

    table = Table(title=f"studies in {storage}")
    for col in ("study", "status", "trials", "completed", "not learned", "diverged", "other"):
        table.add_column(col)
    for name in list_studies(storage, s3_endpoint):
        store = ResultStore(storage, name, s3_endpoint)
        state = store.read_json("study.json") or {}
        trials = store.read_trials()
        counts = trials["status"].value_counts().to_dict() if len(trials) else {}
        other = len(trials) - counts.get("completed", 0) - counts.get("diverged", 0)
        not_learned = int((trials["learned"] == 0).sum()) if len(trials) else 0  # completed, no better than uniform
        table.add_row(name, str(state.get("status", "-")), str(len(trials)), str(counts.get("completed", 0)),
                      str(not_learned), str(counts.get("diverged", 0)), str(other))
    output_console().print(table)


@commands.command("show")
@user_errors_exit_2
def show(study: str = typer.Argument(..., help="Study name."),
         storage: str = typer.Option(DEFAULT_STORAGE, help="Storage location: a folder or s3://bucket/prefix."),
         s3_endpoint: Optional[str] = typer.Option(None, help="Endpoint of an S3-compatible store.")) -> None:
    """Show a study's trial table."""
    from scaling.study.store import ResultStore

    _check_local_storage(storage, "--storage")
    store = ResultStore(storage, study, s3_endpoint)
    if not store.exists():
        raise UserInputError("STUDY", f"no study {study!r} under {store.root}", "list studies with `mcscale ls`")
    output_console().print(_trial_table(store.read_trials(), f"study {study} ({store.root})"))


def _check_local_storage(storage: str, option: str) -> None:
    """A local storage location must be an existing folder: listing a file or a typo must not print an
    empty table and exit 0. (S3 locations are checked when they are listed.)"""
    from pathlib import Path

    if "://" in storage.strip() and not storage.strip().startswith("file://"):
        return
    folder = Path(storage.strip().removeprefix("file://")).expanduser()
    if folder.is_file():
        raise UserInputError(option, f"{folder} is a file, not a storage folder",
                             "pass the folder that holds the studies (default ./mcscale-runs) or s3://bucket/prefix")
    if not folder.is_dir():
        raise UserInputError(option, f"no storage folder {folder}",
                             "check the path (studies are kept under ./mcscale-runs by default) or run a study first")


def _check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise UserInputError("--port", f"{port} is not a TCP port", "pass a port between 1 and 65535, e.g. --port 5000")


def _check_port_free(port: int) -> None:
    """Nothing on 127.0.0.1 may listen on the UI's port yet (else the server fails after we said it started)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise UserInputError("--port", f"cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}; another "
                                 "server may be using it)", "pass a free port, e.g. --port 5001") from None


def serve_mlflow_ui(command: list[str], env: dict[str, str]) -> int:
    """Run the MLflow UI server as a child and end it with this process.

    The child runs in its own process group, so SIGINT (Ctrl-C), SIGTERM and SIGHUP to `mcscale ui`
    are forwarded to the whole group (the server and its worker) and waited for: no orphan keeps
    serving. Returns the exit code: the child's own, or 128 + the signal that ended the UI.
    """
    child = subprocess.Popen(command, env=env, start_new_session=True)
    received: list[int] = []

    def forward(signum: int, _frame) -> None:  # noqa: ANN001
        received.append(signum)
        try:
            os.killpg(child.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        while True:
            try:
                code = child.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        try:
            os.killpg(child.pid, signal.SIGTERM)  # the server's worker, should it outlive the server
        except ProcessLookupError:
            pass
        if child.poll() is None:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 + received[0] if received else code


@commands.command("ui")
@user_errors_exit_2
def ui(study: str = typer.Argument(..., help="Study name."),
       storage: str = typer.Option(DEFAULT_STORAGE, help="Storage location of the study: a folder or s3://bucket/prefix."),
       s3_endpoint: Optional[str] = typer.Option(None, help="Endpoint of an S3-compatible store."),
       port: int = typer.Option(5000, help="Port for the MLflow UI (bound to 127.0.0.1)."),
       tracking_uri: Optional[str] = typer.Option(None, help="Tracking URI, if not the one the study recorded.")) -> None:
    """Start the MLflow UI on the study's tracking store (the one recorded in its study.json), bound to 127.0.0.1;
    it stops with this command (Ctrl-C, SIGTERM)."""
    from urllib.parse import urlparse

    from scaling.redact import redact_uri
    from scaling.study.mlflow_location import artifact_env, existing_location, sqlite_file
    from scaling.study.store import ResultStore

    _check_port(port)
    if tracking_uri is not None and urlparse(tracking_uri).scheme.split("+")[0] not in (
            "http", "https", "sqlite", "postgresql", "mysql", "mssql", "file"):
        raise UserInputError("--tracking-uri", f"{redact_uri(tracking_uri)!r} is not an MLflow tracking store URI",
                             "pass http(s)://host:port (a server), sqlite:///path/mlflow.db or postgresql+psycopg2://...")
    store = ResultStore(storage, study, s3_endpoint)
    if tracking_uri is None:
        location = existing_location(store.root, study, store.read_json("study.json"))
        if location is None:
            raise UserInputError("STUDY", f"no MLflow store recorded for study {study!r} under {store.root}",
                                 "pass --storage where the study ran, or --tracking-uri for a server")
        tracking_uri = location.uri
    db = sqlite_file(tracking_uri)
    if db is not None and not db.exists():
        raise UserInputError("STUDY", f"no MLflow store for study {study!r} at {db}",
                             "pass --storage where the study ran, or --tracking-uri for a server")
    if tracking_uri.startswith("http"):
        output_console().print(f"The study is tracked on a server: open {redact_uri(tracking_uri)} in a browser.")
        return
    _check_port_free(port)
    output_console().print(f"MLflow UI for {study} at http://127.0.0.1:{port} (Ctrl-C to stop)")
    # The store URI travels in the environment (mlflow reads $MLFLOW_BACKEND_STORE_URI), never on the
    # command line, where `ps` would show a database password to every user of the machine.
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_BACKEND_STORE_URI=tracking_uri)
    for key, value in artifact_env(store.root, store.storage.endpoint).items():
        env.setdefault(key, value)
    quiet = [] if verbose() else ["--uvicorn-opts", "--no-access-log --log-level warning"]
    if not verbose():  # the server's own deprecation warnings (starlette) are not about the study
        env.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    raise typer.Exit(serve_mlflow_ui([sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1",
                                      "--port", str(port), "--workers", "1", *quiet], env=env))
