"""The Jetson meters: the tegrastats parser on recorded real output, the tegrastats meter
against a replaying stand-in on PATH, and the INA3221 meter on a sysfs-shaped tree.

The recorded lines and where each came from: fixtures/tegrastats/PROVENANCE.md.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path

import pytest

from pytest_vlmbench.power import ROOT_ENV, MeterUnavailable, Reading, create
from pytest_vlmbench.power import tegrastats as tegrastats_module
from pytest_vlmbench.power.ina3221 import NO_CHANNELS, Ina3221Meter
from pytest_vlmbench.power.tegrastats import (
    NOT_FOUND,
    TegrastatsMeter,
    parse_line,
    total_rail,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "tegrastats"
BIN = FIXTURES / "bin"
REPLAY_ENV = "VLMBENCH_TEGRASTATS_REPLAY"
RECORDED = sorted(FIXTURES.glob("*.txt"))
MB = 1024 * 1024


def lines(name: str) -> list[str]:
    return [line for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


# --- the parser on every recorded file --------------------------------------------------


def test_every_board_has_a_recording() -> None:
    names = {p.name for p in RECORDED}
    assert {"agx_orin_jp6.txt", "orin_nano_jp6.txt", "thor_jp7.2.txt"} <= names
    provenance = (FIXTURES / "PROVENANCE.md").read_text()
    assert all(f"`{name}`" in provenance for name in names)


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.name)
def test_every_recorded_line_parses(path: Path) -> None:
    recorded = lines(path.name)
    assert recorded
    for line in recorded:
        parsed = parse_line(line)
        assert parsed is not None, line
        assert parsed.rails_mw, line
        assert "NC" not in parsed.rails_mw
        assert parsed.ram_used_bytes is not None
        assert parsed.ram_total_bytes is not None
        assert 0 < parsed.ram_used_bytes < parsed.ram_total_bytes
        total_w, method = total_rail(parsed.rails_mw)
        assert total_w is not None, line
        assert total_w > 0, line
        assert method


def test_orin_nano_uses_vdd_in() -> None:
    busy, idle = (parse_line(line) for line in lines("orin_nano_jp6.txt"))
    assert busy is not None
    assert idle is not None
    assert busy.rails_mw == {"VDD_IN": 12479.0, "VDD_CPU_GPU_CV": 4667.0, "VDD_SOC": 2817.0}
    assert total_rail(busy.rails_mw)[0] == pytest.approx(12.479)
    assert total_rail(busy.rails_mw)[1].startswith("VDD_IN alone")
    assert (busy.gpu_load_pct, busy.gpu_freq_mhz) == (63.0, 621.0)  # GR3D_FREQ 63%@[621]
    assert (busy.ram_used_bytes, busy.ram_total_bytes) == (6185 * MB, 7620 * MB)
    assert total_rail(idle.rails_mw)[0] == pytest.approx(4.824)
    assert (idle.gpu_load_pct, idle.gpu_freq_mhz) == (0.0, None)  # GR3D_FREQ 0%


def test_agx_orin_sums_its_rails_and_says_why() -> None:
    first = parse_line(lines("agx_orin_jp6.txt")[0])
    assert first is not None
    total_w, method = total_rail(first.rails_mw)
    assert total_w == pytest.approx((2412 + 1607 + 4707) / 1000)
    assert method == (
        "sum of rails VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0: AGX Orin has no input rail"
    )
    assert (first.gpu_load_pct, first.gpu_freq_mhz) == (0.0, 0.0)  # GR3D_FREQ 0%@[0,0]


def test_agx_orin_jetpack5_skips_the_nc_channels() -> None:
    (line,) = lines("agx_orin_jp5.txt")
    assert line.count("NC 0mW/0mW") == 2
    parsed = parse_line(line)
    assert parsed is not None
    assert list(parsed.rails_mw) == ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"]
    assert total_rail(parsed.rails_mw)[0] == pytest.approx((2340 + 390 + 4025 + 301) / 1000)


def test_three_number_rails_use_the_current_value() -> None:
    second = parse_line(lines("thor_jp7.2.txt")[1])  # VDD_CPU_SOC_MSS 7953mW/8332mW/8710mW
    assert second is not None
    assert second.rails_mw == {
        "VDD_GPU": 4925.0,
        "VDD_CPU_SOC_MSS": 7953.0,
        "VIN_SYS_5V0": 6667.0,
    }
    total_w, method = total_rail(second.rails_mw)
    assert total_w == pytest.approx((4925 + 7953 + 6667) / 1000)
    assert "Thor reports no VIN rail" in method
    assert (second.gpu_load_pct, second.gpu_freq_mhz) == (None, 314.0)  # @[314,314,314]
    orin = parse_line(lines("agx_orin_jp7.2.txt")[0])
    assert orin is not None
    assert orin.rails_mw["VDD_GPU_SOC"] == 5139.0
    assert (orin.gpu_load_pct, orin.gpu_freq_mhz) == (12.0, 1300.0)  # 12%@[1300,1300]


def test_thor_with_vin_uses_vin_alone() -> None:
    parsed = parse_line(lines("thor_jp7.1_vin.txt")[0])
    assert parsed is not None
    assert parsed.rails_mw["VIN"] == 19780.0
    total_w, method = total_rail(parsed.rails_mw)
    assert total_w == pytest.approx(19.78)  # not 19.78 + 1.962 + 5.887 + 5.635
    assert method.startswith("VIN alone")


def test_negative_thor_gpu_rail_is_kept() -> None:
    # Thor's idle VDD_GPU offset as quoted (with the CPU list abbreviated) in a public
    # Thor benchmark script; see PROVENANCE.md. Signs are kept, not clamped.
    parsed = parse_line(
        "05-14-2026 21:36:35 RAM 26063/125772MB (lfb 35x4MB) VDD_GPU -392mW/-392mW "
        "VDD_CPU_SOC_MSS 3924mW/3835mW VIN_SYS_5V0 5064mW/5055mW VIN 15004mW/15096mW"
    )
    assert parsed is not None
    assert parsed.rails_mw["VDD_GPU"] == -392.0
    assert total_rail(parsed.rails_mw)[0] == pytest.approx(15.004)


def test_legacy_jetpack4_lines_without_mw() -> None:
    tx1, tx2, nano, xavier, xavier_nx = (parse_line(line) for line in lines("legacy_jp4.txt"))
    assert tx1 is not None
    assert total_rail(tx1.rails_mw) == (2.532, total_rail({"VDD_IN": 1})[1])
    assert tx2 is not None
    assert total_rail(tx2.rails_mw)[0] == pytest.approx(3.056)
    assert nano is not None
    assert nano.rails_mw == {"POM_5V_IN": 1022.0, "POM_5V_GPU": 0.0, "POM_5V_CPU": 204.0}
    assert total_rail(nano.rails_mw)[1].startswith("POM_5V_IN alone")
    assert xavier is not None  # "GPU 0/0 CPU 311/311 ...": AGX Xavier names its rails bare
    assert list(xavier.rails_mw) == ["GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"]
    total_w, method = total_rail(xavier.rails_mw)
    assert total_w == pytest.approx((311 + 932 + 621 + 1482) / 1000)
    assert method.endswith("AGX Xavier has no input rail")
    assert xavier_nx is not None
    assert (xavier_nx.gpu_load_pct, xavier_nx.gpu_freq_mhz) == (62.0, 306.0)  # 62%@306


@pytest.mark.parametrize(
    ("line", "rails", "load", "freq"),
    [
        ("11-23-2026 10:00:00 RAM 2448/62804MB (lfb 2x4MB) GR3D_FREQ 12%@1300", {}, 12.0, 1300.0),
        ("GR3D_FREQ 0%@[305,305] VDD_IN 4793mW/4793mW", {"VDD_IN": 4793.0}, 0.0, 305.0),
        ("POM_5V_IN 3522/3522 FUTURE_TOKEN x@y", {"POM_5V_IN": 3522.0}, None, None),
    ],
)
def test_formats_and_unknown_tokens(
    line: str, rails: dict[str, float], load: float | None, freq: float | None
) -> None:
    parsed = parse_line(line)
    assert parsed is not None
    assert (parsed.rails_mw, parsed.gpu_load_pct, parsed.gpu_freq_mhz) == (rails, load, freq)


def test_lines_without_rails_and_junk() -> None:
    no_rails = parse_line("RAM 2448/62804MB (lfb 2x4MB) CPU [1%@729,off]")
    assert no_rails is not None
    assert no_rails.rails_mw == {}
    assert no_rails.ram_used_bytes == 2448 * MB
    assert total_rail(no_rails.rails_mw) == (None, "no power rails reported")
    for junk in ("", "   ", "hello world", "VDD_IN abc/def", "RAM lots", "GR3D_FREQ %"):
        assert parse_line(junk) is None, junk


# --- the tegrastats meter against the replaying stand-in ---------------------------------


@pytest.fixture
def replay_path(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv(REPLAY_ENV, raising=False)
    return BIN / "tegrastats"


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class Collector:
    """Runs meter.stream() in a thread and keeps what it emits."""

    def __init__(self, meter: TegrastatsMeter) -> None:
        self.readings: list[Reading] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=meter.stream, args=(self.readings.append, self.stop))
        self.thread.start()

    def wait_for(self, n: int, timeout_s: float = 4.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.readings) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.readings) >= n, f"only {len(self.readings)} readings"


def test_meter_streams_the_replay_and_close_ends_it(
    replay_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REPLAY_ENV, str(FIXTURES / "orin_nano_jp6.txt"))
    meter = create("tegrastats", 0.05)
    assert isinstance(meter, TegrastatsMeter)
    assert meter.streaming
    assert meter.interval_ms == 50
    meter.open()
    pid = meter.pid
    assert pid is not None
    collector = Collector(meter)
    try:
        collector.wait_for(5)
        assert meter.overhead_cpu_s() is not None
    finally:
        meter.close()  # from this thread, while stream() is blocked in readline
    collector.thread.join(timeout=3.0)
    assert not collector.thread.is_alive()
    assert gone(pid)
    meter.close()  # twice is fine

    readings = collector.readings
    watts = [r.power_w for r in readings]
    assert watts[:4] == pytest.approx([12.479, 4.824, 12.479, 4.824])  # the file, looped
    first = readings[0]
    assert first.rails_w == pytest.approx({"VDD_IN": 12.479, "VDD_CPU_GPU_CV": 4.667,
                                           "VDD_SOC": 2.817})
    assert first.memory_bytes == 6185 * MB
    assert first.extra == {"gpu_load_pct": 63.0, "gpu_freq_mhz": 621.0}
    assert readings[1].extra == {"gpu_load_pct": 0.0}
    gaps_s = [(b.t_ns - a.t_ns) / 1e9 for a, b in itertools.pairwise(readings)]
    gaps_s.sort()
    assert 0.01 < gaps_s[len(gaps_s) // 2] < 0.5  # ~ the 50 ms interval, with slack

    info = meter.info()
    assert info["source"] == "tegrastats --interval 50"
    assert info["path"] == str(replay_path)
    assert info["total_method"].startswith("VDD_IN alone")
    assert info["rails"] == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    assert info["unparsed_lines"] == 0
    assert info["lines"] >= 5
    cpu_s = meter.overhead_cpu_s()  # kept from before the process ended
    assert cpu_s is not None
    assert cpu_s >= 0.0


def test_default_replay_is_the_agx_orin_and_unparsed_lines_are_counted(
    replay_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    meter = TegrastatsMeter(interval_s=0.02)
    meter.open()
    collector = Collector(meter)
    try:
        collector.wait_for(1)
    finally:
        collector.stop.set()
        meter.close()
    collector.thread.join(timeout=3.0)
    assert collector.readings[0].power_w == pytest.approx(8.726)
    assert "AGX Orin has no input rail" in meter.info()["total_method"]

    mixed = tmp_path / "mixed.txt"
    mixed.write_text(f"garbage that is not tegrastats\n{lines('thor_jp7.1_vin.txt')[0]}\n")
    monkeypatch.setenv(REPLAY_ENV, str(mixed))
    meter = TegrastatsMeter(interval_s=0.02)
    meter.open()
    collector = Collector(meter)
    try:
        collector.wait_for(2)
    finally:
        meter.close()
    collector.thread.join(timeout=3.0)
    assert all(r.power_w == pytest.approx(19.78) for r in collector.readings)
    assert meter.info()["unparsed_lines"] >= 2


def test_missing_tegrastats(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MeterUnavailable, match="tegrastats not found on PATH") as err:
        TegrastatsMeter().open()
    assert str(err.value) == NOT_FOUND


def test_replay_that_exits_at_once(
    replay_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    monkeypatch.setenv(REPLAY_ENV, str(empty))
    meter = TegrastatsMeter(interval_s=0.05)
    with pytest.raises(MeterUnavailable) as err:
        meter.open()
    message = str(err.value)
    assert "exited with status 1 before printing a line" in message
    assert f"no lines to replay in {empty}" in message  # its stderr, quoted
    assert meter.pid is None
    meter.close()


def test_silent_tegrastats_times_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "tegrastats"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(tegrastats_module, "FIRST_LINE_MIN_TIMEOUT_S", 0.3)
    meter = TegrastatsMeter(interval_s=0.05)
    started = time.monotonic()
    with pytest.raises(MeterUnavailable, match=r"printed nothing within 0.3 s"):
        meter.open()
    assert time.monotonic() - started < 3.0


# --- the INA3221 meter on a sysfs-shaped tree -------------------------------------------


def channel(hwmon: Path, n: int, label: str, mv: int | None = None, ma: int | None = None) -> None:
    hwmon.mkdir(parents=True, exist_ok=True)
    (hwmon / f"in{n}_label").write_text(f"{label}\n")
    if mv is not None:
        (hwmon / f"in{n}_input").write_text(f"{mv}\n")
    if ma is not None:
        (hwmon / f"curr{n}_input").write_text(f"{ma}\n")


@pytest.fixture
def agx_orin_sysfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two chips as on an AGX Orin: 0x40 with the three module rails and the sum channel,
    0x41 with NC, VDDQ_VDD2_1V8AO, NC; plus /proc/meminfo."""
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    driver = tmp_path / "sys/bus/i2c/drivers/ina3221"
    chip40 = driver / "1-0040/hwmon/hwmon1"
    channel(chip40, 1, "VDD_GPU_SOC", 19104, 312)
    channel(chip40, 2, "VDD_CPU_CV", 19104, 100)
    channel(chip40, 3, "VIN_SYS_5V0", 4976, 500)
    channel(chip40, 7, "sum of shunt voltages", 1000, 900)
    chip41 = driver / "1-0041/hwmon/hwmon2"
    channel(chip41, 1, "NC", 0, 0)
    channel(chip41, 2, "VDDQ_VDD2_1V8AO", 4976, 60)
    channel(chip41, 3, "NC", 0, 0)
    (driver / "module").mkdir()  # a real driver directory lists more than the chips
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text(
        "MemTotal:       64000000 kB\nMemFree:        50000000 kB\n"
        "MemAvailable:   60000000 kB\n"
    )
    return driver


