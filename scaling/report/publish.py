"""Write a `Report` where users look for it: the study's storage and its MLflow experiment.

Files (under ``<storage>/<study>/report/``): ``report.html`` (self-contained), ``report.md``
with ``figures/*.png`` beside it, and ``report.json`` (the `Report`, exactly what the pages
show). The same files go to the study's MLflow ``report`` parent run as artifacts, with the
headline predictions as metrics and the verdict as the run's description. Only files under
``report/`` are written; trial results are never touched.
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

    def uri(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{REPORT_DIR}/{name}"


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


def publish(report: Report, store: ResultStore, tracker=None) -> ReportFiles:  # noqa: ANN001 - StudyTracker
    """Write the report's files to the store and, with a tracker, to the study's MLflow report run."""
    files = render_files(report)
    for name, data in files.items():
        store.write_bytes(f"{REPORT_DIR}/{name}", data)
    run_id = None
    if tracker is not None:
        run_id = tracker.phase_run(REPORT_PHASE)
        with tempfile.TemporaryDirectory(prefix="mcscale-report-") as tmp:
            for name, data in files.items():
                path = Path(tmp) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            tracker.log_report(run_id, tmp, headline_metrics(report), report.verdict)
        tracker.finish_phase(REPORT_PHASE)
    return ReportFiles(store.root, sorted(files), run_id)
