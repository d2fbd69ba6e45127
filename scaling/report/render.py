"""Blocks -> Markdown and self-contained HTML.

Why self-contained HTML: the report is passed around (attached to an MLflow run, mailed,
opened from S3), so the page embeds its figures as base64 PNGs and its style inline, and
needs nothing beside it. The Markdown page links the PNG files written next to it.
"""

from __future__ import annotations

import base64
import html
from typing import Mapping

from scaling.report.document import Block, Bullets, FigureRef, Heading, Paragraph, Table

FIGURES_DIR = "figures"

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1150px; color: #1d1d1f; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.7em; border-bottom: 2px solid #333; padding-bottom: .2em; }
h2 { font-size: 1.3em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.1em; }
table { border-collapse: collapse; margin: .6em 0 1.4em; font-size: .85em; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: right; vertical-align: top; }
th { background: #f2f2f2; }
td:first-child, th:first-child { text-align: left; }
caption { caption-side: bottom; text-align: left; color: #555; font-size: .9em; padding-top: .3em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; }
section.verdict p { background: #f6f8fa; border-left: 4px solid #333; padding: .8em 1em; }
"""


# ---------------------------------------------------------------------------- Markdown
def _md_text(text: str) -> str:
    """Text that Markdown renderers show as written: no raw HTML from the data gets through."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block], figures_dir: str = FIGURES_DIR) -> str:
    """GitHub-flavoured Markdown; figures are links to ``figures_dir/<name>``."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + _md_text(b.text))
        elif isinstance(b, Paragraph):
            out.append(_md_text(b.text))
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {_md_text(item)}" for item in b.items))
        elif isinstance(b, FigureRef):
            out.append(f"![{b.caption}]({figures_dir}/{b.name})\n\n*{b.caption}*")
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in b.headers) + " |",
                     "|" + "|".join("---" for _ in b.headers) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            if b.caption:
                lines.append(f"\n*{_md_text(b.caption)}*")
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


# ---------------------------------------------------------------------------- HTML
def _table_html(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in t.rows)
    caption = f"<caption>{html.escape(t.caption)}</caption>" if t.caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(blocks: list[Block], figures: Mapping[str, bytes], title: str = "mcscale report") -> str:
    """One HTML file with every figure embedded as a data URI (no external files or scripts)."""
    parts: list[str] = []
    in_verdict = False
    for b in blocks:
        if isinstance(b, Heading):
            if in_verdict:
                parts.append("</section>")
                in_verdict = False
            level = min(max(b.level, 1), 6)
            parts.append(f"<h{level}>{html.escape(b.text)}</h{level}>")
            if b.text == "In short":  # scaling.report.document.HEADLINE_HEADING: the answer, set apart
                parts.append('<section class="verdict">')
                in_verdict = True
        elif isinstance(b, Paragraph):
            parts.append(f"<p>{html.escape(b.text)}</p>")
        elif isinstance(b, Bullets):
            parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, FigureRef):
            data = figures.get(b.name)
            if data is None:
                parts.append(f"<p><em>figure {html.escape(b.name)} is missing</em></p>")
                continue
            uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
            parts.append(f'<figure><img src="{uri}" alt="{html.escape(b.caption)}">'
                         f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")
        elif isinstance(b, Table):
            parts.append(_table_html(b))
    if in_verdict:
        parts.append("</section>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
