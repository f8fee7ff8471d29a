"""The report as one self-contained HTML page: it opens offline, from a mail attachment or
a CI artifact, with nothing fetched.

Styles and the one script are inline, fonts are the system's, and each plot is embedded:
its SVG inline (ids prefixed per plot, since matplotlib reuses ids such as glyph and clip
path names across files), or its PNG as a data: URI when the SVG is too large to inline.
A Content-Security-Policy forbids every load from outside the page, so a stray URL shows
up as a blocked request rather than a silent dependency.

Tables sort by clicking a header, by `Cell.sort` (numbers numerically, text ignoring case,
absent values last in both directions). Opening the page with `#vlmbench-selftest` makes
the script sort one table both ways, check the order and write the verdict as JSON into
`<pre id="vlmbench-selftest">` (and the title), so a headless browser can check the page
with `--dump-dom` alone.

The page depends on nothing but the document and the plot files: the same input gives the
same bytes.
"""

from __future__ import annotations

import base64
import math
import re
from html import escape
from pathlib import Path

from pytest_vlmbench.report.model import Bullets, Cell, Paragraph, Plot, ReportDoc, Section, Table

SVG_INLINE_LIMIT = 1_500_000
"""Bytes: a larger SVG (a scatter of thousands of points) is embedded as its PNG."""

LONG_TEXT = 48
"""Characters: a longer text cell (a model's output) wraps; shorter ones stay on one line,
so a wide table scrolls sideways instead of squeezing its labels word by word."""

SELFTEST_HASH = "#vlmbench-selftest"
BEST_MARK = "\u2605"  # black star

_CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "img-src data:")

_CSS = """
:root { color-scheme: light; --fg: #1d2433; --muted: #5a6475; --line: #d5dbe5;
  --head: #e9eef6; --zebra: #f5f7fb; --hover: #eaf1ff; --accent: #1f5fbf;
  --best: #fff1c2; --best-fg: #7a4b00; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: #fff; color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
    "Noto Sans", "Liberation Sans", sans-serif; }
main { max-width: 1160px; margin: 0 auto; padding: 1.5rem 1.25rem 3rem; }
h1 { font-size: 1.7rem; line-height: 1.25; margin: 0 0 1rem;
  padding-bottom: .5rem; border-bottom: 3px solid var(--accent); }
h2 { font-size: 1.3rem; margin: 2.2rem 0 .7rem; padding-bottom: .25rem;
  border-bottom: 1px solid var(--line); }
p, ul { margin: .5rem 0 .8rem; max-width: 80ch; }
li { margin: .15rem 0; }
a { color: var(--accent); }
nav.toc { background: var(--zebra); border: 1px solid var(--line); border-radius: 6px;
  padding: .6rem 1.2rem; margin: 0 0 1rem; }
nav.toc h2 { font-size: 1rem; margin: 0 0 .3rem; border: 0; padding: 0; }
nav.toc ol { margin: 0; padding-left: 1.4rem; }
p.legend { color: var(--muted); font-size: .9rem; }
.mark { color: var(--best-fg); }
.table-wrap { overflow: auto; max-height: 80vh; width: fit-content; max-width: 100%;
  margin: .6rem 0 .4rem; border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: separate; border-spacing: 0; min-width: 24rem;
  font-size: .9rem; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: .5rem .7rem;
  background: #fff; }
th, td { padding: .32rem .7rem; text-align: left; vertical-align: top;
  border-bottom: 1px solid var(--line); white-space: nowrap; background: #fff; }
td.long { white-space: normal; min-width: 18rem; max-width: 40rem; }
thead th { position: sticky; top: 0; z-index: 2; background: var(--head);
  border-bottom: 2px solid #b8c2d3; padding: 0; }
tbody td:first-child { position: sticky; left: 0; z-index: 1;
  box-shadow: inset -1px 0 0 var(--line); }
thead th:first-child { left: 0; z-index: 3; box-shadow: inset -1px 0 0 var(--line); }
th button { all: unset; box-sizing: border-box; display: block; width: 100%;
  padding: .42rem .7rem; cursor: pointer; font-weight: 600; text-align: inherit; }
th button:focus-visible { outline: 2px solid var(--accent); outline-offset: -2px; }
th button::after { content: "\\2195"; color: #9aa5b8; margin-left: .3rem; font-weight: 400; }
th[aria-sort="ascending"] button::after { content: "\\25B2"; color: var(--accent); }
th[aria-sort="descending"] button::after { content: "\\25BC"; color: var(--accent); }
th.num, td.num { text-align: right; }
tbody tr:nth-child(even) td { background: var(--zebra); }
tbody tr:hover td { background: var(--hover); }
tbody tr:last-child td { border-bottom: 0; }
td.best, tbody tr:nth-child(even) td.best { background: var(--best); font-weight: 700; }
td.best .mark { margin-right: .25rem; }
td[title] { cursor: help; }
.notes { color: var(--muted); font-size: .85rem; margin: .2rem 0 1.2rem; }
.notes p { margin: .15rem 0; }
figure { margin: 1.2rem 0 1.6rem; }
figure .plot { overflow-x: auto; }
figure svg, figure img { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: .9rem; margin-top: .4rem; max-width: 80ch; }
figcaption strong { color: var(--fg); }
figure.missing { border: 1px dashed var(--line); border-radius: 6px; padding: .7rem; }
figure.missing .why { color: #a03020; font-weight: 600; }
pre#vlmbench-selftest { white-space: pre-wrap; font-size: .8rem; }
@media print {
  body { font-size: 10.5pt; }
  main { max-width: none; padding: 0; }
  nav.toc { break-after: avoid; }
  .table-wrap { overflow: visible; max-height: none; width: auto; border: 0; }
  table { min-width: 0; }
  thead th { position: static; }
  th button::after { content: none; }
  th[aria-sort="ascending"] button::after, th[aria-sort="descending"] button::after {
    content: none; }
  tbody td:first-child, thead th:first-child { position: static; box-shadow: none; }
  tr, figure { break-inside: avoid; }
  h2 { break-after: avoid; }
  a { color: inherit; text-decoration: none; }
}
"""