def test_ina3221_watts_are_mv_times_ma(agx_orin_sysfs: Path) -> None:
    meter = create("ina3221", 0.05)
    assert isinstance(meter, Ina3221Meter)
    assert not meter.streaming
    meter.open()
    reading = meter.read()
    expected = {
        "VDD_GPU_SOC": 19104 * 312 / 1e6,
        "VDD_CPU_CV": 19104 * 100 / 1e6,
        "VIN_SYS_5V0": 4976 * 500 / 1e6,
        "VDDQ_VDD2_1V8AO": 4976 * 60 / 1e6,
    }
    assert reading.rails_w == pytest.approx(expected)  # no NC, no sum channel
    assert reading.power_w == pytest.approx(sum(expected.values()))
    assert reading.memory_bytes == (64000000 - 60000000) * 1024
    info = meter.info()
    assert info["total_method"] == (
        "sum of rails VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0, VDDQ_VDD2_1V8AO: "
        "AGX Orin has no input rail"
    )
    assert info["source"] == (
        f"{agx_orin_sysfs}/1-0040/hwmon/hwmon1, {agx_orin_sysfs}/1-0041/hwmon/hwmon2"
    )
    assert info["rails"] == list(expected)

    (agx_orin_sysfs / "1-0040/hwmon/hwmon1/curr1_input").write_text("624\n")  # GPU load
    later = meter.read()
    assert later.rails_w["VDD_GPU_SOC"] == pytest.approx(19104 * 624 / 1e6)
    assert later.t_ns > reading.t_ns


