"""The RAPL meter against a temporary sysfs-shaped tree (VLMBENCH_SYSFS_ROOT)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench.power import ROOT_ENV, MeterUnavailable, create
from pytest_vlmbench.power.rapl import RaplMeter

PKG_RANGE = 10_000_000  # small, so that a wrap-around is easy to write down
DRAM_RANGE = 65_712_999_613
PSYS_RANGE = 262_143_328_850


def zone(base: Path, sysfs_id: str, name: str, energy_uj: int, max_uj: int | None) -> Path:
    path = base / sysfs_id
    path.mkdir(parents=True)
    (path / "name").write_text(f"{name}\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    if max_uj is not None:
        (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


def set_energy(base: Path, sysfs_id: str, energy_uj: int) -> None:
    (base / sysfs_id / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture
def powercap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """package-0 with core and dram subzones, and a psys platform zone, laid out flat as
    /sys/class/powercap lists them; plus the entries a real tree has that are not zones."""
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    base = tmp_path / "sys/class/powercap"
    zone(base, "intel-rapl:0", "package-0", 1_000_000, PKG_RANGE)
    zone(base, "intel-rapl:0:0", "core", 500_000, PKG_RANGE)
    zone(base, "intel-rapl:0:1", "dram", 200_000, DRAM_RANGE)
    zone(base, "intel-rapl:1", "psys", 5_000_000, PSYS_RANGE)
    (base / "intel-rapl").mkdir()  # the control type itself: no counter
    zone(base, "intel-rapl-mmio:0", "package-0", 7, PKG_RANGE)  # the MMIO twin of the package
    return base


def test_energy_is_packages_plus_dram_and_undoes_a_wrap(powercap: Path) -> None:
    meter = RaplMeter(interval_s=0.05)
    meter.open()
    set_energy(powercap, "intel-rapl:0", 3_000_000)  # +2 J
    set_energy(powercap, "intel-rapl:0:0", 1_500_000)  # +1 J (inside the package)
    set_energy(powercap, "intel-rapl:0:1", 700_000)  # +0.5 J
    set_energy(powercap, "intel-rapl:1", 9_000_000)  # +4 J (contains the package)
    first = meter.read()
    assert first.energy_j == 2.5
    assert first.power_w is None
    assert first.rails_w == {}
    assert first.extra == {
        "energy_j:package-0": 2.0,
        "energy_j:package-0/core": 1.0,
        "energy_j:package-0/dram": 0.5,
        "energy_j:psys": 4.0,
    }

    # The package counter went down: it wrapped at max_energy_range_uj.
    set_energy(powercap, "intel-rapl:0", 500_000)  # 500_000 - 3_000_000 + 10_000_000
    set_energy(powercap, "intel-rapl:0:1", 900_000)  # +0.2 J
    second = meter.read()
    assert second.extra["energy_j:package-0"] == 9.5
    assert second.energy_j == 10.2  # 9.5 + 0.7
    assert second.t_ns > first.t_ns

    info = meter.info()
    zones = {z["name"]: z for z in info["zones"]}
    assert zones["package-0"]["wraps"] == 1
    assert zones["package-0"]["max_energy_range_uj"] == PKG_RANGE
    assert {n for n, z in zones.items() if z["counted_in_total"]} == {
        "package-0",
        "package-0/dram",
    }
    assert "psys" in info["total_method"]
    assert "not added" in info["total_method"]
    assert meter.resolution_s == 0.05
    meter.close()
    meter.close()
    with pytest.raises(RuntimeError):
        meter.read()


def test_subzones_nested_in_their_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    base = tmp_path / "sys/class/powercap"
    pkg = zone(base, "intel-rapl:0", "package-0", 0, PKG_RANGE)
    zone(pkg, "intel-rapl:0:0", "dram", 0, DRAM_RANGE)
    meter = create("rapl", 0.1)
    assert isinstance(meter, RaplMeter)
    meter.open()
    set_energy(base, "intel-rapl:0", 1_000_000)
    set_energy(pkg, "intel-rapl:0:0", 250_000)
    assert meter.read().energy_j == 1.25


def test_psys_is_the_total_only_without_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    base = tmp_path / "sys/class/powercap"
    zone(base, "intel-rapl:0", "psys", 100, PSYS_RANGE)
    meter = RaplMeter()
    meter.open()
    set_energy(base, "intel-rapl:0", 3_000_100)
    assert meter.read().energy_j == 3.0
    assert "psys" in meter.info()["total_method"]


def _assert_permission_message(message: str, counter: Path) -> None:
    assert str(counter) in message
    assert "permission denied" in message
    assert "chmod o+r" in message


def test_unreadable_counter_says_permission_and_the_file(powercap: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads a mode-000 file anyway (the next test covers root)")
    counter = powercap / "intel-rapl:0:1" / "energy_uj"
    counter.chmod(0)
    try:
        with pytest.raises(MeterUnavailable) as exc:
            RaplMeter().open()
    finally:
        counter.chmod(0o644)
    _assert_permission_message(str(exc.value), counter)


def test_permission_error_becomes_the_message(
    powercap: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, by raising what the kernel gives a non-root reader (works as root too)."""
    counter = powercap / "intel-rapl:0:1" / "energy_uj"
    real_read_text = Path.read_text

    def read_text(self: Path, *args: Any, **kwargs: Any) -> str:
        if self == counter:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    with pytest.raises(MeterUnavailable) as exc:
        RaplMeter().open()
    _assert_permission_message(str(exc.value), counter)


@pytest.mark.parametrize("layout", ["no powercap", "no zones"])
def test_no_counters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    if layout == "no zones":
        (tmp_path / "sys/class/powercap/intel-rapl").mkdir(parents=True)
    with pytest.raises(MeterUnavailable, match="no RAPL energy counters under /sys/class/powercap"):
        RaplMeter().open()