_JS = """
(function () {
  "use strict";
  function keyOf(row, col) {
    var cell = row.cells[col];
    if (!cell || !cell.hasAttribute("data-sort")) return null;
    var raw = cell.getAttribute("data-sort");
    if (cell.getAttribute("data-kind") === "str") return raw.toLowerCase();
    var n = Number(raw);
    return isNaN(n) ? null : n;
  }
  function compare(a, b) {
    var an = typeof a === "number", bn = typeof b === "number";
    if (an !== bn) return an ? -1 : 1;
    return a < b ? -1 : (a > b ? 1 : 0);
  }
  function sortTable(table, col, descending) {
    var body = table.tBodies[0], head = table.tHead && table.tHead.rows[0];
    if (!body || !head || col < 0 || col >= head.cells.length) return false;
    var items = Array.prototype.map.call(body.rows, function (row, i) {
      var at = Number(row.getAttribute("data-row"));
      return { row: row, key: keyOf(row, col), at: isNaN(at) ? i : at };
    });
    items.sort(function (x, y) {
      if (x.key === null || y.key === null) {
        if (x.key === y.key) return x.at - y.at;
        return x.key === null ? 1 : -1;
      }
      var c = compare(x.key, y.key);
      return (descending ? -c : c) || x.at - y.at;
    });
    items.forEach(function (it) { body.appendChild(it.row); });
    for (var j = 0; j < head.cells.length; j++) {
      head.cells[j].setAttribute("aria-sort",
        j === col ? (descending ? "descending" : "ascending") : "none");
    }
    return true;
  }
  window.vlmbenchSort = function (tableId, col, descending) {
    var table = document.getElementById(tableId);
    if (!table || table.tagName !== "TABLE") return false;
    return sortTable(table, col, !!descending);
  };
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    var head = table.tHead && table.tHead.rows[0];
    if (!head) return;
    Array.prototype.forEach.call(head.cells, function (th, col) {
      var button = th.querySelector("button");
      if (!button) return;
      button.addEventListener("click", function () {
        sortTable(table, col, th.getAttribute("aria-sort") === "ascending");
      });
    });
  });

  function numericColumn(table) {
    var rows = table.tBodies[0].rows, head = table.tHead.rows[0];
    for (var c = 0; c < head.cells.length; c++) {
      var n = 0;
      for (var r = 0; r < rows.length; r++) if (typeof keyOf(rows[r], c) === "number") n++;
      if (n >= 2) return c;
    }
    return -1;
  }
  function inOrder(table, col, descending) {
    var rows = table.tBodies[0].rows, prev = null, absent = false;
    for (var r = 0; r < rows.length; r++) {
      var k = keyOf(rows[r], col);
      if (k === null) { absent = true; continue; }
      if (absent) return false;
      if (prev !== null && (descending ? compare(prev, k) < 0 : compare(prev, k) > 0)) return false;
      prev = k;
    }
    return table.tHead.rows[0].cells[col].getAttribute("aria-sort") ===
      (descending ? "descending" : "ascending");
  }
  function selftest() {
    var out = { sorted_ok: false, tables: 0, plots: 0, column: null, table: null, rows: 0,
      absent: 0, ascending: false, descending: false, clicks: false, error: null };
    try {
      var tables = document.querySelectorAll("table.sortable");
      out.tables = tables.length;
      out.plots = Array.prototype.filter.call(document.querySelectorAll("figure"),
        function (f) { return f.querySelector("svg, img") !== null; }).length;
      var target = null, col = -1;
      for (var t = 0; t < tables.length && !target; t++) {
        var body = tables[t].tBodies[0];
        if (!tables[t].tHead || !body || body.rows.length < 3) continue;
        col = numericColumn(tables[t]);
        if (col >= 0) target = tables[t];
      }
      if (!target) {
        out.error = "no sortable table with 3 or more rows and a numeric column";
      } else {
        var rows = target.tBodies[0].rows;
        out.table = target.id;
        out.column = target.tHead.rows[0].cells[col].textContent.trim();
        out.rows = rows.length;
        for (var r = 0; r < rows.length; r++) if (keyOf(rows[r], col) === null) out.absent++;
        out.ascending = window.vlmbenchSort(target.id, col, false) && inOrder(target, col, false);
        out.descending = window.vlmbenchSort(target.id, col, true) && inOrder(target, col, true);
        var button = target.tHead.rows[0].cells[col].querySelector("button");
        button.click();
        var clickedUp = inOrder(target, col, false);
        button.click();
        out.clicks = clickedUp && inOrder(target, col, true);
        out.sorted_ok = out.ascending && out.descending && out.clicks &&
          rows.length === out.rows;
      }
    } catch (e) {
      out.error = String(e);
      out.sorted_ok = false;
    }
    var pre = document.getElementById("vlmbench-selftest");
    if (!pre) {
      pre = document.createElement("pre");
      pre.id = "vlmbench-selftest";
      (document.querySelector("main") || document.body).appendChild(pre);
    }
    pre.textContent = JSON.stringify(out);
    document.title = out.sorted_ok && !out.error ? "selftest:ok" : "selftest:fail";
  }
  if (location.hash === "#vlmbench-selftest") {
    if (document.readyState === "complete") selftest();
    else window.addEventListener("load", selftest);
  }
})();
"""


