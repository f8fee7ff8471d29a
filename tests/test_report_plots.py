"""Tests for report/plots.py: which plots are drawn and which are left out (and why),
the files written (the same from one process or several), captions naming missing
configurations, readable labels, the lazy matplotlib import and the message without it.

Configurations are the real run's two benchmark entries (tests/data, the default suite
on a CPU without an energy meter) and hand-made copies of them with other models,
precisions, devices, tasks, load levels and figures, held as Config objects over the
real document (no file is needed to draw).
"""

from __future__ import annotations

import copy
import itertools
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_vlmbench.compare import compare_runs, load_run, to_json
from pytest_vlmbench.metrics import per_request
from pytest_vlmbench.report import plots
from pytest_vlmbench.report.model import Plot
from pytest_vlmbench.report.plots import Drawn, Samples, available, draw, render
from pytest_vlmbench.report.sources import (
    Config,
    Source,
    configs_of,
    iter_records,
    label_configs,
    load_sources,
    newest,
    record_key,
)

DATA = Path(__file__).parent / "data"
REAL = DATA / "results-20261123T102147Z-ba1e6b.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL = [name for name, _ in plots.PLOTS]
NO_METER = "no RAPL energy counters"
"""The real document's power.absent_reason begins so."""


# --- building configurations ----------------------------------------------------------


def real() -> tuple[Source, list[Config]]:
    sources = load_sources([REAL])
    return sources[0], newest(configs_of(sources))


def real_entries() -> tuple[Source, list[dict[str, Any]]]:
    source, cs = real()
    return source, [dict(c.entry) for c in cs]


def real_samples(source: Source) -> dict[str, Samples]:
    """The records' successful measured latencies, as the report's record scan gives."""
    lat: dict[str, list[float]] = {}
    ttft: dict[str, list[float]] = {}
    failed: dict[str, int] = {}
    for record in iter_records(source):
        if record["phase"] != "measure":
            continue
        key = record_key(source, record)
        if record["error"]:
            failed[key] = failed.get(key, 0) + 1
            continue
        if (v := per_request.latency_s(record)) is not None:
            lat.setdefault(key, []).append(v)
        if (t := per_request.ttft_s(record)) is not None:
            ttft.setdefault(key, []).append(t)
    return {k: Samples(v, ttft.get(k, []), failed.get(k, 0), {}) for k, v in lat.items()}


def scaled(dist: Mapping[str, Any], factor: float) -> dict[str, Any]:
    return {k: (v * factor if k not in ("n", "cv") and isinstance(v, float) else v)
            for k, v in dist.items()}


def variant(base: Mapping[str, Any], *, model: str, precision: str = "q4_k_m",
            device: str = "cpu", task: str = "caption_brief", backend: str = "llama_cpp",
            level: int | None = None, speed: float = 1.0, **summary: Any) -> dict[str, Any]:
    """A copy of a real entry as another configuration: its latencies times `speed`, its
    decode rate over it, and the summary fields given replaced (None removes a figure)."""
    entry = copy.deepcopy(dict(base))
    test = f"benchmarks/test_suite.py::test_{task}[{model}-{precision}-{device}-{backend}]"
    entry.update(model=model, precision=precision, device=device, task=task, backend=backend,
                 test=test, id=test if level is None else f"{test}@c{level}")
    if level is not None:
        entry["load"] = {"pattern": "concurrency", "label": f"c{level}", "concurrency": level,
                         "rate_rps": None, "arrival": None, "burstiness": None,
                         "max_concurrency": None}
    s = entry["summary"]
    s["latency_s"] = scaled(s["latency_s"], speed)
    s["ttft_s"] = scaled(s["ttft_s"], speed)
    s["stages_s"] = {k: scaled(v, speed) for k, v in s["stages_s"].items()}
    s["decode_tokens_per_s"] = s["decode_tokens_per_s"] / speed
    s.update(summary)
    return entry


