"""The extrapolation report: study results -> fit, backtest, comparison -> HTML, Markdown, JSON.

Typical use::

    from scaling.report import ReportOptions, build_report, load_study, publish
    results = load_study(ResultStore("./mcscale-runs", "quickstart"))
    report = build_report(results, ReportOptions.from_settings(results.fit_settings))
    publish(report, store, tracker)   # report/report.html, report.md, report.json (+ MLflow)
"""

from scaling.report.analysis import ReportOptions, build_report
from scaling.report.inputs import StudyResults, load_study, select_points
from scaling.report.publish import ReportFiles, publish, render_files
from scaling.report.schema import Report

__all__ = ["Report", "ReportFiles", "ReportOptions", "StudyResults", "build_report", "load_study", "publish",
           "render_files", "select_points"]
