"""The report's building blocks: headings, paragraphs, tables, figure references and lists.

Why a module of its own: every section module (document, recall, in_range) builds these, and
render.py turns them into Markdown or HTML; kept apart, the section modules import it and not
each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class FigureRef:
    name: str  # file name of the PNG, e.g. loss_vs_compute.png
    caption: str


@dataclass
class Bullets:
    items: list[str] = field(default_factory=list)


Block = Union[Heading, Paragraph, Table, FigureRef, Bullets]