def configs(entries: Sequence[Mapping[str, Any]], source: Source | None = None) -> list[Config]:
    """Config rows over the real document (its header: power, run id), labelled as the
    report labels them."""
    src = source or real()[0]
    out = [Config(f"S1:{src.doc['run_id']}:{e['id']}", src, e, src.doc["run_id"])  # type: ignore[arg-type]
           for e in entries]
    label_configs(out)
    return out


def samples_for(cs: Sequence[Config], n: int = 200, seed: int = 0) -> dict[str, Samples]:
    """n latencies around each configuration's median, from a seeded generator."""
    rng = np.random.default_rng(seed)
    out = {}
    for c in cs:
        median = c.summary["latency_s"]["median"]
        lat = median * rng.lognormal(0.0, 0.2, n)
        out[c.key] = Samples([float(v) for v in lat], [float(v) / 5 for v in lat], 1, {})
    return out


def energy(tokens_per_s_per_w: float, per_token: float) -> dict[str, Any]:
    return {"method": "counter", "energy_j": 10.0, "avg_power_w": 12.0,
            "energy_per_token_j": per_token, "tokens_per_s_per_w": tokens_per_s_per_w,
            "energy_per_request_j": 3.0, "warnings": []}


def quality(accuracy: float, ratings: Sequence[int]) -> dict[str, Any]:
    bins = {str(b): sum(1 for r in ratings if r == b) for b in range(1, 11)}
    return {
        "scorers": ["count", "instagram"],
        "scores": {
            "count_accuracy": {"mean": accuracy, "n": 9, "not_applicable": 0, "failed": 0,
                               "errors": 0, "chance": 0.13, "unit": "", "higher_is_better": True,
                               "kind": "accuracy", "description": "right object count"},
            "instagram": {"mean": float(np.mean(ratings)), "n": len(ratings),
                          "not_applicable": 0, "failed": 0, "errors": 0, "chance": None,
                          "unit": "points", "higher_is_better": True, "kind": "value",
                          "description": "a 1-10 rating"},
        },
        "text": None,
        "histograms": {"instagram": {"bins": bins, "n": len(ratings), "out_of_range": 0,
                                     "mean": float(np.mean(ratings)), "top_share": 0.2,
                                     "mode_share": 0.3}},
    }


def video(rtf: float | None, per_scene: float | None) -> dict[str, Any]:
    return {"vlm_s": 5.0, "seconds_per_scene": per_scene, "real_time_factor": rtf,
            "detection_s": 0.1, "extraction_s": 0.05, "prepare_s": 0.01, "pipeline_s": 5.2,
            "pipeline_real_time_factor": rtf, "absent_reason": None if rtf else
            "only some scenes were measured", "videos": [], "videos_complete": 1,
            "duration_s": 12.0, "scenes": 6, "scenes_measured": 6, "failed_requests": 0,
            "frames_per_scene": 2.0}


LONG = [f"acme-research/very-long-vision-language-model-name-{n}b-instruct-preview"
        for n in (1, 2, 3, 4)]


def long_labelled() -> list[Config]:
    """12 configurations (4 models x 3 precisions) with labels far past 40 characters,
    with energy, quality scores and rating histograms."""
    source, (text, image) = real_entries()
    entries = []
    for i, (model, precision) in enumerate(itertools.product(LONG, ("q4_k_m", "q8_0", "f16"))):
        entries.append(variant(
            image if i % 2 else text, model=model, precision=precision, speed=0.6 + 0.15 * i,
            energy=energy(3.0 + i, 0.2 + 0.01 * i),
            quality=quality(0.2 + 0.05 * i, [(i + k) % 10 + 1 for k in range(20)]),
        ))
    return configs(entries, source)