def render(doc: ReportDoc, out_dir: Path) -> str:
    """The page for `doc`; plot paths are resolved against `out_dir` (the report's folder)
    and their files read now, so the page needs nothing beside it."""
    ids = _Ids()
    section_ids = [ids.take(s.id or "section") for s in doc.sections]
    body: list[str] = [f"<h1>{escape(doc.title)}</h1>"]
    if doc.sections:
        body.append('<nav class="toc" aria-label="Contents"><h2>Contents</h2><ol>')
        body += [f'<li><a href="#{escape(sid)}">{escape(s.title)}</a></li>'
                 for s, sid in zip(doc.sections, section_ids, strict=True)]
        body.append("</ol></nav>")
    if doc.tables():
        body.append(f'<p class="legend">Click a column header to sort by it (again to reverse; '
                    f'absent values stay last). <span class="mark">{BEST_MARK}</span> '
                    f'<strong>bold</strong>: the best value in its column. Hover a figure to '
                    f'see where it comes from.</p>')
    for section, sid in zip(doc.sections, section_ids, strict=True):
        body.append(_section(section, sid, out_dir, ids))
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="generator" content="pytest-vlmbench">',
        f"<title>{escape(doc.title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        *body,
        "</main>",
        f"<script>{_JS}</script>",
        "</body>",
        "</html>",
        "",
    ])


class _Ids:
    """Hands out page-unique ids: sections, tables and plots come from different builders,
    and a repeated id would break the anchor and the sort."""

    def __init__(self) -> None:
        self.used: set[str] = {"vlmbench-selftest"}

    def take(self, wanted: str) -> str:
        base = _slug(wanted)
        candidate, n = base, 1
        while candidate in self.used:
            n += 1
            candidate = f"{base}-{n}"
        self.used.add(candidate)
        return candidate


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")
    return slug if slug and slug[0].isalpha() else f"x-{slug}".rstrip("-")


