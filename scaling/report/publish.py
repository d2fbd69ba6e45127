"""Write a `Report` where users look for it: the study's storage and its MLflow experiment.

Files (under ``<storage>/<study>/report/``): ``report.html`` (self-contained), ``report.md``
with ``figures/*.png`` beside it, and ``report.json`` (the `Report`, exactly what the pages
show). The same files go to the study's MLflow ``report`` parent run as artifacts, with the
headline predictions as metrics and the verdict as the run's description. Only files under
``report/`` are written; trial results are never touched.

A report made with overrides of the spec's ``fit:`` settings (``mcscale report --law chinchilla``)
is a *variant*: it goes to its own folder ``report/<variant>/`` and its own MLflow run (phase
``report/<variant>``), so trying a setting never overwrites the study's own report.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from scaling.report.document import build_document
from scaling.report.figures import draw_figures
from scaling.report.render import FIGURES_DIR, to_html, to_markdown
from scaling.report.schema import Report
from scaling.report.verdict import headline_targets
from scaling.study.store import ResultStore

REPORT_DIR = "report"
REPORT_PHASE = "report"


@dataclass
class ReportFiles:
    """Where a report went: the study-relative names written and the MLflow run that holds them."""

    root: str
    names: list[str]
    run_id: str | None
    folder: str = REPORT_DIR  # study-relative: report/ or report/<variant>/
    phase: str = REPORT_PHASE  # the MLflow run's phase tag

    def uri(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{self.folder}/{name}"


def variant_folder(variant: str | None) -> str:
    """Study-relative folder of a report: ``report`` for the study's own, ``report/<variant>`` otherwise."""
    return REPORT_DIR if not variant else f"{REPORT_DIR}/{variant}"


def variant_phase(variant: str | None) -> str:
    """MLflow phase of a report's run: its own run per variant, so variants never share metric history."""
    return REPORT_PHASE if not variant else f"{REPORT_PHASE}/{variant}"


def render_files(report: Report) -> dict[str, bytes]:
    """Every file of the report by relative name; draws the figures and records their names in ``report``."""
    figures = draw_figures(report)
    report.figures = list(figures)
    blocks = build_document(report)
    files = {f"{FIGURES_DIR}/{name}": data for name, data in figures.items()}
    files["report.md"] = to_markdown(blocks).encode()
    files["report.html"] = to_html(blocks, figures, title=f"mcscale report: {report.study}").encode()
    files["report.json"] = report.to_json().encode()
    return files


def headline_metrics(report: Report) -> dict[str, float]:
    """Numbers worth charting across re-made reports: predictions at the largest target, the fit's parameters."""
    out: dict[str, float] = {}
    large, _ = headline_targets(report)
    for t in report.targets:
        if t.target == large:
            out[f"predicted_loss.{t.series}"] = t.loss
    for v in report.versus:
        if v.target == large:
            out[f"minus_baseline.{v.series}"] = v.difference
            if v.p_better is not None:
                out[f"p_lower_than_baseline.{v.series}"] = v.p_better
    degenerate = {(f["scope"], p) for f in report.settings.get("unidentified", []) for p in f.get("params") or [f["quantity"]]}
    for series, group in (report.fit.get("groups") or {}).items():
        for name, value in group.get("params", {}).items():
            if value is not None and (series, name) not in degenerate:  # an unidentified parameter is no result
                out[f"fit.{name}.{series}"] = value
    for series, group in (report.backtest.get("groups") or {}).items():
        out[f"backtest_mean_abs_rel_error.{series}"] = group["mean_abs_rel_error"]
    return out


def publish(report: Report, store: ResultStore, tracker=None,  # noqa: ANN001 - StudyTracker
            variant: str | None = None) -> ReportFiles:
    """Write the report's files to the store and, with a tracker, to the study's MLflow report run
    (a `variant` to its own folder and run, see the module doc)."""
    files = render_files(report)
    folder, phase = variant_folder(variant), variant_phase(variant)
    for name, data in files.items():
        store.write_bytes(f"{folder}/{name}", data)
    run_id = None
    if tracker is not None:
        run_id = tracker.phase_run(phase)
        with tempfile.TemporaryDirectory(prefix="mcscale-report-") as tmp:
            for name, data in files.items():
                path = Path(tmp) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            tracker.log_report(run_id, tmp, headline_metrics(report), report.verdict)
        tracker.finish_phase(phase)
    return ReportFiles(store.root, sorted(files), run_id, folder, phase)
