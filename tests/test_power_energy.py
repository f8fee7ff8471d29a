"""Energy integration and attribution against synthetic traces with known integrals."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import pytest

from pytest_vlmbench.metrics.roofline import roofline
from pytest_vlmbench.power import PowerMeter, Reading, resolve
from pytest_vlmbench.power.energy import Trace, attribute, idle_power, rails_energy
from pytest_vlmbench.power.monitor import PowerMonitor
from pytest_vlmbench.power.sampler import Sampler

S = 1_000_000_000  # ns per second


def _power_trace(f: Any, t_end_s: float, step_s: float) -> list[Reading]:
    n = round(t_end_s / step_s)
    return [Reading(t_ns=int(i * step_s * S), power_w=f(i * step_s)) for i in range(n + 1)]


@pytest.mark.parametrize(
    ("f", "integral", "t0", "t1"),
    [
        # constant 5 W over 2.35 s
        (lambda t: 5.0, lambda a, b: 5.0 * (b - a), 0.3, 2.65),
        # ramp 2 + 3t
        (lambda t: 2 + 3 * t, lambda a, b: 2 * (b - a) + 1.5 * (b * b - a * a), 0.05, 3.97),
        # a load pattern: 10 W + 4 W sine with a 1.3 s period
        (
            lambda t: 10 + 4 * math.sin(2 * math.pi * t / 1.3),
            lambda a, b: 10 * (b - a)
            - 4 * 1.3 / (2 * math.pi)
            * (math.cos(2 * math.pi * b / 1.3) - math.cos(2 * math.pi * a / 1.3)),
            0.123, 7.777,
        ),
    ],
)
def test_power_integration_error_under_half_a_percent(f: Any, integral: Any, t0: float,
                                                      t1: float) -> None:
    readings = _power_trace(f, 8.0, 0.1)  # 100 ms, as tegrastats' default here
    trace = Trace.of(readings)
    assert trace is not None
    assert not trace.counter
    got = trace.energy_between(int(t0 * S), int(t1 * S))
    want = integral(t0, t1)
    assert got is not None
    assert abs(got - want) / want < 0.005


def test_piecewise_linear_power_is_integrated_exactly_at_the_edges() -> None:
    readings = [Reading(0, power_w=0.0), Reading(S, power_w=10.0)]
    trace = Trace.of(readings)
    assert trace is not None
    # power = 10 t; energy from 0.5 to 1.0 s = 5 * (1 - 0.25) = 3.75 J
    assert trace.energy_between(S // 2, S) == pytest.approx(3.75)
    assert trace.peak_power(0, S // 2) == pytest.approx(5.0)


def test_counter_trace_uses_the_counter_and_interpolates() -> None:
    # a counter advancing 2 J per 100 ms (20 W), starting at an arbitrary value
    readings = [Reading(int(i * 0.1 * S), energy_j=1000.0 + 2.0 * i, power_w=999.0)
                for i in range(21)]
    trace = Trace.of(readings)
    assert trace is not None
    assert trace.counter
    assert trace.energy_between(int(0.25 * S), int(1.75 * S)) == pytest.approx(30.0)
    assert trace.peak_power(0, 2 * S) == pytest.approx(20.0)


def test_window_not_covered_is_absent_not_extrapolated() -> None:
    trace = Trace.of([Reading(S, power_w=5.0), Reading(2 * S, power_w=5.0)])
    assert trace is not None
    assert trace.energy_between(0, 2 * S) is None
    assert trace.energy_between(S, 3 * S) is None
    assert Trace.of([]) is None
    assert Trace.of([Reading(0), Reading(S)]) is None  # nothing measured at all


def test_a_failed_read_is_left_out_not_mixed_with_the_other_kind() -> None:
    # a true 100 W counter, an instant power field reading 150 W, one failed counter read
    readings = [Reading(int(i * 0.1 * S), energy_j=10.0 * i, power_w=150.0) for i in range(51)]
    readings[20] = Reading(readings[20].t_ns, energy_j=None, power_w=None)
    trace = Trace.of(readings)
    assert trace is not None
    assert trace.counter
    assert trace.dropped == 1
    assert trace.energy_between(S // 2, int(4.5 * S)) == pytest.approx(400.0)
    records = [_record(0, 0.5, 4.5, 100)]
    block = attribute(readings, records, resolution_s=0.1, idle_power_w=None, vision=False)
    assert block["energy_j"] == pytest.approx(400.0)
    assert any("1 readings without energy" in w for w in block["warnings"])


def test_rails_energy_per_rail() -> None:
    readings = [Reading(int(i * 0.1 * S), power_w=7.0, rails_w={"VDD_IN": 7.0, "VDD_GPU": 3.0})
                for i in range(11)]
    assert rails_energy(readings, 0, S) == pytest.approx({"VDD_IN": 7.0, "VDD_GPU": 3.0})


def _record(seq: int, start_s: float, end_s: float, tokens: int, *, phase: str = "measure",
            error: bool = False) -> dict[str, Any]:
    return {
        "seq": seq, "phase": phase, "t_start_ns": int(start_s * S), "t_end_ns": int(end_s * S),
        "completion_tokens": None if error else tokens, "images": [{"sha256": "x"}],
        "error": {"stage": "request", "type": "X", "message": "boom"} if error else None,
    }


def test_attribution_by_hand() -> None:
    # 6 W for 10 s, sampled every 100 ms; warm-up 0-1 s excluded; measured 1-4 s
    readings = _power_trace(lambda t: 6.0, 10.0, 0.1)
    records = [
        _record(0, 0.0, 1.0, 50, phase="warmup"),
        _record(1, 1.0, 2.0, 40),
        _record(2, 2.0, 3.0, 60),
        _record(3, 3.0, 4.0, 0, error=True),
    ]
    block = attribute(readings, records, resolution_s=0.1, idle_power_w=2.0, vision=True)
    assert block["method"] == "power integration"
    assert block["window_s"] == pytest.approx(3.0)
    assert block["energy_j"] == pytest.approx(18.0)
    assert block["avg_power_w"] == pytest.approx(6.0)
    assert block["tokens"] == 100  # the failed request generated nothing
    assert block["energy_per_token_j"] == pytest.approx(0.18)
    assert block["tokens_per_s_per_w"] == pytest.approx(100 / 18.0)
    assert block["energy_per_request_j"] == pytest.approx(6.0)  # 3 measured requests
    assert block["energy_per_image_j"] == pytest.approx(9.0)  # 2 successful images
    assert block["above_idle_energy_j"] == pytest.approx(18.0 - 2.0 * 3.0)
    assert block["above_idle_energy_per_token_j"] == pytest.approx(0.12)
    assert [p["seq"] for p in block["per_request"]] == [1, 2]
    assert block["per_request"][0]["energy_j"] == pytest.approx(6.0)
    assert block["per_request_j"]["n"] == 2


def test_attribution_short_requests_have_no_per_request_energy() -> None:
    readings = _power_trace(lambda t: 6.0, 2.0, 0.1)
    records = [_record(i, 0.1 + 0.15 * i, 0.2 + 0.15 * i, 5) for i in range(4)]
    block = attribute(readings, records, resolution_s=0.1, idle_power_w=None, vision=False)
    assert block["per_request"] == []
    assert block["energy_per_image_j"] is None
    assert block["above_idle_energy_j"] is None
    assert any("per-request" in w for w in block["warnings"])
    assert any("shorter than" in w for w in block["warnings"])  # 0.55 s window, 0.1 s res


def test_idle_power() -> None:
    readings = _power_trace(lambda t: 3.5, 5.0, 0.1)
    assert idle_power(readings, S, 3 * S) == pytest.approx(3.5)
    assert idle_power(readings, 3 * S, S) is None


class _RampMeter(PowerMeter):
    """A polled meter whose reading is a pure function of the clock (no hardware)."""

    name = "ramp"

    def read(self) -> Reading:
        t = time.perf_counter_ns()
        return Reading(t, power_w=4.0)


class _BurstMeter(PowerMeter):
    name = "burst"
    streaming = True

    def stream(self, emit: Any, stop: threading.Event) -> None:
        while not stop.wait(self.interval_s):
            emit(Reading(time.perf_counter_ns(), power_w=2.0))


@pytest.mark.parametrize("meter_cls", [_RampMeter, _BurstMeter])
def test_sampler_collects_traces_and_costs(meter_cls: type[PowerMeter], tmp_path: Any) -> None:
    meter = meter_cls(0.01)
    sampler = Sampler(meter, 0.01, tmp_path / "trace.jsonl")
    sampler.start()
    assert sampler.wait_past(time.perf_counter_ns(), timeout_s=5)  # a reading before t0
    t0 = time.perf_counter_ns()
    time.sleep(0.2)
    t1 = time.perf_counter_ns()
    assert sampler.wait_past(t1, timeout_s=5)
    sampler.stop()
    sampler.stop()  # twice is fine
    window = sampler.window(t0, t1)
    assert window[0].t_ns <= t0
    assert window[-1].t_ns >= t1
    assert len(sampler.readings) >= 5
    assert sampler.rss
    assert sampler.rss_peak(0, t1 * 2)[0]
    lines = (tmp_path / "trace.jsonl").read_text().splitlines()
    assert sum('"kind":"meter"' in line for line in lines) == len(sampler.readings)
    cost = sampler.cost.to_json(meter)
    assert cost["polls"] >= 5
    assert 0 <= cost["cpu_fraction"] < 1


def test_sampler_keeps_going_when_a_read_fails() -> None:
    class Flaky(PowerMeter):
        name = "flaky"
        calls = 0

        def read(self) -> Reading:
            Flaky.calls += 1
            if Flaky.calls % 2:
                raise OSError("sensor busy")
            return Reading(time.perf_counter_ns(), power_w=1.0)

    sampler = Sampler(Flaky(0.005), 0.005)
    sampler.start()
    time.sleep(0.1)
    sampler.stop()
    assert sampler.readings
    assert sampler.errors[0] == "OSError: sensor busy"


def test_a_meter_that_stops_is_reported_and_nobody_waits_for_it() -> None:
    class Dying(PowerMeter):
        name = "dying"
        streaming = True

        def stream(self, emit: Any, stop: threading.Event) -> None:
            emit(Reading(time.perf_counter_ns(), power_w=1.0))  # then the process "exits"

    sampler = Sampler(Dying(0.01), 0.01)
    sampler.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    assert not sampler.wait_past(time.perf_counter_ns() + S, timeout_s=5)
    assert time.monotonic() - t0 < 1  # returned at once, not after the timeout
    sampler.stop()
    assert sampler.dead == "dying stopped giving readings"
    assert sampler.errors == ["dying stopped giving readings"]


def test_process_peak_survives_a_reset() -> None:
    from pytest_vlmbench.run import memory
    block = bytearray(64 * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    peak = memory.peak_rss_bytes()
    del block
    if not memory.reset_peak():
        pytest.skip("/proc/self/clear_refs is not writable here")
    assert memory.peak_rss_bytes() >= peak  # the lifetime peak is kept
    assert memory.hwm_since_reset() < peak  # the mark itself starts again


def test_resolve_none_and_unknown() -> None:
    assert resolve("none", "rapl", 0.1).meter is None
    with pytest.raises(Exception, match="unknown power meter 'bogus'"):
        resolve("bogus", "rapl", 0.1)


def test_monitor_without_meter_gives_memory_only() -> None:
    monitor = PowerMonitor("none", "rapl", 0.01, 0.0, None)
    window = monitor.begin()
    blocks = monitor.finish(window, [], vision=False)
    monitor.stop()
    assert blocks["energy"] is None
    peak = blocks["memory"]["rss_peak_sampled_bytes"]
    assert peak is None or peak > 0
    doc = monitor.to_json()
    assert doc["meter"] is None
    assert doc["absent_reason"] == "--power-meter=none"


def test_roofline() -> None:
    block = roofline(bandwidth_gbs=100.0, bandwidth_source="x", bytes_per_token=2 * 10**9,
                     bytes_source="y", achieved_tokens_per_s=25.0)
    assert block["bound_tokens_per_s"] == pytest.approx(50.0)
    assert block["percent_of_bound"] == pytest.approx(50.0)
    absent = roofline(bandwidth_gbs=None, bandwidth_source="device profile cpu",
                      bytes_per_token=1, bytes_source="y", achieved_tokens_per_s=1.0)
    assert absent["bound_tokens_per_s"] is None
    assert "--vlm-bandwidth-gbs" in absent["absent"]
