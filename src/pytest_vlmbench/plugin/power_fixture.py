"""`vlm_power`: the session's power meter for any code, benchmark or not.

    def test_asr(vlm_power):
        with vlm_power.measure("asr", slo={"max_energy_j": 50}) as m:
            transcribe(clip)
        print(m.energy_j, m.avg_power_w, m.duration_s)

One meter, one idle baseline and one window numbering for the whole session (the
benchmarks' PowerMonitor); the fixture itself is per test, so each window carries its
test's id. A window's figures are computed when it closes (power/windows.py), written
to the results document's `windows` and checked against its SLOs: a breach fails the
test with one line once the block ends. Without a meter every energy figure is None
with `absent_reason`, never zero; the duration is measured either way.

pytest imports this module with the plugin at every start, so it imports the standard
library and pytest only; the monitor, the meters and the figures are imported when a
test first asks for `vlm_power`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pytest

from pytest_vlmbench.errors import UsageMistake

if TYPE_CHECKING:
    from pytest_vlmbench.plugin.session import VlmSession
    from pytest_vlmbench.power.monitor import PowerMonitor
    from pytest_vlmbench.results.models import SloResult, Window


class WindowArgumentError(UsageMistake):
    """A `vlm_power.measure()` argument no window can be measured with (an unknown SLO)."""


@dataclass(frozen=True)
class InstantReading:
    """The meter's latest reading: `vlm_power.reading()`.

    power_w: the reading's power; for a meter that only counts energy (RAPL, NVML's
    counter), the average power between its last two readings (`method` says which).
    """

    t_ns: int  # perf_counter_ns when it was read
    power_w: float | None
    rails_w: dict[str, float]
    memory_bytes: int | None
    meter: str
    method: str


@dataclass(eq=False)
class PowerWindow:
    """One `measure()` window; its figures are filled in when the block ends."""

    power: VlmPower
    name: str
    seq: int
    spec: dict[str, float]
    parent: str | None = None
    t_start_ns: int | None = None
    t_end_ns: int | None = None
    duration_s: float | None = None
    meter: str | None = None
    absent_reason: str | None = None
    energy_j: float | None = None
    avg_power_w: float | None = None
    peak_power_w: float | None = None
    idle_power_w: float | None = None
    above_idle_energy_j: float | None = None
    rails_j: dict[str, float] | None = None
    slo: list[SloResult] = field(default_factory=list)
    slo_passed: bool | None = None

    def __enter__(self) -> PowerWindow:
        if self.t_start_ns is not None:
            raise WindowArgumentError(f"vlm_power window {self.name!r} was already used; "
                                      "call measure() again for another window")
        self.t_start_ns = self.power.monitor.open_window(
            f"vlm_power window {self.name!r} of {self.power.test} (no model need be loaded)")
        self.parent = self.power._push(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        from pytest_vlmbench.power.windows import absent, breach_message, evaluate_slo, figures

        assert self.t_start_ns is not None
        monitor = self.power.monitor
        # After Ctrl-C no closing reading is awaited: the window must still be written.
        end, readings = monitor.close_window(
            self.t_start_ns, wait=exc_type is None or issubclass(exc_type, Exception))
        self.power._pop(self)
        self.t_end_ns = end
        self.duration_s = (end - self.t_start_ns) / 1e9
        self.meter = monitor.meter_name
        if self.meter is None:
            found = absent(f"no power meter: {self.power.absent_reason}")
        else:
            found = figures(readings, self.t_start_ns, end, idle_power_w=monitor.idle_power_w)
            stopped = monitor.sampler.dead if monitor.sampler else None
            if found["absent_reason"] is not None and stopped:
                found = absent(f"{found['absent_reason']}; the meter stopped: {stopped}",
                               found["idle_power_w"])
        for key, value in found.items():
            setattr(self, key, value)
        self.slo = evaluate_slo(self.spec, {**found, "duration_s": self.duration_s})
        self.slo_passed = all(v["passed"] for v in self.slo) if self.spec else None
        self.power.session.add_window(self.to_json())
        message = breach_message(self.name, self.slo, self.absent_reason)
        if exc_type is None and message is not None:
            pytest.fail(message, pytrace=False)

    def to_json(self) -> Window:
        """The document's entry for this window (results/models.py Window)."""
        assert self.t_start_ns is not None
        assert self.t_end_ns is not None
        assert self.duration_s is not None
        return {
            "test": self.power.test, "name": self.name, "seq": self.seq,
            "run_id": self.power.session.run_id, "parent": self.parent,
            "t_start_ns": self.t_start_ns, "t_end_ns": self.t_end_ns,
            "duration_s": self.duration_s, "meter": self.meter,
            "absent_reason": self.absent_reason, "energy_j": self.energy_j,
            "avg_power_w": self.avg_power_w, "peak_power_w": self.peak_power_w,
            "idle_power_w": self.idle_power_w,
            "above_idle_energy_j": self.above_idle_energy_j,
            "rails_j": None if self.rails_j is None else dict(self.rails_j),
            "slo": list(self.slo), "slo_passed": self.slo_passed,
        }


