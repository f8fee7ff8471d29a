"""`vlm_power` windows in real sessions: tegrastats replayed, and no meter on this CPU.

A window's energy is checked against an integration by hand of the replayed watts over
the power trace's timestamps (`.power.jsonl`), and against power x time where the
replayed power is constant; without a meter every energy figure is null with a reason
and the duration is still measured.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_vlmbench.results import models
from tests.conftest import TEGRASTATS_REPLAY as REPLAY
from tests.conftest import Project
from tests.test_read_models import misfits

ROOT = Path(__file__).resolve().parent.parent
ENERGY = ("energy_j", "avg_power_w", "peak_power_w", "idle_power_w", "above_idle_energy_j",
          "rails_j")


def constant(tmp_path: Path, milliwatts: int) -> Path:
    """A real Orin Nano line with its input rail set to a constant value."""
    tokens = (REPLAY / "orin_nano_jp6.txt").read_text().splitlines()[0].split()
    at = tokens.index("VDD_IN") + 1
    tokens[at] = f"{milliwatts}mW/{milliwatts}mW"
    path = tmp_path / "constant.txt"
    path.write_text(" ".join(tokens) + "\n")
    return path


METER = ("--power-meter=tegrastats", "--vlm-power-interval-ms=10", "--vlm-idle-s=0.2",
         "-p", "no:benchmark")

ONE_WINDOW = """
import time

def test_stage(vlm_power):
    with vlm_power.measure("asr") as m:
        time.sleep(0.3)
    assert m.duration_s >= 0.3
"""


def test_a_windows_energy_is_the_integral_of_the_replayed_power(
    project: Project, tegrastats: Any
) -> None:
    tegrastats(REPLAY / "orin_nano_jp6.txt")  # 12.479 W and 4.824 W, alternating
    project.pytester.makepyfile(test_stage=ONE_WINDOW)
    out = project.run(*METER)
    out.run.assert_outcomes(passed=1)
    doc = out.doc()
    assert doc["benchmarks"] == []  # no vlm_bench: the document holds the window alone
    [w] = doc["windows"]
    assert misfits(w, models.Window) == []
    assert (w["test"], w["name"], w["seq"], w["parent"]) == (
        "test_stage.py::test_stage", "asr", 1, None)
    assert (w["run_id"], w["meter"], w["absent_reason"]) == (doc["run_id"], "tegrastats", None)
    trace = [json.loads(line) for line in
             (out.out.parent / doc["power_trace_file"]).read_text().splitlines()]
    meter = [r for r in trace if r["kind"] == "meter"]
    t = np.array([r["t_ns"] for r in meter], dtype=float)
    p = np.array([r["power_w"] for r in meter])
    t0, t1 = w["t_start_ns"], w["t_end_ns"]
    assert t[0] <= t0 < t1 <= t[-1]
    grid = np.linspace(t0, t1, 200_001)
    by_hand = float(np.trapezoid(np.interp(grid, t, p), grid) / 1e9)
    assert w["duration_s"] == pytest.approx((t1 - t0) / 1e9)
    assert w["duration_s"] >= 0.3
    assert w["energy_j"] == pytest.approx(by_hand, rel=1e-4)
    assert w["avg_power_w"] == pytest.approx(w["energy_j"] / w["duration_s"], rel=1e-12)
    assert 4.824 <= w["avg_power_w"] <= 12.479
    assert w["peak_power_w"] == 12.479  # a 0.3 s window at 10 ms holds both values
    assert w["idle_power_w"] == doc["power"]["idle"]["power_w"]
    assert w["above_idle_energy_j"] == pytest.approx(
        w["energy_j"] - w["idle_power_w"] * w["duration_s"], rel=1e-9)
    assert set(w["rails_j"]) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}
    assert w["rails_j"]["VDD_IN"] == pytest.approx(w["energy_j"], rel=1e-9)  # the total
    assert (w["slo"], w["slo_passed"]) == ([], None)
    assert "vlm_power window 'asr'" in doc["power"]["idle"]["note"]


NO_METER = """
import time

def test_stage(vlm_power):
    assert vlm_power.meter is None
    assert vlm_power.reading() is None
    with vlm_power.measure("prepare") as m:
        time.sleep(0.05)
    assert m.energy_j is None and m.avg_power_w is None and m.rails_j is None
    assert m.absent_reason.startswith("no power meter: ")
    assert m.duration_s >= 0.05
