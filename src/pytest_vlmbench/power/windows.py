"""A power window's figures: the energy of any span of code, from the sampler's readings.

`vlm_power.measure(name)` (plugin/power_fixture.py) opens a window on the session's
meter; when it closes, its figures come from the readings covering [t_start, t_end],
by the same definitions as a benchmark's energy (energy.py's Trace): the difference
of an energy counter, or the exact integral of power taken as linear between
readings. A window the readings do not cover, or a session without a meter, has every
energy figure absent (None) with the reason, never zero; its duration is measured
either way.

Nested windows (one opened inside another on the same thread of the same test) are
measured independently over their own spans: the inner's energy is part of the
outer's. Overlapping windows (from threads) are each measured over their own span:
their energies overlap and must not be summed.

Energy SLOs on a window are a small closed set (`SLOS`), checked when it closes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pytest_vlmbench.metrics.slo import breach_line, limits, verdict
from pytest_vlmbench.power import Reading
from pytest_vlmbench.power.energy import Trace, rails_energy
from pytest_vlmbench.results.models import SloResult

METHODS = {
    "windows": "vlm_power.measure(name) windows: energy_j between the window's start and "
    "end (perf_counter_ns), by the benchmarks' method (counter difference or exact "
    "integral of power linear between readings); avg_power_w = energy_j / duration_s; "
    "peak_power_w the largest reading in the window; above_idle_energy_j = energy_j - "
    "idle_power_w * duration_s with the session's idle baseline; rails_j per rail. A "
    "nested window's energy is part of its parent's; overlapping windows (threads) "
    "overlap in energy and must not be summed",
}

SLOS: Mapping[str, tuple[str, str]] = {
    "max_energy_j": ("energy_j", "J"),
    "max_avg_power_w": ("avg_power_w", "W"),
    "max_peak_power_w": ("peak_power_w", "W"),
    "max_above_idle_energy_j": ("above_idle_energy_j", "J"),
    "max_duration_s": ("duration_s", "s"),
}
"""Window SLO name -> (the figure it limits, its unit); every one is an upper limit."""


Figures = dict[str, Any]
"""A window's energy figures by name (FIGURES), each None when unmeasured, with
`absent_reason` saying why (set only then)."""

FIGURES = ("energy_j", "avg_power_w", "peak_power_w", "idle_power_w",
           "above_idle_energy_j", "rails_j", "absent_reason")


def absent(reason: str, idle_power_w: float | None = None) -> Figures:
    """Figures of a window that could not be measured, and why."""
    return {**dict.fromkeys(FIGURES), "idle_power_w": idle_power_w, "absent_reason": reason}


def figures(readings: Sequence[Reading], t0_ns: int, t1_ns: int, *,
            idle_power_w: float | None) -> Figures:
    """The figures of [t0_ns, t1_ns] from readings covering it (Sampler.window)."""
    trace = Trace.of(readings)
    if trace is None:
        return absent("the meter gave no usable readings around the window", idle_power_w)
    energy = trace.energy_between(t0_ns, t1_ns)
    if energy is None:
        return absent("the meter's readings do not cover the window (no reading at or "
                      "before its start and at or after its end)", idle_power_w)
    duration_s = (t1_ns - t0_ns) / 1e9
    return {
        "energy_j": energy,
        "avg_power_w": energy / duration_s if duration_s > 0 else None,
        "peak_power_w": trace.peak_power(t0_ns, t1_ns),
        "idle_power_w": idle_power_w,
        "above_idle_energy_j": None if idle_power_w is None
        else energy - idle_power_w * duration_s,
        "rails_j": rails_energy(readings, t0_ns, t1_ns) or None,
        "absent_reason": None,
    }


def check_slo(slo: Mapping[str, Any], where: str) -> dict[str, float]:
    """The window SLO spec as floats; SLOError names the first bad entry."""
    return limits(slo, where, SLOS, kind="window SLO")


def evaluate_slo(spec: Mapping[str, float],
                 values: Mapping[str, float | None]) -> list[SloResult]:
    """Each objective against the window's figures; an unmeasured figure is a breach."""
    return [verdict(name, "<=", limit, values[SLOS[name][0]]) for name, limit in spec.items()]


def breach_message(window: str, verdicts: Sequence[SloResult],
                   absent_reason: str | None) -> str | None:
    """One line for all of a window's breaches, or None when every objective is met."""
    return breach_line(f"window {window!r}", verdicts, lambda name: SLOS[name][1],
                       lambda _: f"not measured ({absent_reason or 'no reading'})")
