"""Power windows (vlm_power.measure) in compare, the gate, the tables and the CLI.

The documents are the real run's (tests/data, via test_compare.write_run) or a real run
of the `project` fixture, with a `windows` list added in vlm_power's format: one object
per window, a name measured several times being several windows (samples).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_vlmbench import cli, compare
from pytest_vlmbench.compare import (
    EXIT_NOTHING_COMPARABLE,
    EXIT_OK,
    EXIT_REGRESSION,
    Comparison,
    RuleError,
    compare_runs,
    load_baseline,
    load_run,
    parse_rule,
    parse_rules,
)
from pytest_vlmbench.metrics import registry
from pytest_vlmbench.plugin import options
from pytest_vlmbench.report import table
from pytest_vlmbench.results import document
from tests.conftest import Project
from tests.test_compare import BASE16, TEST_ID, Bench, latencies, write_run

NO_METER = "no meter: no power meter found on this machine (--vlm-power=auto)"
LABEL = "test_photo_score[tiny-vlm-q4_k_m-cpu] [window asr]"


@pytest.fixture(autouse=True)
def _windows_in_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until the schema declares `windows` (vlm_power's part), validate the rest of a
    document: the window objects are this file's own, in the brief's exact format."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    if "windows" in document.schema()["properties"]:
        return
    strict = document.validate

    def validate(doc: Any, source: str = "results document") -> None:
        strict({k: v for k, v in doc.items() if k != "windows"}
               if isinstance(doc, dict) else doc, source)

    monkeypatch.setattr(document, "validate", validate)


def window(run_id: str, seq: int, duration_s: float, energy_j: float | None, *,
           name: str = "asr", test: str = TEST_ID,
           slo_passed: bool | None = None) -> dict[str, Any]:
    """One window as vlm_power writes it; energy None: a session without a meter."""
    t0 = 10**9 * (100 + 10 * seq)
    measured = energy_j is not None
    return {
        "test": test, "name": name, "seq": seq, "run_id": run_id, "parent": None,
        "t_start_ns": t0, "t_end_ns": t0 + int(duration_s * 1e9), "duration_s": duration_s,
        "meter": "tegrastats" if measured else None,
        "absent_reason": None if measured else NO_METER,
        "energy_j": energy_j,
        "avg_power_w": energy_j / duration_s if energy_j is not None else None,
        "peak_power_w": 1.2 * energy_j / duration_s if energy_j is not None else None,
        "idle_power_w": 2.0 if measured else None,
        "above_idle_energy_j": energy_j - 2.0 * duration_s if energy_j is not None else None,
        "rails_j": {"VDD_IN": energy_j} if energy_j is not None else None,
        "slo": [], "slo_passed": slo_passed,
    }


def windows(run_id: str, durations: Sequence[float], energies: Sequence[float] | None,
            **kwargs: Any) -> list[dict[str, Any]]:
    return [window(run_id, i, d, None if energies is None else energies[i], **kwargs)
            for i, d in enumerate(durations)]


def write(directory: Path, run_id: str, wins: list[dict[str, Any]], *,
          hour: int = 10, benches: Sequence[Bench] = (Bench(BASE16),)) -> Path:
    """The real run's document with these windows added (and its records file)."""
    path = write_run(directory, run_id, benches, started_at=f"2026-11-23T{hour:02}:00:00+00:00")
    doc = json.loads(path.read_text())
    doc["windows"] = wins
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


DUR = latencies(12, 1.0, 0.03, seed=11)
ENERGY = latencies(12, 10.0, 0.03, seed=12)


def pair(tmp_path: Path, base: list[dict[str, Any]], cur: list[dict[str, Any]],
         rules: Sequence[str] | None = None) -> Comparison:
    b = write(tmp_path, "base", base)
    c = write(tmp_path, "cur", cur, hour=11)
    return compare_runs(load_run(b), load_run(c), parse_rules(rules) if rules else None)


def results(c: Comparison) -> dict[str, compare.MetricResult]:
    [w] = c.windows
    return {m.metric: m for m in w.metrics}


def test_window_metrics_are_declared_apart_from_the_benchmarks() -> None:
    assert list(compare.WINDOW_METRICS) == ["window_energy", "window_duration"]
    assert not set(compare.WINDOW_METRICS) & set(compare.METRICS)
    assert all(m.column is None and m.slo is None for m in compare.WINDOW_METRICS.values())
    assert parse_rule("window_energy:+10%").threshold == pytest.approx(0.10)
    with pytest.raises(RuleError, match="window_energy gets worse as it rises"):
        parse_rule("window_energy:-10%")
    with pytest.raises(ValueError, match="a window metric is read from each window"):
        registry.Metric("w", "J", True, "x", ("energy_j",), applies_to="window")