"""


@pytest.mark.parametrize(("args", "reason"), [
    (("--power-meter=none",), "no power meter: --power-meter=none"),
    ((), "no power meter: no RAPL energy counters under /sys/class/powercap*"),
], ids=["none", "auto"])
def test_without_a_meter_every_energy_figure_is_absent_with_the_reason(
    project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    args: tuple[str, ...], reason: str,
) -> None:
    monkeypatch.setenv("VLMBENCH_SYSFS_ROOT", str(tmp_path / "empty-root"))  # no powercap
    project.pytester.makepyfile(test_stage=NO_METER)
    out = project.run(*args, "-p", "no:benchmark")
    out.run.assert_outcomes(passed=1)
    doc = out.doc()
    [w] = doc["windows"]
    assert misfits(w, models.Window) == []
    assert all(w[key] is None for key in ENERGY)  # type: ignore[literal-required]
    assert w["meter"] is None
    assert fnmatch.fnmatch(w["absent_reason"], reason), w["absent_reason"]
    assert w["duration_s"] >= 0.05
    assert w["duration_s"] == pytest.approx((w["t_end_ns"] - w["t_start_ns"]) / 1e9)
    assert doc["power_trace_file"] is None


NESTED = """
import threading
import time

def test_nested(vlm_power):
    with vlm_power.measure("outer") as outer:
        time.sleep(0.05)
        with vlm_power.measure("inner") as inner:
            time.sleep(0.1)
        done = []

        def work():
            with vlm_power.measure("thread") as w:
                time.sleep(0.05)
            done.append(w)

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    assert (outer.parent, inner.parent, done[0].parent) == (None, "outer", None)
"""


def test_nested_windows_record_their_parent_and_overlap_in_energy(
    project: Project, tegrastats: Any, tmp_path: Path
) -> None:
    tegrastats(constant(tmp_path, 5000))  # 5 W: every window's energy is 5 W x its duration
    project.pytester.makepyfile(test_nested=NESTED)
    out = project.run(*METER)
    out.run.assert_outcomes(passed=1)
    windows = {w["name"]: w for w in out.doc()["windows"]}
    assert [w["seq"] for w in windows.values()] == [1, 2, 3]  # in call order, not close order
    outer, inner, thread = windows["outer"], windows["inner"], windows["thread"]
    assert (outer["parent"], inner["parent"], thread["parent"]) == (None, "outer", None)
    for w in (outer, inner, thread):
        assert w["energy_j"] == pytest.approx(5.0 * w["duration_s"], rel=1e-9)
        assert w["avg_power_w"] == pytest.approx(5.0)
        assert outer["t_start_ns"] < w["t_start_ns"] or w is outer
        assert w["t_end_ns"] <= outer["t_end_ns"]
    assert inner["energy_j"] < outer["energy_j"]
    assert inner["energy_j"] + thread["energy_j"] < outer["energy_j"]


SLOS = """
import time

def test_breach(vlm_power):
    with vlm_power.measure("asr", slo={"max_energy_j": 1e-9, "max_duration_s": 60}):
        time.sleep(0.05)

def test_met(vlm_power):
    with vlm_power.measure("tag", slo={"max_avg_power_w": 6, "max_peak_power_w": 6}):
        time.sleep(0.05)
"""


def test_a_window_slo_breach_fails_the_test_with_one_line(
    project: Project, tegrastats: Any, tmp_path: Path
) -> None:
    tegrastats(constant(tmp_path, 5000))
    project.pytester.makepyfile(test_slo=SLOS)
    out = project.run(*METER)
    out.run.assert_outcomes(passed=1, failed=1)
    out.run.stdout.fnmatch_lines([
        "*_ test_breach _*",
        "SLO breached (window 'asr'): max_energy_j = * J > limit 1e-09 J",
    ])
    assert "max_duration_s =" not in out.run.stdout.str()  # a met objective is not named
    assert "Traceback" not in out.run.stdout.str()
    breach, met = out.doc()["windows"]
    assert breach["slo_passed"] is False
    assert [(v["metric"], v["passed"]) for v in breach["slo"]] == [
        ("max_energy_j", False), ("max_duration_s", True)]
    assert breach["slo"][0]["measured"] == breach["energy_j"]
    assert met["slo_passed"] is True
    assert [v["measured"] for v in met["slo"]] == pytest.approx([5.0, 5.0])


def test_unmeasured_energy_breaches_a_window_slo(project: Project) -> None:
    project.pytester.makepyfile(test_slo="""
def test_breach(vlm_power):
    with vlm_power.measure("asr", slo={"max_energy_j": 50, "max_duration_s": 60}):
        pass
""")
    out = project.run("--power-meter=none", "-p", "no:benchmark")
    out.run.assert_outcomes(failed=1)
    out.run.stdout.fnmatch_lines([
        "SLO breached (window 'asr'): max_energy_j = not measured (no power meter: "
        "--power-meter=none) > limit 50 J"])
    [w] = out.doc()["windows"]
    assert [(v["metric"], v["measured"], v["passed"]) for v in w["slo"]] == [
        ("max_energy_j", None, False), ("max_duration_s", w["duration_s"], True)]


def test_an_unknown_window_slo_is_one_clear_error(project: Project) -> None:
    project.pytester.makepyfile(test_slo="""