def rich() -> list[Config]:
    """Every plot's data: two tasks, two devices, precisions, a two-level sweep, video."""
    source, (text, image) = real_entries()
    entries = [
        variant(text, model="gemma3-270m", energy=energy(5.0, 0.2),
                quality=quality(0.3, [5, 6, 7, 7, 8]), prompt_tokens_per_s=900.0),
        variant(text, model="gemma3-270m", precision="q8_0", speed=1.3,
                energy=energy(4.0, 0.25), quality=quality(0.35, [6, 6, 7, 8, 9]),
                prompt_tokens_per_s=700.0),
        variant(image, model="tiny-vlm", energy=energy(6.0, 0.15),
                quality=quality(0.2, [3, 4, 4, 5, 9])),
        variant(image, model="tiny-vlm", device="cuda:0", speed=0.2, energy=energy(20.0, 0.05)),
        variant(text, model="gemma3-270m", device="cuda:0", speed=0.25),
        variant(image, model="tiny-vlm", task="describe", speed=1.8),
        variant(text, model="gemma3-270m", task="describe", speed=1.5),
        variant(image, model="tiny-vlm", task="scenes", speed=2.0, video=video(0.45, 0.9)),
        variant(image, model="tiny-vlm", level=1, output_tokens_per_s=60.0),
        variant(image, model="tiny-vlm", level=4, speed=1.6, output_tokens_per_s=150.0),
        variant(image, model="tiny-vlm", level=8, speed=2.9, output_tokens_per_s=190.0),
    ]
    return configs(entries, source)


def drawn_by_name(cs: Sequence[Config], samples: Mapping[str, Samples],
                  comparison: Mapping[str, Any] | None = None) -> tuple[dict[str, Drawn],
                                                                         list[str]]:
    out: dict[str, Drawn] = {}
    notes: list[str] = []
    for item in render(cs, samples, comparison=comparison):
        if isinstance(item, str):
            notes.append(item)
        else:
            out[item.name] = item
    return out, notes


def overlapping_ticks(drawn: Drawn) -> list[tuple[str, str]]:
    """Pairs of tick labels of one axis, or of texts of one panel (point labels, values
    on bars, cell numbers), whose boxes overlap once drawn (Agg renderer)."""
    drawn.figure.draw_without_rendering()  # lays out; extents use the figure's renderer
    bad = []
    for ax in drawn.figure.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            boxes = [(t.label1.get_text(), t.label1.get_window_extent())
                     for t in axis.get_major_ticks()
                     if t.label1.get_visible() and t.label1.get_text()
                     and lo <= t.get_loc() <= hi]
            for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
                if box_a.overlaps(box_b):
                    bad.append((a, b))
        texts = [(t.get_text(), t.get_window_extent()) for t in ax.texts
                 if t.get_visible() and t.get_text().strip()]
        for (a, box_a), (b, box_b) in itertools.combinations(texts, 2):
            if box_a.overlaps(box_b):
                bad.append((a, b))
    return bad


def assert_files(out: Path, plot: Plot) -> None:
    assert not plot.png.is_absolute()
    png = out / plot.png
    svg = out / plot.svg
    assert png.read_bytes()[:8] == PNG_MAGIC
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    assert svg.stat().st_size < 1_000_000


# --- tests ----------------------------------------------------------------------------


def test_real_run_draws_what_it_has_and_notes_the_rest(tmp_path: Path) -> None:
    source, cs = real()
    drawn, notes = draw(cs, real_samples(source), tmp_path)
    names = [p.name for p in drawn]
    assert {"tokens_per_s", "ram_peak", "load_time", "latency_distribution", "latency_cv",
            "stage_breakdown"} <= set(names)
    for plot in drawn:
        assert_files(tmp_path, plot)
        assert plot.png == Path("plots") / f"{plot.name}.png"
        assert plot.caption
    left_out = {n.removeprefix("plot ").split(" ", 1)[0] for n in notes}
    # every plot is drawn or noted once; the comparison plots need a comparison
    assert sorted([*names, *left_out]) == sorted(n for n in ALL
                                                 if n not in plots.COMPARISON_PLOTS)
    assert all(n.startswith("plot ") and " left out: " in n for n in notes)