def _section(section: Section, sid: str, out_dir: Path, ids: _Ids) -> str:
    parts = [f'<section id="{escape(sid)}">', f"<h2>{escape(section.title)}</h2>"]
    for block in section.blocks:
        if isinstance(block, Paragraph):
            parts.append(f"<p>{escape(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{escape(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            parts.append(_table(block, ids.take(block.id or "table")))
        else:
            parts.append(_plot(block, out_dir, ids.take(f"plot-{block.name}")))
    parts.append("</section>")
    return "\n".join(parts)


def _table(table: Table, tid: str) -> str:
    parts = ['<div class="table-wrap">', f'<table class="sortable" id="{escape(tid)}">']
    if table.caption:
        parts.append(f"<caption>{escape(table.caption)}</caption>")
    parts.append("<thead><tr>")
    for i, header in enumerate(table.headers):
        cls = ' class="num"' if i in table.right else ""
        parts.append(f'<th scope="col"{cls} aria-sort="none">'
                     f'<button type="button">{escape(header)}</button></th>')
    parts.append("</tr></thead>")
    parts.append("<tbody>")
    for r, row in enumerate(table.rows):
        cells = "".join(_cell(cell, i in table.right) for i, cell in enumerate(row))
        parts.append(f'<tr data-row="{r}">{cells}</tr>')
    parts.append("</tbody></table></div>")
    if table.notes:
        parts.append('<div class="notes">'
                     + "".join(f"<p>{escape(n)}</p>" for n in table.notes) + "</div>")
    return "\n".join(parts)


def _cell(cell: Cell, numeric: bool) -> str:
    long = not numeric and len(cell.text) > LONG_TEXT
    classes = [c for c, on in (("num", numeric), ("long", long), ("best", cell.best)) if on]
    attrs = f' class="{" ".join(classes)}"' if classes else ""
    # a text cell without a key sorts by its text; "-" (absent) has none and sorts last
    key = _sort_key(cell.sort if cell.sort is not None or numeric or cell.text in ("", "-")
                    else cell.text)
    if key is not None:
        attrs += f' data-sort="{escape(key[0])}"' + (' data-kind="str"' if key[1] else "")
    if cell.title:
        attrs += f' title="{escape(cell.title)}"'
    text = escape(cell.text)
    if cell.best:
        text = f'<span class="mark" title="best in column">{BEST_MARK}</span>{text}'
    return f"<td{attrs}>{text}</td>"


def _sort_key(sort: float | str | None) -> tuple[str, bool] | None:
    """(data-sort value, is text); None for no key (sorts last): also NaN, which has no
    place in an order."""
    if sort is None:
        return None
    if isinstance(sort, str):
        return sort, True
    value = float(sort)
    if math.isnan(value):
        return None
    if math.isinf(value):
        return ("Infinity" if value > 0 else "-Infinity"), False
    return repr(value), False


def _plot(plot: Plot, out_dir: Path, fid: str) -> str:
    caption = f"<strong>{escape(plot.title)}</strong>"
    if plot.caption:
        caption += f" {escape(plot.caption)}"
    embedded, why = _embed(plot, out_dir, fid)
    if embedded is None:
        return (f'<figure class="missing" id="{escape(fid)}"><figcaption>{caption} '
                f'<span class="why">({escape(why)})</span></figcaption></figure>')
    return (f'<figure id="{escape(fid)}"><div class="plot">{embedded}</div>'
            f"<figcaption>{caption}</figcaption></figure>")


def _embed(plot: Plot, out_dir: Path, prefix: str) -> tuple[str | None, str]:
    """The plot's markup, or None and why not. SVG inline when small enough; else the PNG
    as a data: URI; else the SVG anyway (too large beats absent)."""
    svg, png = out_dir / plot.svg, out_dir / plot.png
    problems: list[str] = []
    svg_size = _size(svg)
    if svg_size is not None and svg_size <= SVG_INLINE_LIMIT:
        markup = _inline_svg(svg, prefix, plot.title, problems)
        if markup is not None:
            return markup, ""
    if _size(png) is not None:
        try:
            data = base64.b64encode(png.read_bytes()).decode("ascii")
        except OSError as exc:
            problems.append(f"cannot read {plot.png}: {exc.strerror or exc}")
        else:
            return (f'<img src="data:image/png;base64,{data}" alt="{escape(plot.title)}">', "")
    if svg_size is not None and svg_size > SVG_INLINE_LIMIT:
        markup = _inline_svg(svg, prefix, plot.title, problems)
        if markup is not None:
            return markup, ""
    if problems:
        return None, "plot file unreadable: " + "; ".join(problems)
    return None, "plot file missing"


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None


_SVG_DROP = re.compile(
    r"<\?xml.*?\?>|<!DOCTYPE[^>]*>|<!--.*?-->|<metadata\b.*?</metadata>"
    r"|<script\b.*?</script\s*>|<script\b[^>]*/>", re.DOTALL | re.IGNORECASE)
_SVG_EVENT = re.compile(r"""\s on[a-z]+ \s*=\s* (?:"[^"]*"|'[^']*')""", re.VERBOSE | re.IGNORECASE)
_SVG_ID = re.compile(r"""(\sid\s*=\s*)(["'])(.*?)\2""")
_SVG_HREF = re.compile(r"""((?:xlink:)?href\s*=\s*)(["'])\#(.*?)\2""")
_SVG_EXTERNAL_HREF = re.compile(r"""\s(?:xlink:)?href\s*=\s*(["'])(?!\#|data:).*?\1""")
_SVG_URL = re.compile(r"""url\(\s*(["']?)\#([^)"'\s]+)\1\s*\)""")
_SVG_STYLE = re.compile(r"(<style\b[^>]*>)(.*?)(</style>)", re.DOTALL)


def _inline_svg(path: Path, prefix: str, title: str, problems: list[str]) -> str | None:
    """The SVG file's <svg> element, ready to sit in the page: declarations, metadata (the
    creation date, license URLs) and scripts dropped; every id and reference to one
    prefixed with `prefix` so two plots' `clip1`/glyph ids cannot collide; references to
    anything outside the file removed; its style sheet scoped to the figure."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"cannot read {path.name}: {exc}")
        return None
    text = _SVG_DROP.sub("", text)
    start, end = text.find("<svg"), text.rfind("</svg>")
    if start < 0 or end < start:
        problems.append(f"{path.name} holds no <svg> element")
        return None
    text = text[start:end + len("</svg>")]
    text = _SVG_EVENT.sub("", text)
    text = _SVG_EXTERNAL_HREF.sub("", text)
    names = _id_names(text, prefix)

    def name(old: str) -> str:
        return names.get(old, f"{prefix}-{old}")

    text = _SVG_ID.sub(lambda m: f"{m[1]}{m[2]}{name(m[3])}{m[2]}", text)
    text = _SVG_HREF.sub(lambda m: f"{m[1]}{m[2]}#{name(m[3])}{m[2]}", text)
    text = _SVG_URL.sub(lambda m: f"url(#{name(m[2])})", text)
    text = _SVG_STYLE.sub(lambda m: m[1] + _scope_css(m[2], prefix) + m[3], text)
    label = f' role="img" aria-label="{escape(title)}"'
    return re.sub(r"^<svg\b", "<svg" + label, text, count=1)


_MPL_HASHED_ID = re.compile(r"([A-Za-z][A-Za-z0-9_]*?)[0-9a-f]{10}")


def _id_names(svg: str, prefix: str) -> dict[str, str]:
    """New names for the SVG's ids: `<prefix>-<id>`, except matplotlib's hashed ones (clip
    paths `p1a2b3c4d5e`, markers `m…`, scatter paths `C0_0_…`: ten hex digits salted with a
    random uuid unless `svg.hashsalt` is set), renumbered in order of definition so that
    redrawing a plot gives the same page."""
    names: dict[str, str] = {}
    counts: dict[str, int] = {}
    for m in _SVG_ID.finditer(svg):
        old = m[3]
        if old in names:
            continue
        hashed = _MPL_HASHED_ID.fullmatch(old)
        if hashed:
            counts[hashed[1]] = counts.get(hashed[1], 0) + 1
            names[old] = f"{prefix}-{hashed[1]}{counts[hashed[1]]}"
        else:
            names[old] = f"{prefix}-{old}"
    return names


def _scope_css(css: str, figure_id: str) -> str:
    """Matplotlib's SVG style sheet (`*{stroke-linejoin: round}`) would apply to the whole
    page once inline: prefix each selector with the figure's id. At-rules (none from
    matplotlib) are left alone rather than mangled."""
    if "@" in css:
        return css

    def scoped(m: re.Match[str]) -> str:
        selectors = [s.strip() for s in m[1].split(",")]
        return ", ".join(f"#{figure_id} {s}" for s in selectors if s) + " {"

    return re.sub(r"([^{}]+)\{", scoped, css)