def test_typo(vlm_power):
    with vlm_power.measure("asr", slo={"max_joules": 5}):
        pass
""")
    out = project.run("--power-meter=none", "-p", "no:benchmark")
    assert out.run.ret == pytest.ExitCode.USAGE_ERROR
    out.run.stdout.fnmatch_lines([
        "test_slo.py::test_typo: vlm_power.measure('asr'): unknown window SLO 'max_joules'; "
        "known: max_energy_j, max_avg_power_w, max_peak_power_w, max_above_idle_energy_j, "
        "max_duration_s"])
    assert "Traceback" not in out.run.stdout.str()
    assert not out.out.exists()  # nothing was measured


READING = """
import time

def test_reading(vlm_power):
    before = time.perf_counter_ns()
    r = vlm_power.reading()
    assert r is not None and r.meter == "tegrastats" and vlm_power.absent_reason is None
    assert r.power_w == 5.0 and r.rails_w["VDD_IN"] == 5.0
    assert r.t_ns <= time.perf_counter_ns()
    time.sleep(0.05)
    assert vlm_power.reading().t_ns > before  # the latest, not the first
"""


def test_reading_gives_the_latest_instant_reading(
    project: Project, tegrastats: Any, tmp_path: Path
) -> None:
    tegrastats(constant(tmp_path, 5000))
    project.pytester.makepyfile(test_reading=READING)
    out = project.run(*METER)
    out.run.assert_outcomes(passed=1)
    assert not out.out.exists()  # no window, no benchmark: no document


def test_a_window_around_a_benchmark_is_written_beside_it(project: Project) -> None:
    project.pytester.makepyfile(test_bench="""
from tiny_tasks import CAPTION

def test_caption(vlm_bench, vlm_power):
    with vlm_power.measure("caption"):
        vlm_bench.run(CAPTION)
""")
    out = project.run("--power-meter=none", "--vlm-samples=2", "--vlm-warmup=0",
                      "--vlm-models=tiny-text", "-p", "no:benchmark")
    out.run.assert_outcomes(passed=1)
    doc = out.doc()
    [bench] = doc["benchmarks"]
    [w] = doc["windows"]
    assert w["test"] == bench["test"]
    assert w["duration_s"] >= bench["summary"]["wall_s"]
    assert misfits(doc, models.ResultsDocument) == []


def test_figures_of_a_counter_meter_and_of_an_uncovered_span() -> None:
    """Counter readings (RAPL, NVML's energy): the counter's difference, linear between
    readings; a span the readings do not cover is absent, never extrapolated."""
    from pytest_vlmbench.power import Reading
    from pytest_vlmbench.power.windows import figures

    second = 1_000_000_000
    readings = [Reading(t_ns=i * second, energy_j=3.0 * i) for i in range(5)]  # 3 W
    got = figures(readings, second // 2, 3 * second, idle_power_w=1.0)
    assert got["energy_j"] == pytest.approx(7.5)
    assert got["avg_power_w"] == pytest.approx(3.0)
    assert got["above_idle_energy_j"] == pytest.approx(7.5 - 2.5)
    assert (got["rails_j"], got["absent_reason"]) == (None, None)
    late = figures(readings, 3 * second, 5 * second, idle_power_w=1.0)
    assert late["energy_j"] is None
    assert late["idle_power_w"] == 1.0
    assert "do not cover the window" in late["absent_reason"]


@pytest.mark.parametrize("metered", [True, False], ids=["tegrastats-replay", "no-meter"])
def test_the_shipped_stage_example_writes_its_window(
    project: Project, tegrastats: Any, metered: bool
) -> None:
    """benchmarks/test_stage_power.py as shipped: its photo-preparation window is in the
    results, with energy under the tegrastats replay and absent, with why, without."""
    root = project.pytester.path
    (root / "benchmarks").mkdir()
    (root / "benchmarks" / "test_stage_power.py").write_text(
        (ROOT / "benchmarks" / "test_stage_power.py").read_text())
    (root / "fixtures").mkdir()
    (root / "fixtures" / "images").symlink_to(ROOT / "fixtures" / "images")
    if metered:
        tegrastats(REPLAY / "orin_nano_jp6.txt")
    out = project.run("benchmarks/test_stage_power.py",
                      *(METER if metered else ("--power-meter=none",)))
    out.run.assert_outcomes(passed=1)
    [w] = out.doc()["windows"]
    assert (w["test"], w["name"]) == (
        "benchmarks/test_stage_power.py::test_prepare_photos", "prepare_photos")
    if metered:
        assert w["energy_j"] is not None
        assert w["energy_j"] > 0
        assert w["absent_reason"] is None
        assert w["rails_j"]
    else:
        assert all(w[k] is None for k in ENERGY)
        assert w["absent_reason"] == "no power meter: --power-meter=none"