def test_no_energy_meter_leaves_energy_plots_out_with_the_reason(tmp_path: Path) -> None:
    _, cs = real()
    drawn, notes = draw(cs, {}, tmp_path)
    for name in ("tokens_per_s_per_w", "energy_per_token"):
        assert name not in {p.name for p in drawn}
        note = next(n for n in notes if n.startswith(f"plot {name} left out:"))
        assert "no energy meter" in note
        assert NO_METER in note
        assert not (tmp_path / "plots" / f"{name}.png").exists()
        assert not (tmp_path / "plots" / f"{name}.svg").exists()


def metered() -> list[Config]:
    """The real run's two entries as if a meter had measured them."""
    source, (text, image) = real_entries()
    return configs([variant(text, model="gemma3-270m", energy=energy(5.0, 0.2)),
                    variant(image, model="tiny-vlm", energy=energy(6.0, 0.15))], source)


def test_energy_plots_drawn_when_a_meter_measured() -> None:
    drawn, notes = drawn_by_name(metered(), {})
    assert {"tokens_per_s_per_w", "energy_per_token"} <= set(drawn)
    assert "summary.energy.energy_per_token_j" in drawn["energy_per_token"].caption
    assert not [n for n in notes if "energy" in n]


def test_a_stale_plot_of_an_earlier_report_is_removed(tmp_path: Path) -> None:
    draw(metered(), {}, tmp_path)
    assert (tmp_path / "plots" / "energy_per_token.png").exists()
    _, cs = real()
    draw(cs, {}, tmp_path)
    assert not (tmp_path / "plots" / "energy_per_token.png").exists()


def test_missing_values_are_named_in_the_caption_and_the_rest_drawn(tmp_path: Path) -> None:
    source, (text, image) = real_entries()
    cs = configs([variant(text, model="alpha", load_s=0.6),
                  variant(image, model="beta", load_s=None),
                  variant(text, model="gamma", load_s=0.3)], source)
    drawn, _ = drawn_by_name(cs, {})
    load = drawn["load_time"]
    assert "beta" in load.caption
    assert "no value for" in load.caption
    ax = load.figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["gamma q4_k_m", "alpha q4_k_m"]
    assert len(ax.patches) == 2


def test_every_plot_draws_the_same_files_in_one_or_two_processes(tmp_path: Path) -> None:
    cs = rich()
    comparison = hand_comparison()
    one, notes = draw(cs, samples_for(cs), tmp_path / "one", comparison=comparison, workers=1)
    two, notes_two = draw(cs, samples_for(cs), tmp_path / "two", comparison=comparison,
                          workers=2)
    assert {p.name for p in one} == set(ALL), notes
    assert notes == []
    assert one == two
    assert notes_two == notes
    for plot in one:
        assert_files(tmp_path / "one", plot)
        for path in (plot.png, plot.svg):  # reproducible: no dates, a fixed SVG salt
            assert (tmp_path / "one" / path).read_bytes() == (tmp_path / "two" / path).read_bytes()


@pytest.mark.parametrize("make", [long_labelled, rich], ids=["12-long-labels", "rich"])
def test_tick_labels_never_overlap(make: Any) -> None:
    cs = make()
    drawn, _ = drawn_by_name(cs, samples_for(cs))
    assert len(drawn) >= 8
    for d in drawn.values():
        assert overlapping_ticks(d) == [], d.name


def test_long_labels_are_shortened_and_stay_apart() -> None:
    cs = long_labelled()
    assert all(len(c.label) > plots.LABEL_CHARS for c in cs)
    drawn, _ = drawn_by_name(cs, {})
    labels = [t.get_text() for t in drawn["tokens_per_s"].figure.axes[0].get_yticklabels()]
    assert len(labels) == 12
    assert len(set(labels)) == 12
    assert all(len(t) <= plots.LABEL_CHARS for t in labels)
    assert all("\u2026" in t for t in labels)
    # the model's size and the precision survive the cut
    assert "acme-researc\u2026-1b-instruct-preview q4_k_m" in labels


