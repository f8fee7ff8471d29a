"""The report as data: sections of paragraphs, bullet lists, tables and plots.

The content is built once (report/build.py) and written twice: as markdown
(report/markdown.py) and as one self-contained HTML page (report/html.py). A table cell
keeps its text as shown and the number it sorts by, so the HTML page sorts numerically
and both renderings show the same figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Cell:
    """One table cell: `text` as shown; `sort` the value it sorts by (None: sorts last);
    `best` marks the column's winner; `title` a tooltip (the HTML page) saying where the
    figure comes from."""

    text: str
    sort: float | str | None = None
    best: bool = False
    title: str | None = None


@dataclass
class Table:
    """A table: `id` is unique in the report (an HTML anchor and the CSV's name when the
    table is also written as one); `right` the indices of numeric, right-aligned columns;
    `notes` lines printed under it."""

    id: str
    caption: str
    headers: list[str]
    rows: list[list[Cell]]
    right: set[int] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Plot:
    """A plot written to the report's plots/ folder: `png` and `svg` relative to the
    report's directory; `caption` says what is drawn and from which figures."""

    name: str
    title: str
    png: Path
    svg: Path
    caption: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


Block = Paragraph | Bullets | Table | Plot


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class ReportDoc:
    title: str
    sections: list[Section] = field(default_factory=list)

    def tables(self) -> list[Table]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Table)]

    def plots(self) -> list[Plot]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Plot)]
