"""The report as GitHub-flavoured markdown (report.md): the same sections, tables and
plots as the HTML page, plots linked as PNG files beside it."""

from __future__ import annotations

from pytest_vlmbench.report.model import Bullets, Cell, Paragraph, Plot, ReportDoc, Table
from pytest_vlmbench.report.table import markdown as markdown_table


def _escape(text: str) -> str:
    """A table cell's text: `|` escaped, line breaks as spaces."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _cell(cell: Cell) -> str:
    text = _escape(cell.text)
    return f"**{text}**" if cell.best and text != "-" else text


def table_lines(table: Table) -> list[str]:
    lines = [f"**{_escape(table.caption)}**", ""] if table.caption else []
    if not table.rows:
        return [*lines, "(no rows)"]
    lines += markdown_table([_escape(h) for h in table.headers],
                            [[_cell(c) for c in row] for row in table.rows],
                            right=table.right)
    if table.notes:
        lines.append("")
        lines += [f"- {n}" for n in table.notes]
    return lines


def render(doc: ReportDoc) -> str:
    lines = [f"# {doc.title}", ""]
    lines += [f"- [{s.title}](#{s.id})" for s in doc.sections]
    for section in doc.sections:
        lines += ["", f'<a id="{section.id}"></a>', "", f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Paragraph):
                lines += [block.text, ""]
            elif isinstance(block, Bullets):
                lines += [f"- {item}" for item in block.items]
                lines.append("")
            elif isinstance(block, Table):
                lines += [*table_lines(block), ""]
            elif isinstance(block, Plot):
                lines += [f"![{block.title}]({block.png.as_posix()})", "",
                          f"*{block.caption}* ([SVG]({block.svg.as_posix()}))", ""]
    return "\n".join(lines).rstrip() + "\n"