def test_fit_labels() -> None:
    assert plots.fit_labels(["short"]) == ["short"]
    fitted = plots.fit_labels(["x" * 60 + "a", "x" * 60 + "b"], 20)
    assert len(set(fitted)) == 2
    assert all(len(t) <= 20 for t in fitted)
    same_ends = plots.fit_labels(["a" + "x" * 60 + "z", "b" + "x" * 60 + "z"], 20)
    assert len(set(same_ends)) == 2
    assert plots.fit_labels(["tiny q4_k_m cpu"], 8) == ["tiny q4\u2026"]


def test_one_task_one_device_one_precision_leaves_comparisons_out() -> None:
    source, (text, _) = real_entries()
    cs = configs([variant(text, model="alpha")], source)
    _, notes = drawn_by_name(cs, {})
    by = {n.removeprefix("plot ").split(" ", 1)[0]: n for n in notes}
    assert "two tasks" in by["latency_by_task"]
    assert "two precisions" in by["precision_panels"]
    assert "two devices and two models" in by["device_model_heatmap"]
    assert "two load levels" in by["throughput_vs_latency"]
    assert "video" in by["video_rtf"]
    assert "quality score" in by["speed_vs_quality"]
    assert "rating histogram" in by["score_histograms"]


def test_latency_distribution_marks_p90_p95_and_configs_without_records() -> None:
    source, cs = real()
    samples = real_samples(source)
    first = next(iter(samples))
    drawn, _ = drawn_by_name(cs, {first: samples[first]})
    d = drawn["latency_distribution"]
    labels = [t.get_text() for t in d.figure.legends[0].get_texts()]
    assert {"p90", "p95", "median"} <= set(labels)
    other = next(c.label for c in cs if c.key != first)
    assert f"only, no box): {other}." in d.caption


def test_colour_of_a_model_is_the_same_in_every_plot() -> None:
    cs = rich()
    drawn, _ = drawn_by_name(cs, samples_for(cs))
    colours = plots._colours(cs)
    fig = drawn["tokens_per_s"].figure
    from matplotlib.colors import to_hex

    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    bars = fig.axes[0].patches
    by_label = dict(zip(plots.fit_labels([c.label for c in cs]), cs, strict=True))
    for label, bar in zip(labels, bars, strict=True):
        assert to_hex(bar.get_facecolor()) == colours[by_label[label].model]


def test_comparison_of_real_runs_draws_change_and_values(tmp_path: Path) -> None:
    run = load_run(REAL)
    comparison = to_json(compare_runs(run, run, min_samples=3))
    _, cs = real()
    drawn, notes = draw(cs, {}, tmp_path, comparison=comparison)
    names = {p.name for p in drawn}
    assert {"comparison", "comparison_values"} <= names
    caption = next(p.caption for p in drawn if p.name == "comparison")
    assert "change_pct" in caption
    assert not [n for n in notes if "comparison" in n]


def hand_comparison() -> dict[str, Any]:
    def metric(name: str, verdict: str, base: float, cur: float, ci: list[float] | None,
               kind: str = "ratio", gated: bool = True) -> dict[str, Any]:
        return {"metric": name, "verdict": verdict, "gated": gated, "baseline": base,
                "current": cur, "effect_kind": kind, "ci": ci,
                "change_pct": 100 * (cur / base - 1), "run_level": None}

    return {
        "settings": {"confidence": 0.95},
        "pairs": [
            {"benchmark": {"id": "suite.py::test_caption[tiny-vlm-q4_k_m-cpu]"},
             "metrics": [metric("p50_latency", "regressed", 1.0, 1.3, [1.2, 1.4]),
                         metric("tokens_per_s", "unchanged", 60.0, 59.0, [0.95, 1.02]),
                         metric("parse_rate", "inconclusive", 0.9, 0.85, [-0.12, 0.02],
                                kind="difference")]},
            {"benchmark": {"id": "suite.py::test_caption[gemma3-270m-q4_k_m-cpu]"},
             "metrics": [metric("p50_latency", "improved", 1.0, 0.7, [0.6, 0.8]),
                         metric("tokens_per_s", "unchanged", 60.0, 61.0, None)]},
        ],
        "windows": [],
    }


