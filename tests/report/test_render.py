"""The pages: every section is there, the HTML is one self-contained file, Markdown and HTML say
the same numbers, and text from the data cannot break the markup."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

from scaling.report.document import Bullets, FigureRef, Heading, Table, build_document
from scaling.report.publish import render_files
from scaling.report.render import to_html, to_markdown
from tests.report.factories import sample_report

SECTIONS = ["Details", "Predictions at the targets", "Loss against compute and parameters",
            "Segment length (number of cached segments)", "Recall accuracy against scale",
            "Cost per token against context length", "Backtest: predicting the largest runs from the smaller ones",
            "Which run next", "Fit diagnostics", "Caveats", "Data"]


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.srcs: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        self.tags.append(tag)
        attrs = dict(attrs)
        if "src" in attrs:
            self.srcs.append(attrs["src"])
        if "href" in attrs:
            self.links.append(attrs["href"])


def test_document_has_every_section_in_order():
    report = sample_report()
    report.figures = ["loss_vs_compute.png", "loss_vs_params.png", "segment_effect.png", "recall_vs_scale.png",
                      "cost_vs_context.png", "residuals.png"]
    blocks = build_document(report)
    headings = [b.text for b in blocks if isinstance(b, Heading) and b.level == 2]
    assert headings == SECTIONS
    assert {b.name for b in blocks if isinstance(b, FigureRef)} == set(report.figures)
    caveats = next(b for i, b in enumerate(blocks) if isinstance(b, Bullets) and getattr(blocks[i - 1], "text", "") == "Caveats")
    assert caveats.items == report.caveats
    predictions = next(b for b in blocks if isinstance(b, Table) and "95% interval (a new run)" in b.headers)
    assert len(predictions.rows) == len(report.targets)


def test_sections_without_data_say_what_to_add():
    report = sample_report(segment_sweep=False, recall=False, costs=False)
    text = to_markdown(build_document(report))
    assert "varies no architecture's segment length" in text
    assert "ran no recall evaluation" in text
    assert "No cost table" in text


def test_html_is_self_contained_with_every_figure_embedded():
    report = sample_report()
    files = render_files(report)
    page = files["report.html"].decode()
    parser = _Collect()
    parser.feed(page)
    assert "script" not in parser.tags and "link" not in parser.tags
    assert parser.srcs and all(src.startswith("data:image/png;base64,") for src in parser.srcs)
    embedded = {base64.b64decode(src.split(",", 1)[1]) for src in parser.srcs}
    assert embedded == {data for name, data in files.items() if name.startswith("figures/")}
    assert len(parser.srcs) == len(report.figures) == 6
    assert not re.search(r"https?://", page)


def test_markdown_links_the_figure_files_written_beside_it():
    files = render_files(sample_report())
    md = files["report.md"].decode()
    linked = set(re.findall(r"\]\((figures/[a-z_]+\.png)\)", md))
    assert linked == {name for name in files if name.startswith("figures/")}


def test_markdown_and_html_show_the_same_numbers():
    report = sample_report()
    blocks = build_document(report)
    md, page = to_markdown(blocks), to_html(blocks, {})
    numbers_md = re.findall(r"\d+\.\d{3}", md)
    numbers_html = re.findall(r"\d+\.\d{3}", page)
    assert numbers_md and sorted(numbers_md) == sorted(numbers_html)


def test_text_from_the_data_is_escaped():
    report = sample_report()
    report.caveats.append("<script>alert('x')</script>")
    report.dropped[0].reason = "odd | reason"
    blocks = build_document(report)
    page = to_html(blocks, {})
    assert "<script>" not in page and "&lt;script&gt;" in page
    md = to_markdown(blocks)
    assert "<script>" not in md and "&lt;script&gt;" in md
    assert "odd \\| reason" in md  # a pipe in a table cell does not split the cell


def test_json_file_is_the_report():
    report = sample_report()
    files = render_files(report)
    from scaling.report.schema import Report

    assert Report.from_json(files["report.json"].decode()) == report


def test_withheld_targets_are_not_tabulated_but_explained():
    report = sample_report()
    first = report.targets[0].target
    for t in report.targets:
        if t.target == first:
            t.unidentified = "the N and D terms are not separately identified; vary the budget"
    blocks = build_document(report)
    predictions = next(b for b in blocks if isinstance(b, Table) and "95% interval (a new run)" in b.headers)
    assert all(row[0] != first for row in predictions.rows)
    assert len(predictions.rows) == sum(1 for t in report.targets if not t.unidentified)
    text = to_markdown(blocks)
    assert f"Withheld (1 target: {first})" in text
    assert "vary the budget" in text


def test_differences_on_the_shared_floor_are_withheld_with_the_reason():
    """Every series on the shared floor at every target (the quickstart's power law): the report
    prints no difference, no P(lower) and no "resolved" there, but says why and what would help."""
    from scaling.report.verdict import verdict_for
    from tests.report.factories import on_the_shared_floor

    report = on_the_shared_floor(sample_report())
    report.verdict = verdict_for(report)
    text = to_markdown(build_document(report))
    predictions = next(b for b in build_document(report) if isinstance(b, Table) and "95% interval (a new run)" in b.headers)
    minus = predictions.headers.index(f"minus {report.baseline}")
    assert {row[minus] for row in predictions.rows} == {"baseline", "withheld"}
    assert "Differences withheld: the differences between series at" in text and "zero by construction" in text
    assert "fit.shared_E: false" in text  # what would identify them
    assert "P(lower) =" not in report.verdict and "Resolved" not in report.verdict
    assert "zero by construction of the shared floor" in report.verdict
    assert not re.search(r"[+-]\d\.\de-0[5-9]", text)  # no "-1.0e-05 lower" anywhere
    assert "No advice: there is no headline difference to narrow" in text