def test_twice_the_energy_regresses_and_gates_only_when_a_rule_names_it(
        tmp_path: Path) -> None:
    base = windows("base", DUR, ENERGY)
    cur = windows("cur", latencies(12, 1.0, 0.03, seed=13),
                  [2 * e for e in latencies(12, 10.0, 0.03, seed=14)])
    c = pair(tmp_path, base, cur)
    r = results(c)
    assert r["window_energy"].verdict == "regressed"
    assert r["window_energy"].mode == "one-run"
    assert r["window_energy"].n_current == 12
    assert r["window_energy"].change_pct == pytest.approx(100, abs=8)
    assert r["window_duration"].verdict == "unchanged"
    assert not r["window_energy"].gated
    assert c.exit_status == EXIT_OK
    assert c.windows[0].key.label == LABEL

    gated = pair(tmp_path, base, cur, ["window_energy:+10%"])
    assert results(gated)["window_energy"].gated
    assert gated.exit_status == EXIT_REGRESSION
    assert [(p.key.label, m.metric) for p, m in gated.gated] == [(LABEL, "window_energy")]
    assert gated.headline == "1 regression / 1 benchmark, 1 window"


def test_the_same_windows_again_are_unchanged(tmp_path: Path) -> None:
    c = pair(tmp_path, windows("base", DUR, ENERGY),
             windows("cur", latencies(12, 1.0, 0.03, seed=21),
                     latencies(12, 10.0, 0.03, seed=22)), ["window_energy:+10%"])
    assert {m: r.verdict for m, r in results(c).items()} == {
        "window_energy": "unchanged", "window_duration": "unchanged"}
    assert c.exit_status == EXIT_OK


def test_without_a_meter_energy_is_inconclusive_and_duration_still_judged(
        tmp_path: Path) -> None:
    slow = [1.6 * d for d in latencies(12, 1.0, 0.03, seed=31)]
    c = pair(tmp_path, windows("base", DUR, ENERGY), windows("cur", slow, None),
             ["window_energy:+10%", "window_duration:+10%"])
    r = results(c)
    assert r["window_energy"].verdict == "inconclusive"
    assert r["window_energy"].note == f"current: {NO_METER}"
    assert r["window_energy"].current is None
    assert r["window_duration"].verdict == "regressed"  # +60% > 10% + 25%
    assert c.exit_status == EXIT_REGRESSION
    back = pair(tmp_path, windows("base", DUR, None), windows("cur", DUR, ENERGY))
    assert results(back)["window_energy"].note == f"baseline: {NO_METER}"


def test_several_baseline_runs_judge_windows_run_by_run(tmp_path: Path) -> None:
    for i, center in enumerate((10.0, 10.4, 9.7, 10.2, 9.9)):
        write(tmp_path, f"b{i}", windows(f"b{i}", DUR, latencies(12, center, 0.03, seed=40 + i)),
              hour=1 + i)
    cur = write(tmp_path / "..", "cur", windows("cur", DUR, latencies(12, 20.0, 0.03, seed=50)),
                hour=11)
    c = compare_runs(load_baseline([tmp_path], runs=5), load_run(cur),
                     parse_rules(["window_energy:+10%"]))
    r = results(c)
    assert r["window_energy"].mode == "runs"
    assert r["window_energy"].k == 5
    assert r["window_energy"].verdict == "regressed"
    assert c.exit_status == EXIT_REGRESSION
    assert r["window_duration"].verdict == "unchanged"
    assert [w.run_id for w in c.windows[0].baselines] == ["b4", "b3", "b2", "b1", "b0"]


def test_new_and_vanished_windows_are_listed(tmp_path: Path) -> None:
    c = pair(tmp_path, windows("base", DUR, ENERGY, name="asr"),
             windows("cur", DUR, ENERGY, name="tagging"))
    assert c.windows == []
    assert [k.name for k in c.new_windows] == ["tagging"]
    assert [k.name for k in c.vanished_windows] == ["asr"]
    lines = compare.render_table(c)
    assert f"  {TEST_ID} [window tagging]" in lines
    assert f"  {TEST_ID} [window asr]" in lines
    assert "1 new, 1 vanished" in lines[-1]
    data = compare.to_json(c)
    assert data["new_windows"] == [{"test": TEST_ID, "name": "tagging"}]


def test_windows_alone_are_comparable(tmp_path: Path) -> None:
    """A test that only measures a stage (no vlm_bench) is still compared."""
    c = pair(tmp_path, windows("base", DUR, ENERGY),
             windows("cur", DUR, [2 * e for e in ENERGY]), ["none,window_energy:+10%"])
    assert c.exit_status == EXIT_REGRESSION
    other = compare_runs(
        load_run(write(tmp_path, "b2", [], benches=[Bench(BASE16, id="t.py::test_a")])),
        load_run(write(tmp_path, "c2", [], hour=11)))
    assert other.exit_status == EXIT_NOTHING_COMPARABLE