def test_ina3221_input_rail_is_the_total(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    hwmon = tmp_path / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    channel(hwmon, 1, "VDD_IN", 5000, 1000)
    channel(hwmon, 2, "VDD_CPU_GPU_CV", 5000, 200)
    channel(hwmon, 3, "VDD_SOC", 5000, 300)
    meter = Ina3221Meter()
    meter.open()
    reading = meter.read()
    assert reading.power_w == pytest.approx(5.0)
    assert reading.memory_bytes is None  # no /proc/meminfo in this tree
    assert meter.info()["total_method"].startswith("VDD_IN alone")


def test_ina3221_without_channels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    with pytest.raises(MeterUnavailable) as err:
        Ina3221Meter().open()
    assert str(err.value) == NO_CHANNELS
    hwmon = tmp_path / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1"
    channel(hwmon, 1, "NC", 0, 0)  # only unconnected channels: still nothing to read
    with pytest.raises(MeterUnavailable, match="no INA3221 channels"):
        Ina3221Meter().open()


def test_ina3221_missing_current_file_is_named(agx_orin_sysfs: Path) -> None:
    missing = agx_orin_sysfs / "1-0041/hwmon/hwmon2/curr2_input"
    missing.unlink()
    with pytest.raises(MeterUnavailable, match=f"{missing} could not be read"):
        Ina3221Meter().open()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_ina3221_unreadable_file_is_named(agx_orin_sysfs: Path) -> None:
    locked = agx_orin_sysfs / "1-0040/hwmon/hwmon1/curr2_input"
    locked.chmod(0)
    try:
        with pytest.raises(MeterUnavailable, match=f"{locked} is not readable") as err:
            Ina3221Meter().open()
        assert "permission denied" in str(err.value)
    finally:
        locked.chmod(0o644)