def test_comparison_draws_intervals_and_verdicts() -> None:
    from matplotlib.collections import LineCollection

    _, cs = real()
    drawn, _ = drawn_by_name(cs, {}, hand_comparison())
    change = drawn["comparison"]
    texts = [t.get_text() for t in change.figure.axes[0].texts]
    assert "+30.0% REGRESSED" in texts
    assert "-30.0% improved" in texts
    # the ratio interval [1.2, 1.4] is drawn as +20%..+40%
    segments = [seg for coll in change.figure.axes[0].collections
                if isinstance(coll, LineCollection) for seg in coll.get_segments()]
    assert any(np.allclose(sorted(s[:, 0]), [20.0, 40.0]) for s in segments)
    # the rate difference [-0.12, +0.02] over a baseline of 0.9, in percent
    assert any(np.allclose(sorted(s[:, 0]), [-100 * 0.12 / 0.9, 100 * 0.02 / 0.9])
               for s in segments)
    values = drawn["comparison_values"]
    titles = [ax.get_title() for ax in values.figure.axes]
    assert titles[0].startswith("p50_latency")


def test_without_comparison_no_comparison_plot_and_no_note(tmp_path: Path) -> None:
    _, cs = real()
    drawn, notes = draw(cs, {}, tmp_path)
    assert not {p.name for p in drawn} & plots.COMPARISON_PLOTS
    assert not [n for n in notes if "comparison" in n]


def test_plots_of_a_process_that_cannot_start_are_drawn_here(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, cs = real()
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    drawn, notes = draw(cs, {}, tmp_path, workers=2)
    alone, _ = draw(cs, {}, tmp_path / "alone", workers=1)
    assert drawn == alone
    extra = [n for n in notes if not n.startswith("plot ")]
    assert len(extra) == 1
    assert extra[0].startswith("plots drawn here instead: cannot start a process")


def test_fifty_configs_and_100k_records_stay_small(tmp_path: Path) -> None:
    source, (text, image) = real_entries()
    entries = [variant(image if i % 2 else text, model=f"model-{i % 10}",
                       precision=("q4_k_m", "q8_0", "f16", "bf16", "q2_k")[i // 10],
                       speed=0.5 + 0.05 * i, energy=energy(2.0 + i, 0.1 + 0.01 * i),
                       quality=quality(0.5, [(i + k) % 10 + 1 for k in range(30)]))
               for i in range(50)]
    cs = configs(entries, source)
    drawn, notes = draw(cs, samples_for(cs, n=2000), tmp_path)
    assert len(drawn) >= 10, notes
    for plot in drawn:
        assert_files(tmp_path, plot)


def test_matplotlib_is_imported_lazily() -> None:
    code = ("import sys, pytest_vlmbench.report.plots as p; "
            "print('matplotlib' in sys.modules, p.Samples.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "Samples"]


def test_without_matplotlib_no_plots_and_one_note(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    reason = available()
    assert reason is not None
    assert "matplotlib is not installed" in reason
    assert "pip install 'pytest-vlmbench[report]'" in reason
    _, cs = real()
    drawn, notes = draw(cs, {}, tmp_path)
    assert drawn == []
    assert notes == [f"plots left out: {reason}"]
    assert not (tmp_path / "plots").exists()


def test_available_with_matplotlib() -> None:
    assert available() is None