class VlmPower:
    """The session's meter, seen from one test: `measure(name)` and `reading()`.

    A window opened inside another on the same thread records it as `parent`; each is
    measured over its own span, so the inner's energy is part of the outer's. Windows
    on other threads are not nested even when their spans overlap: each is measured
    over its own span and their energies must not be summed.
    """

    def __init__(self, session: VlmSession, test: str) -> None:
        self.session = session
        self.test = test
        self.monitor: PowerMonitor = session.power()
        self.monitor.start()
        self._open: dict[int, list[PowerWindow]] = {}  # thread id -> its open windows
        self._lock = threading.Lock()

    @property
    def meter(self) -> str | None:
        """The meter's name, None without one."""
        return self.monitor.meter_name

    @property
    def absent_reason(self) -> str | None:
        """Why there is no meter, or why it stopped giving readings; None while it reads."""
        if self.meter is None:
            return self.monitor.absent_reason or "no meter was opened"
        sampler = self.monitor.sampler
        return None if sampler is None or sampler.dead is None \
            else f"the meter stopped: {sampler.dead}"

    def measure(self, name: str, *, slo: Mapping[str, Any] | None = None) -> PowerWindow:
        """A window to open with `with`: its energy, power and duration once it closes.
        `slo`: limits on its figures (power/windows.py SLOS), checked when it closes."""
        from pytest_vlmbench.metrics.slo import SLOError
        from pytest_vlmbench.power.windows import check_slo

        where = f"{self.test}: vlm_power.measure({name!r})"
        if not isinstance(name, str) or not name:
            raise WindowArgumentError(f"{where}: the window needs a name (a non-empty str)")
        try:
            spec = check_slo(slo or {}, where)
        except SLOError as exc:
            raise WindowArgumentError(str(exc)) from None
        return PowerWindow(self, name, self.session.next_window_seq(), spec)

    def reading(self) -> InstantReading | None:
        """The meter's latest reading (waiting for the first one); None without a meter,
        `absent_reason` says why."""
        sampler = self.monitor.sampler
        meter = self.meter
        if sampler is None or sampler.meter is None or meter is None:
            return None
        sampler.wait_past(0, timeout_s=max(2.0, 5 * sampler.meter.resolution_s))
        last = self.monitor.latest(2)
        if not last:
            return None
        now = last[-1]
        power, method = now.power_w, "the reading's power"
        if power is None and now.energy_j is not None and len(last) == 2 \
                and last[0].energy_j is not None and now.t_ns > last[0].t_ns:
            power = (now.energy_j - last[0].energy_j) / ((now.t_ns - last[0].t_ns) / 1e9)
            method = "average power between the energy counter's last two readings"
        return InstantReading(now.t_ns, power, dict(now.rails_w), now.memory_bytes, meter,
                              method)

    def _push(self, window: PowerWindow) -> str | None:
        """Note an opened window; the one it was opened inside (same thread), if any."""
        with self._lock:
            stack = self._open.setdefault(threading.get_ident(), [])
            parent = stack[-1].name if stack else None
            stack.append(window)
        return parent

    def _pop(self, window: PowerWindow) -> None:
        with self._lock:
            stack = self._open.get(threading.get_ident(), [])
            if window in stack:
                stack.remove(window)


@pytest.fixture
def vlm_power(request: pytest.FixtureRequest) -> VlmPower:
    """The session's power meter for this test: `with vlm_power.measure("asr") as m:`
    gives the block's energy, power and duration; `vlm_power.reading()` the latest
    reading. See VlmPower."""
    from pytest_vlmbench.models.devices import DeviceError
    from pytest_vlmbench.plugin.bench import _masked_id
    from pytest_vlmbench.plugin.fixtures import session_of
    from pytest_vlmbench.power import MeterUnavailable

    session = session_of(request.config)
    try:
        return VlmPower(session, _masked_id(request.node.nodeid))
    except (MeterUnavailable, DeviceError) as exc:
        message = f"vlm_power: {exc}"
    pytest.fail(message, pytrace=False)
