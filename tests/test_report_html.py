"""The HTML report page: escaped, self-contained, unique ids across embedded SVGs, sortable
markup; and, in a headless Chromium, the page's own self-test (sort both ways, count the
tables and plots) and a screenshot that shows something.

The browser test skips without a Chromium unless VLMBENCH_REQUIRE_BROWSER=1 (CI, after
tools/install_browser.sh), where a missing browser is a failure.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pytest_vlmbench.report import html as report_html
from pytest_vlmbench.report.model import (
    Bullets,
    Cell,
    Paragraph,
    Plot,
    ReportDoc,
    Section,
    Table,
)

EVIL = '<script>alert("x")</script> & "quoted"'


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text by tag, for structural checks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    parser.close()
    return parser


def _latency_table(model: str = "gemma3-270m") -> Table:
    src = "S1:run:{} summary.latency_s.median"
    return Table(
        id="latency",
        caption="Latency by configuration",
        headers=["Model", "p50 s", "Decode tok/s"],
        rows=[
            [Cell(model, sort=model), Cell("0.84", 0.84, title=src.format("a")),
             Cell("61.2", 61.2, best=True)],
            [Cell("tiny-vlm", sort="tiny-vlm"), Cell("0.31", 0.31, best=True,
                                                     title=src.format("b")),
             Cell("40.0", 40.0)],
            [Cell("Alpha", sort="Alpha"), Cell("-", None), Cell("12.5", 12.5)],
            [Cell("beta", sort="beta"), Cell("1.92", 1.92, title=src.format("c")),
             Cell("-", None)],
        ],
        right={1, 2},
        notes=["p50: median latency of successful requests.", "- : not measured."],
    )


def _cost_table() -> Table:
    return Table(
        id="energy", caption="Cost", headers=["Model", "J/token"],
        rows=[[Cell("gemma3-270m", "gemma3-270m"), Cell("0.012", 0.012, best=True)],
              [Cell("tiny-vlm", "tiny-vlm"), Cell("0.030", 0.03)]],
        right={1},
    )


def _doc(plots: list[Plot], model: str = "gemma3-270m") -> ReportDoc:
    return ReportDoc(
        title="Benchmark report",
        sections=[
            Section("summary", "Summary", [
                Paragraph("Two runs, one machine."),
                Bullets(["fastest: tiny-vlm", "no energy: no meter"]),
                _latency_table(model),
            ]),
            Section("plots", "Plots", list(plots)),
            Section("cost", "Cost", [_cost_table()]),
        ],
    )


def _svg(ids_suffix: str = "") -> str:
    """A small SVG shaped like matplotlib's: declaration, doctype, metadata with URLs and a
    date, ids reused by every file, references by url(#) and xlink:href."""
    return f"""<?xml version="1.0" encoding="utf-8" standalone="no"?>
<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN"
  "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">
<svg xmlns:xlink="http://www.w3.org/1999/xlink" width="200pt" height="100pt"
 viewBox="0 0 200 100" xmlns="http://www.w3.org/2000/svg" version="1.1">
 <metadata><rdf:RDF><cc:Work><dc:type rdf:resource="http://purl.org/dc/dcmitype/StillImage"/>
  <dc:date>2026-11-23T10:21:47</dc:date></cc:Work></rdf:RDF></metadata>
 <defs><style type="text/css">*{{stroke-linejoin: round; stroke-linecap: butt}}</style></defs>
 <g id="figure_1"><g id="patch_1"><path d="M 0 0 L 200 0 L 200 100 z" style="fill: #fff"/></g>
  <g id="axes_1" clip-path="url(#clip1)"><use xlink:href="#m0{ids_suffix}" x="10" y="10"/>
   <image xlink:href="https://example.com/x.png" width="1" height="1"/>
   <text onclick="alert(1)">y</text></g></g>
 <defs><clipPath id="clip1"><rect x="0" y="0" width="200" height="100"/></clipPath>
  <path id="m0{ids_suffix}" d="M 0 0 L 0 3.5"/></defs>
</svg>
"""


def _hand_plots(out: Path) -> list[Plot]:
    (out / "plots").mkdir(parents=True, exist_ok=True)
    plots = []
    for name in ("latency", "pareto"):
        svg = Path("plots") / f"{name}.svg"
        (out / svg).write_text(_svg(), encoding="utf-8")
        plots.append(Plot(name, f"{name} plot", Path("plots") / f"{name}.png", svg,
                          f"Drawn from summary.{name}."))
    return plots


def _matplotlib_plots(out: Path) -> list[Plot]:
    """Two real plots as report/plots.py writes them (Agg, PNG and SVG); hand-made SVGs
    where matplotlib (extra `report`) is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return _hand_plots(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    plots = []
    for name, kind in (("latency", "bar"), ("pareto", "scatter")):
        fig = Figure(figsize=(6.4, 3.6))
        ax = fig.add_subplot()
        if kind == "bar":
            ax.bar(["gemma3-270m", "tiny-vlm", "beta"], [0.84, 0.31, 1.92], color="#1f5fbf")
            ax.set_ylabel("p50 latency (s)")
        else:
            ax.scatter([61.2, 40.0, 12.5], [0.84, 0.31, 1.92], c=["#1f5fbf", "#d9822b", "#3a9"])
            ax.plot([12.5, 40.0], [1.92, 0.31], "--", color="#888")
            ax.set_xlabel("decode tokens/s")
            ax.set_ylabel("p50 latency (s)")
        ax.set_title(f"{name} (test data)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        for ext in ("png", "svg"):
            fig.savefig(out / "plots" / f"{name}.{ext}", format=ext,
                        metadata={"Date": None} if ext == "svg" else None)
        plots.append(Plot(name, f"{name.title()} plot", Path("plots") / f"{name}.png",
                          Path("plots") / f"{name}.svg", f"Drawn from summary.{name}."))
    return plots


# --- the page, no browser -----------------------------------------------------------------


def test_user_text_is_escaped(tmp_path: Path) -> None:
    page = report_html.render(_doc([], model=EVIL), tmp_path)
    assert 'alert("x")' not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;quoted&quot;" in page
    assert page.count("<script") == 1  # the page's own, at the end
    values = [a.get("data-sort") for t, a in _parse(page).tags if t == "td"]
    assert EVIL in values  # round-trips through the attribute


def test_page_is_self_contained(tmp_path: Path) -> None:
    page = report_html.render(_doc(_matplotlib_plots(tmp_path)), tmp_path)
    external = re.compile(
        r"""(?:\bsrc|\bhref)\s*=\s*["']?\s*(?:https?:|//|ftp:)"""
        r"""|@import|url\(\s*["']?\s*(?:https?:|//)""", re.IGNORECASE)
    assert external.findall(page) == []
    tags = _parse(page).tags
    assert [t for t, _ in tags if t in ("link", "iframe", "object", "embed")] == []
    scripts = [a for t, a in tags if t == "script"]
    assert scripts == [{}]  # one inline script, no src
    srcs = [a["src"] for _, a in tags if a.get("src")]
    assert all(s is not None and s.startswith("data:") for s in srcs)
    assert "Content-Security-Policy" in page


def test_hand_svg_is_cleaned(tmp_path: Path) -> None:
    page = report_html.render(_doc(_hand_plots(tmp_path)), tmp_path)
    assert "<?xml" not in page
    assert "<!DOCTYPE svg" not in page
    assert "<metadata" not in page
    assert "2026-11-23" not in page
    assert "example.com" not in page
    assert "onclick" not in page
    # matplotlib's `*{...}` would style the whole page: scoped to its figure
    assert "#plot-latency *" in page
    assert "#plot-pareto *" in page


def _ids_and_refs(page: str) -> tuple[list[str], list[str]]:
    tags = _parse(page).tags
    ids = [i for _, a in tags if (i := a.get("id"))]
    refs = re.findall(r"url\(#([^)]+)\)", page)
    refs += [v[1:] for _, a in tags for k, v in a.items()
             if k in ("href", "xlink:href") and v is not None and v.startswith("#")]
    return ids, refs


def test_ids_of_two_svgs_are_made_unique(tmp_path: Path) -> None:
    page = report_html.render(_doc(_hand_plots(tmp_path)), tmp_path)
    ids, refs = _ids_and_refs(page)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert {"plot-latency-clip1", "plot-pareto-clip1", "plot-latency-m0",
            "plot-pareto-m0"} <= set(ids)
    assert set(refs) <= set(ids)
    assert "plot-latency-clip1" in refs
    assert "plot-pareto-m0" in refs


def test_matplotlib_svg_ids_are_unique(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    page = report_html.render(_doc(_matplotlib_plots(tmp_path)), tmp_path)
    ids, refs = _ids_and_refs(page)
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    assert refs
    assert set(refs) <= set(ids)
    assert page.count("<svg") == 2


def test_redrawn_matplotlib_plots_give_the_same_page(tmp_path: Path) -> None:
    """matplotlib salts its clip path and marker ids with a random uuid: renumbered."""
    pytest.importorskip("matplotlib")
    first, second = tmp_path / "a", tmp_path / "b"
    plots = _matplotlib_plots(first)
    _matplotlib_plots(second)
    svg = plots[1].svg
    assert (first / svg).read_bytes() != (second / svg).read_bytes()
    assert report_html.render(_doc(plots), first) == report_html.render(_doc(plots), second)


def test_sortable_markup(tmp_path: Path) -> None:
    page = report_html.render(_doc([]), tmp_path)
    tags = _parse(page).tags
    tables = [a for t, a in tags if t == "table"]
    assert tables == [{"class": "sortable", "id": "latency"}, {"class": "sortable", "id": "energy"}]
    ths = [a for t, a in tags if t == "th"]
    assert [a.get("aria-sort") for a in ths] == ["none"] * 5
    assert [a.get("class") for a in ths[:3]] == [None, "num", "num"]
    assert sum(1 for t, _ in tags if t == "button") == 5
    cells = [a for t, a in tags if t == "td"]
    assert [c.get("data-sort") for c in cells[:12]] == [
        "gemma3-270m", "0.84", "61.2", "tiny-vlm", "0.31", "40.0",
        "Alpha", None, "12.5", "beta", "1.92", None]
    assert [c.get("data-kind") for c in cells[:3]] == ["str", None, None]
    assert cells[4]["class"] == "num best"
    assert cells[4]["title"] == "S1:run:b summary.latency_s.median"
    assert '<span class="mark" title="best in column">\u2605</span>0.31' in page
    assert "\u2605</span> <strong>bold</strong>: the best value" in page  # the legend
    assert [a.get("data-row") for t, a in tags if t == "tr" and "data-row" in a][:4] == [
        "0", "1", "2", "3"]
    assert "<caption>Latency by configuration</caption>" in page
    assert "<p>- : not measured.</p>" in page


def test_sections_and_contents(tmp_path: Path) -> None:
    page = report_html.render(_doc([]), tmp_path)
    tags = _parse(page).tags
    assert [a["id"] for t, a in tags if t == "section"] == ["summary", "plots", "cost"]
    toc = [a["href"] for t, a in tags if t == "a"]
    assert toc == ["#summary", "#plots", "#cost"]
    assert "<ul><li>fastest: tiny-vlm</li><li>no energy: no meter</li></ul>" in page


def test_duplicate_ids_are_made_unique(tmp_path: Path) -> None:
    doc = ReportDoc("r", [Section("latency", "Latency", [_latency_table()]),
                          Section("x y", "Odd", [_latency_table()])])
    tags = _parse(report_html.render(doc, tmp_path)).tags
    assert [a["id"] for t, a in tags if t in ("section", "table")] == [
        "latency", "latency-2", "x-y", "latency-3"]


def test_sort_keys_for_odd_numbers(tmp_path: Path) -> None:
    table = Table("t", "", ["v"], [[Cell("nan", float("nan"))], [Cell("inf", float("inf"))],
                                   [Cell("-inf", float("-inf"))], [Cell("3", 3)]], right={0})
    tags = _parse(report_html.render(ReportDoc("r", [Section("s", "S", [table])]),
                                     tmp_path)).tags
    assert [a.get("data-sort") for t, a in tags if t == "td"] == [
        None, "Infinity", "-Infinity", "3.0"]


def test_missing_plot_file_does_not_crash(tmp_path: Path) -> None:
    plot = Plot("gone", "Gone plot", Path("plots/gone.png"), Path("plots/gone.svg"),
                "Would show latency.")
    page = report_html.render(_doc([plot]), tmp_path)
    assert ('<strong>Gone plot</strong> Would show latency. '
            '<span class="why">(plot file missing)</span>') in page
    assert "<svg" not in page


def test_unreadable_svg_falls_back_to_png(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "plots").mkdir()
    (tmp_path / "plots/bad.svg").write_text("not an svg", encoding="utf-8")
    plot = Plot("bad", "Bad", Path("plots/bad.png"), Path("plots/bad.svg"), "")
    page = report_html.render(_doc([plot]), tmp_path)
    assert "(plot file unreadable: bad.svg holds no &lt;svg&gt; element)" in page
    Image.new("RGB", (4, 4), "red").save(tmp_path / "plots/bad.png")
    page = report_html.render(_doc([plot]), tmp_path)
    assert '<img src="data:image/png;base64,' in page


def test_large_svg_is_embedded_as_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    plots = _hand_plots(tmp_path)
    Image.new("RGB", (4, 4), "blue").save(tmp_path / plots[0].png)
    monkeypatch.setattr(report_html, "SVG_INLINE_LIMIT", 100)
    page = report_html.render(_doc(plots), tmp_path)
    assert page.count('<img src="data:image/png;base64,') == 1  # latency: its PNG
    assert page.count("<svg") == 1  # pareto has no PNG: its SVG anyway


def test_same_doc_same_page(tmp_path: Path) -> None:
    plots = _hand_plots(tmp_path)
    assert report_html.render(_doc(plots), tmp_path) == report_html.render(_doc(plots), tmp_path)


# --- in a browser -------------------------------------------------------------------------


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    why = ("no chromium, chromium-browser or google-chrome on PATH "
           "(tools/install_browser.sh installs Debian's chromium)")
    if os.environ.get("VLMBENCH_REQUIRE_BROWSER") == "1":
        pytest.fail(f"VLMBENCH_REQUIRE_BROWSER=1 but {why}")
    pytest.skip(why)


def _stderr_tail(stderr: str, lines: int = 15) -> str:
    """Chromium's stderr without its harmless complaints (no D-Bus in a container)."""
    kept = [line for line in stderr.splitlines()
            if line.strip() and "dbus" not in line.lower() and "bus.cc" not in line]
    return "\n".join(kept[-lines:]) or "(nothing but D-Bus noise)"


def _run_chromium(exe: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "chromium-home"
    home.mkdir(exist_ok=True)
    command = [exe, "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--no-first-run",
               "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "HOME": str(home)}, check=False)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        pytest.fail(f"chromium did not finish within 60 s: {' '.join(command)}\n"
                    f"stderr tail:\n{_stderr_tail(err)}")
    if proc.returncode != 0:
        pytest.fail(f"chromium exited {proc.returncode}: {' '.join(command)}\n"
                    f"stderr tail:\n{_stderr_tail(proc.stderr)}")
    return proc


def test_page_in_headless_chromium(tmp_path: Path) -> None:
    exe = _chromium()
    out = tmp_path / "report"
    out.mkdir()
    page_path = out / "report.html"
    page_path.write_text(report_html.render(_doc(_matplotlib_plots(out)), out), encoding="utf-8")

    proc = _run_chromium(exe, tmp_path, "--virtual-time-budget=5000", "--dump-dom",
                         page_path.as_uri() + report_html.SELFTEST_HASH)
    found = re.search(r'<pre id="vlmbench-selftest">(.*?)</pre>', proc.stdout, re.DOTALL)
    assert found, ("the page's self-test wrote no <pre id=vlmbench-selftest> "
                   f"(script not run?); DOM tail: {proc.stdout[-500:]!r}\n"
                   f"stderr tail:\n{_stderr_tail(proc.stderr)}")
    result = json.loads(html.unescape(found[1]))
    assert result["sorted_ok"] is True, result
    assert result["error"] is None, result
    assert result["tables"] == 2, result
    assert result["plots"] == 2, result
    assert result["column"] == "p50 s", result
    assert result["absent"] == 1, result
    assert result["clicks"] is True, result
    assert "<title>selftest:ok</title>" in proc.stdout

    shot = tmp_path / "shot.png"
    proc = _run_chromium(exe, tmp_path, f"--screenshot={shot}", "--window-size=1200,900",
                         page_path.as_uri())
    assert shot.is_file(), f"no screenshot written; stderr tail:\n{_stderr_tail(proc.stderr)}"
    _assert_not_blank(shot)


def _assert_not_blank(path: Path) -> None:
    from PIL import Image, ImageStat

    with Image.open(path) as opened:
        image = opened.convert("RGB")
    assert image.size == (1200, 900)
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50, f"{len(colours)} distinct colours: a blank page?"
    stdev = ImageStat.Stat(image.convert("L")).stddev[0]
    assert stdev > 10, f"grey-level stdev {stdev:.1f}: a blank page?"
    white = max((n for n, c in colours if c == (255, 255, 255)), default=0)
    assert white < 0.97 * image.width * image.height, "almost all white"
