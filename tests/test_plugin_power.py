"""Power meters in real benchmark sessions: tegrastats replayed, no meter on this CPU.

The tegrastats replay (fixtures/tegrastats/bin/tegrastats, first on PATH) prints
recorded lines at the requested interval; energy, J/token and tokens/s/W are checked
against a calculation by hand from the replayed watts, the power trace's timestamps
and the records.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_vlmbench.power.tegrastats import parse_line, total_rail
from tests.conftest import Project

ROOT = Path(__file__).resolve().parent.parent
REPLAY = ROOT / "fixtures" / "tegrastats"

CAPTION = """
from tiny_tasks import CAPTION

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION)
"""


def _constant_lines(tmp_path: Path, milliwatts: int) -> Path:
    """A real Orin Nano line with its rails set to constant values (known integral)."""
    line = (REPLAY / "orin_nano_jp6.txt").read_text().splitlines()[0]
    tokens = line.split()
    for i, tok in enumerate(tokens[:-1]):
        if tok == "VDD_IN":
            tokens[i + 1] = f"{milliwatts}mW/{milliwatts}mW"
    path = tmp_path / "constant.txt"
    path.write_text(" ".join(tokens) + "\n")
    return path


def _power_args(*extra: str) -> tuple[str, ...]:
    return ("--power-meter=tegrastats", "--vlm-power-interval-ms=10", "--vlm-idle-s=0.2",
            "--vlm-samples=6", "-p", "no:benchmark", *extra)


def _window(records: list[dict[str, Any]], bench_id: str) -> tuple[int, int, int]:
    mine = [r for r in records if r["benchmark"] == bench_id and r["phase"] == "measure"]
    t0 = min(r["t_start_ns"] for r in mine)
    t1 = max(r["t_end_ns"] for r in mine)
    tokens = sum(r["completion_tokens"] for r in mine if r["error"] is None)
    return t0, t1, tokens


def test_constant_power_gives_energy_by_hand(project: Project, tegrastats: Any,
                                             tmp_path: Path) -> None:
    tegrastats(_constant_lines(tmp_path, 5000))  # 5 W, every line
    project.pytester.makepyfile(test_bench=CAPTION)
    out = project.run(*_power_args())
    out.run.assert_outcomes(passed=2)
    doc = out.doc()
    records = out.records()
    assert doc["power"]["meter"] == "tegrastats"
    assert doc["power"]["info"]["total_method"].startswith("VDD_IN")
    assert doc["power"]["samples"] > 0
    assert doc["power"]["idle"]["power_w"] == pytest.approx(5.0)
    assert doc["power"]["cost"]["external_cpu_s"] is not None
    for bench in doc["benchmarks"]:
        energy = bench["summary"]["energy"]
        t0, t1, tokens = _window(records, bench["id"])
        window_s = (t1 - t0) / 1e9
        assert energy["window_s"] == pytest.approx(window_s)
        assert energy["energy_j"] == pytest.approx(5.0 * window_s, rel=1e-9)
        assert energy["avg_power_w"] == pytest.approx(5.0)
        assert energy["tokens"] == tokens
        assert energy["energy_per_token_j"] == pytest.approx(5.0 * window_s / tokens)
        assert energy["tokens_per_s_per_w"] == pytest.approx(tokens / (5.0 * window_s))
        assert energy["above_idle_energy_j"] == pytest.approx(0.0, abs=1e-9)
        assert energy["rails_energy_j"]["VDD_IN"] == pytest.approx(5.0 * window_s)
    out.run.stdout.fnmatch_lines(["*power: tegrastats every 10 ms*idle 5.00 W*"])


def test_recorded_orin_lines_match_an_independent_integration(
    project: Project, tegrastats: Any
) -> None:
    lines = tegrastats(REPLAY / "orin_nano_jp6.txt")  # 12.479 W and 4.824 W, alternating
    watts = {total_rail(parse_line(text).rails_mw)[0]  # type: ignore[union-attr]
             for text in lines.read_text().splitlines()}
    assert watts == {12.479, 4.824}
    project.pytester.makepyfile(test_bench=CAPTION)
    out = project.run(*_power_args())
    out.run.assert_outcomes(passed=2)
    doc = out.doc()
    records = out.records()
    trace_path = out.out.parent / doc["power_trace_file"]
    trace = [json.loads(line) for line in trace_path.read_text().splitlines()]
    meter = [t for t in trace if t["kind"] == "meter"]
    assert {m["power_w"] for m in meter} == watts  # the replayed values, nothing invented
    t = np.array([m["t_ns"] for m in meter], dtype=float)
    p = np.array([m["power_w"] for m in meter])
    for bench in doc["benchmarks"]:
        t0, t1, tokens = _window(records, bench["id"])
        grid = np.linspace(t0, t1, 200_001)
        by_hand = float(np.trapezoid(np.interp(grid, t, p), grid) / 1e9)
        energy = bench["summary"]["energy"]
        assert energy["energy_j"] == pytest.approx(by_hand, rel=1e-4)
        assert energy["energy_per_token_j"] == pytest.approx(by_hand / tokens, rel=1e-4)
        assert energy["tokens_per_s_per_w"] == pytest.approx(tokens / by_hand, rel=1e-4)
        assert 4.824 <= energy["avg_power_w"] <= 12.479
        assert energy["peak_power_w"] <= 12.479


def test_energy_slo_breach_fails_with_one_line(project: Project, tegrastats: Any,
                                               tmp_path: Path) -> None:
    tegrastats(_constant_lines(tmp_path, 5000))
    project.pytester.makepyfile(test_bench="""