def test_window_rows_render_in_the_table_markdown_and_json(tmp_path: Path) -> None:
    c = pair(tmp_path, windows("base", DUR, ENERGY),
             windows("cur", DUR, [2 * e for e in ENERGY]), ["window_energy:+10%"])
    lines = compare.render_table(c)
    rows = [line for line in lines if LABEL in line]
    assert len(rows) == 2
    assert rows[0].startswith("!!")
    assert "window_energy" in rows[0]
    assert "REGRESSED" in rows[0]
    base_j = f"{np.median(ENERGY):.4g} J"  # the median per window, with its unit
    assert base_j in rows[0]
    assert f"{2 * np.median(ENERGY):.4g} J" in rows[0]
    assert "window_duration" in rows[1]
    assert "unchanged" in rows[1]
    md = compare.render_markdown(c)
    assert f"| `{LABEL}` | window_energy |" in md
    assert "**:x: REGRESSED**" in md
    data = compare.to_json(c)
    [w] = data["windows"]
    assert w["window"] == {"test": TEST_ID, "name": "asr"}
    assert w["label"] == LABEL
    assert [m["metric"] for m in w["metrics"]] == ["window_energy", "window_duration"]
    assert data["gated"] == [{"benchmark": f"{TEST_ID} [window asr]",
                              "metric": "window_energy"}]
    json.dumps(data, allow_nan=False)


def test_vlmbench_compare_prints_the_window_rows(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    b = str(write(tmp_path, "base", windows("base", DUR, ENERGY)))
    c = str(write(tmp_path, "cur", windows("cur", DUR, [2 * e for e in ENERGY]), hour=11))
    assert cli.main(["compare", b, c]) == EXIT_OK
    out = capsys.readouterr().out
    assert any(LABEL in line and "window_energy" in line and "regressed (not gated)" in line
               for line in out.splitlines())
    assert cli.main(["compare", b, c, "--fail-on", "window_energy:+10%"]) == EXIT_REGRESSION
    out = capsys.readouterr().out
    assert any(line.startswith("!!") and LABEL in line for line in out.splitlines())
    assert cli.main(["compare", b, c, "--format", "json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["windows"][0]["label"] == LABEL


def test_render_windows_groups_by_test_and_name() -> None:
    wins = [*windows("r", [1.0, 3.0, 2.0], [10.0, 30.0, 20.0]),
            window("r", 3, 0.5, None, name="prep", slo_passed=False),
            window("r", 4, 0.7, None, name="prep", slo_passed=True)]
    lines = table.render_windows(wins)
    assert lines[0] == "power windows (5 measured):"
    assert lines[1].split() == ["test", "window", "n", "duration", "s", "energy", "J", "avg",
                                "W", "peak", "W", "above-idle", "J", "SLO"]
    asr = lines[3].split()
    assert asr[1:] == ["asr", "3", "2.000", "20", "10", "12", "16", "-"]
    prep = lines[4].split()
    assert prep[1:] == ["prep", "2", "0.600", "-", "-", "-", "-", "FAIL", "1/2"]
    assert lines[5] == ("energy absent, not zero, in "
                        f"test_photo_score[tiny-vlm-q4_k_m-cpu] [window prep]: {NO_METER}")
    assert table.render_windows([]) == []


BENCH = """
from tiny_tasks import CAPTION

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION)
"""


def test_vlmbench_show_prints_the_windows_table(project: Project,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    project.pytester.makepyfile(test_bench=BENCH)
    out = project.run(f"{options.SAMPLES}=2", f"{options.WARMUP}=1",
                      f"{options.MODELS}=tiny-text")
    out.run.assert_outcomes(passed=1)
    doc = json.loads(out.out.read_text())
    test_id = doc["benchmarks"][0]["test"]
    doc["windows"] = [window(doc["run_id"], 0, 0.25, None, name="prepare", test=test_id),
                      window(doc["run_id"], 1, 0.5, 6.0, name="tag", test=test_id)]
    out.out.write_text(json.dumps(doc), encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["show", str(out.out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("power windows (2 measured):")
    assert lines[start - 1].startswith("test_caption")  # after the benchmark table
    name = test_id.split("::")[-1]  # test_caption[tiny-text-<precision>-cpu]
    assert lines[start + 3].split() == [name, "prepare", "1", "0.250", "-", "-", "-", "-", "-"]
    assert lines[start + 4].split()[1:] == ["tag", "1", "0.500", "6", "12", "14.4", "5", "-"]
    assert lines[-1] == f"energy absent, not zero, in {name} [window prepare]: {NO_METER}"
