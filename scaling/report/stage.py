"""The report stage as users run it: after a study's ladder (`mcscale run`) or alone (`mcscale report`).

Why shared: both paths must read the same results, fit with the same settings, show the same
progress and publish to the same places; only where the options come from differs.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from scaling.report.analysis import ReportOptions, build_report
from scaling.report.inputs import StudyResults, load_study
from scaling.report.publish import ReportFiles, publish
from scaling.report.schema import Report
from scaling.spec import StudySpec
from scaling.study.store import ResultStore

_STAGE_NAMES = {"fit": "bootstrap refits of the fit", "backtest": "bootstrap refits of the backtest"}


def study_tracking(store: ResultStore, spec: StudySpec, explicit: str | None = None):  # noqa: ANN201
    """Where the study records its runs (`TrackingLocation`): the location in its study.json
    (scaling.study.mlflow_location), the same from whatever folder the report is made; `explicit`
    (--tracking-uri) wins; a study recorded before locations were kept gets the one `mcscale run` would choose."""
    import os

    from scaling.study.mlflow_location import artifact_env, resolve_location

    for key, value in artifact_env(store.root, store.storage.endpoint).items():  # S3 artifacts, custom endpoint
        os.environ.setdefault(key, value)
    return resolve_location(store.root, spec.name, store.read_json("study.json"), spec.tracking_uri, explicit)


@contextmanager
def fit_progress(console: Console) -> Iterator:
    """A progress callback ``(stage, done, total)`` drawing one bar per bootstrap stage."""
    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(_STAGE_NAMES.get(stage, stage), total=total)
        bars.update(tasks[stage], completed=done, total=total)

    with bars:
        yield update


def make_report(store: ResultStore, console: Console, options: ReportOptions | None = None,
                tracking_uri: str | None = None, use_mlflow: bool = True,
                results: StudyResults | None = None, tracker=None,  # noqa: ANN001
                variant: str | None = None) -> tuple[Report, ReportFiles]:
    """Load, fit, backtest, compare, draw and publish; returns the report and where it went
    (a `variant`, named from overrides of the spec's settings, to its own folder and MLflow run)."""
    results = results or load_study(store)
    options = options or ReportOptions.from_settings(results.fit_settings)
    console.print(f"[bold]report[/] {results.name}: fitting a {options.law} law"
                  + (f" in {options.x}" if options.law == "power" else "")
                  + f" with {options.bootstrap} bootstrap resamples, then a backtest")
    with fit_progress(console) as progress:
        report = build_report(results, options, progress=progress)
    if use_mlflow and tracker is None:
        from scaling.study.tracking import StudyTracker

        location = study_tracking(store, results.spec, tracking_uri)
        tracker = StudyTracker(location.uri, results.name, artifact_location=location.artifact_location)
    files = publish(report, store, tracker if use_mlflow else None, variant=variant)
    return report, files