import pytest
from tiny_tasks import CAPTION

@pytest.mark.vlm_slo(max_energy_per_token_j=1e-12)
def test_caption(vlm_bench):
    vlm_bench.run(CAPTION)
""")
    out = project.run(*_power_args("--vlm-models=tiny-text"))
    out.run.assert_outcomes(failed=1)
    out.run.stdout.fnmatch_lines(["*SLO breached (n=6): max_energy_per_token_j = * J/token > "
                                  "limit 1e-12 J/token*"])


def test_no_meter_on_this_cpu_is_said_once_and_invents_nothing(
    project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VLMBENCH_SYSFS_ROOT", str(tmp_path / "empty-root"))  # no powercap
    project.pytester.makepyfile(test_bench="""
import pytest
from tiny_tasks import CAPTION

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION)

@pytest.mark.vlm_slo(min_tokens_per_s_per_w=1.0)
def test_needs_energy(vlm_bench):
    vlm_bench.run(CAPTION)
""")
    out = project.run("--vlm-samples=3", "-p", "no:benchmark", "--vlm-models=tiny-text")
    out.run.assert_outcomes(passed=1, failed=1)
    text = out.run.stdout.str()
    assert text.count("power: no meter") == 1
    assert "no RAPL energy counters under /sys/class/powercap" in text
    out.run.stdout.fnmatch_lines(["*min_tokens_per_s_per_w = not measured (no energy reading*"])
    doc = out.doc()
    assert doc["power"]["meter"] is None
    assert "RAPL" in doc["power"]["absent_reason"]
    assert doc["power_trace_file"] is None
    for bench in doc["benchmarks"]:
        assert bench["summary"]["energy"] is None
        assert bench["summary"]["memory"]["rss_peak_sampled_bytes"] is None or \
            bench["summary"]["memory"]["rss_peak_sampled_bytes"] > 0
        assert bench["summary"]["roofline"]["bound_tokens_per_s"] is None
        assert "--vlm-bandwidth-gbs" in bench["summary"]["roofline"]["absent"]
    assert "energy_j" not in json.dumps(doc["benchmarks"]).replace('"energy": null', "")


def test_roofline_with_a_given_bandwidth(project: Project) -> None:
    project.pytester.makepyfile(test_bench=CAPTION)
    out = project.run("--vlm-samples=3", "-p", "no:benchmark", "--power-meter=none",
                      "--vlm-bandwidth-gbs=20", "--vlm-models=tiny-text")
    out.run.assert_outcomes(passed=1)
    roof = out.doc()["benchmarks"][0]["summary"]["roofline"]
    assert roof["bytes_per_token"] > 0
    assert roof["bound_tokens_per_s"] == pytest.approx(20e9 / roof["bytes_per_token"])
    assert roof["percent_of_bound"] == pytest.approx(
        100 * roof["achieved_tokens_per_s"] / roof["bound_tokens_per_s"])
    assert math.isfinite(roof["percent_of_bound"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--power-meter=rapl",), "*ERROR: pytest-vlmbench: --power-meter=rapl: no RAPL energy "
                                  "counters under /sys/class/powercap*"),
        (("--power-meter=bogus",), "*ERROR: pytest-vlmbench: unknown power meter 'bogus'*"),
        (("--vlm-power-interval-ms=0",), "*expected a number >= 1, got 0*"),
    ],
)
def test_meter_usage_errors(project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                            args: tuple[str, ...], message: str) -> None:
    monkeypatch.setenv("VLMBENCH_SYSFS_ROOT", str(tmp_path / "empty-root"))
    project.pytester.makepyfile(test_bench=CAPTION)
    out = project.run(*args)
    assert out.run.ret == pytest.ExitCode.USAGE_ERROR
    out.run.stderr.fnmatch_lines([message])
    assert not out.out.exists()  # nothing loaded, nothing written
