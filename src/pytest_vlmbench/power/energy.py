"""Energy between two instants from a meter's readings, and a benchmark's energy figures.

Two kinds of readings:
- an energy counter (NVML total energy, RAPL): the cumulative energy E(t) is known at
  each reading and taken as linear between readings (constant power in between);
- instantaneous power (tegrastats, INA3221, NVML power): power is taken as linear
  between readings and integrated exactly (trapezoids, cut at the window's edges).
A window is measured only when readings exist at or before its start and at or after
its end; otherwise its energy is absent, never extrapolated.

Attribution: a benchmark's energy is E(last measured end) - E(first measured start);
per-request energy only for requests lasting at least `PER_REQUEST_MIN_RESOLUTIONS`
times the meter's resolution; above-idle energy subtracts the idle baseline power
times the window.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from pytest_vlmbench.metrics.stats import distribution
from pytest_vlmbench.power import Reading
from pytest_vlmbench.results.models import EnergySummary, Record

Records = Sequence[Record]
"""What attribute reads: records, typed; the Mapping arm is for the runner's records, still
plain dicts when monitor.finish passes them (mypy checks every access on the Record arm)."""

PER_REQUEST_MIN_RESOLUTIONS = 2.0
SHORT_WINDOW_RESOLUTIONS = 5.0

METHODS = {
    "energy_j": "energy between the first measured request's start and the last measured "
    "request's end (warm-up excluded): difference of the meter's energy counter, linear "
    "between readings; or the exact integral of power taken as linear between readings",
    "above_idle_energy_j": "energy_j - idle_power_w * window_s; idle power measured once per "
    "session, before the first benchmark's warm-up or vlm_power window, whichever comes "
    "first (with the model loaded then, if any: power.idle.note says which)",
    "energy_per_token_j": "energy_j / generated tokens (completion_tokens of successful "
    "measured requests); failed requests' energy stays in the numerator",
    "tokens_per_s_per_w": "generated tokens / energy_j, i.e. (tokens/s) / average watts",
    "per_request": "energy of each successful measured request lasting at least "
    f"{PER_REQUEST_MIN_RESOLUTIONS:g} x the meter's resolution",
    "peak_power_w": "largest power reading in the window (counter meters: largest average "
    "power between two consecutive readings)",
    "memory": "rss_peak_sampled_bytes: largest RSS sampled by the sampler thread from the "
    "benchmark's start (before warm-up) to its end; rss_hwm_bytes: the kernel's high-water "
    "mark, reset at the benchmark's start (exact; null where it cannot be reset); "
    "accelerator_memory_peak_bytes: largest memory reading of the meter (GPU memory used, or a "
    "Jetson's shared RAM) in the same span",
    "roofline": "bound_tokens_per_s = bandwidth_gbs * 1e9 / bytes_per_token (weight bytes one "
    "decode step reads, KV cache ignored); percent_of_bound = decode_tokens_per_s / bound",
}


class Trace:
    """Cumulative energy as a function of time, from readings of one kind."""

    def __init__(self, times_ns: Sequence[int], values: Sequence[float], counter: bool) -> None:
        if len(times_ns) != len(values):
            raise ValueError("times and values differ in length")
        self.t = list(times_ns)
        self.v = list(values)
        self.counter = counter
        self.dropped = 0  # readings left out for lack of this trace's quantity
        # cumulative energy (J) at each reading
        if counter:
            self.cum = [v - self.v[0] for v in self.v] if self.v else []
        else:
            self.cum = [0.0]
            for i in range(1, len(self.t)):
                dt = (self.t[i] - self.t[i - 1]) / 1e9
                self.cum.append(self.cum[-1] + dt * (self.v[i] + self.v[i - 1]) / 2)
            if not self.t:
                self.cum = []

    @classmethod
    def of(cls, readings: Sequence[Reading]) -> Trace | None:
        """The counter trace when any reading has energy_j, else the power trace; readings
        missing that quantity (a failed read) are left out, never mixed with the other
        kind. `dropped` says how many."""
        counter = any(r.energy_j is not None for r in readings)
        points = [
            (r.t_ns, r.energy_j if counter else r.power_w) for r in readings
            if (r.energy_j if counter else r.power_w) is not None
        ]
        if not points:
            return None
        values = [float(v) for _, v in points if v is not None]
        trace = cls([t for t, _ in points], values, counter=counter)
        trace.dropped = len(readings) - len(points)
        return trace

    def covers(self, t0: int, t1: int) -> bool:
        return bool(self.t) and self.t[0] <= t0 and self.t[-1] >= t1

    def energy_at(self, t: int) -> float:
        """Cumulative energy at t (t within the readings)."""
        i = bisect.bisect_right(self.t, t) - 1
        if i < 0 or t > self.t[-1]:
            raise ValueError("instant outside the readings")
        if i == len(self.t) - 1 or self.t[i] == t:
            return self.cum[i]
        t_a, t_b = self.t[i], self.t[i + 1]
        frac = (t - t_a) / (t_b - t_a)
        if self.counter:
            return self.cum[i] + frac * (self.cum[i + 1] - self.cum[i])
        p_a, p_b = self.v[i], self.v[i + 1]
        p_t = p_a + frac * (p_b - p_a)
        return self.cum[i] + (t - t_a) / 1e9 * (p_a + p_t) / 2

    def energy_between(self, t0: int, t1: int) -> float | None:
        if t1 < t0 or not self.covers(t0, t1):
            return None
        return self.energy_at(t1) - self.energy_at(t0)

    def peak_power(self, t0: int, t1: int) -> float | None:
        if self.counter:
            rates = [
                (self.cum[i + 1] - self.cum[i]) / ((self.t[i + 1] - self.t[i]) / 1e9)
                for i in range(len(self.t) - 1)
                if self.t[i + 1] > t0 and self.t[i] < t1 and self.t[i + 1] > self.t[i]
            ]
            return max(rates) if rates else None
        inside = [v for t, v in zip(self.t, self.v, strict=True) if t0 <= t <= t1]
        edges = [self._power_at(t0), self._power_at(t1)]
        values = inside + [e for e in edges if e is not None]
        return max(values) if values else None

    def _power_at(self, t: int) -> float | None:
        if not self.covers(t, t):
            return None
        i = bisect.bisect_right(self.t, t) - 1
        if i == len(self.t) - 1:
            return self.v[i]
        frac = (t - self.t[i]) / (self.t[i + 1] - self.t[i])
        return self.v[i] + frac * (self.v[i + 1] - self.v[i])


def rails_energy(readings: Sequence[Reading], t0: int, t1: int) -> dict[str, float]:
    """Energy per rail over [t0, t1] for rails present in every reading."""
    if not readings:
        return {}
    names = set(readings[0].rails_w)
    for r in readings[1:]:
        names &= set(r.rails_w)
    out = {}
    for name in sorted(names):
        trace = Trace([r.t_ns for r in readings], [r.rails_w[name] for r in readings], False)
        e = trace.energy_between(t0, t1)
        if e is not None:
            out[name] = e
    return out


def _div(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def attribute(
    readings: Sequence[Reading], records: Records, *,
    resolution_s: float, idle_power_w: float | None, vision: bool,
) -> EnergySummary:
    """A benchmark's energy block (summary.energy) from readings and its records."""
    measured = [r for r in records if r["phase"] == "measure"]
    timed = [(r, start, end) for r in measured
             if (start := r["t_start_ns"]) is not None and (end := r["t_end_ns"]) is not None]
    warnings: list[str] = []
    block: EnergySummary = {
        "method": None, "window_s": None, "readings_in_window": 0, "energy_j": None,
        "avg_power_w": None, "peak_power_w": None, "idle_power_w": idle_power_w,
        "above_idle_energy_j": None, "energy_per_token_j": None,
        "above_idle_energy_per_token_j": None, "energy_per_request_j": None,
        "energy_per_image_j": None, "tokens_per_s_per_w": None,
        "above_idle_tokens_per_s_per_w": None, "tokens": 0, "requests": len(measured),
        "images": 0, "rails_energy_j": {}, "per_request": [], "per_request_j": None,
        "resolution_s": resolution_s, "warnings": warnings,
    }
    trace = Trace.of(readings)
    if not timed or trace is None:
        warnings.append("no timed requests" if not timed else "the meter gave no usable readings")
        return block
    block["method"] = "counter" if trace.counter else "power integration"
    if trace.dropped:
        warnings.append(f"{trace.dropped} readings without "
                        f"{'energy' if trace.counter else 'power'} (failed reads) were left out")
    t0 = min(start for _, start, _ in timed)
    t1 = max(end for _, _, end in timed)
    window_s = (t1 - t0) / 1e9
    block["window_s"] = window_s
    block["readings_in_window"] = sum(1 for t in trace.t if t0 <= t <= t1)
    energy = trace.energy_between(t0, t1)
    if energy is None:
        warnings.append("the meter's readings do not cover the measured window")
        return block
    if window_s < SHORT_WINDOW_RESOLUTIONS * resolution_s:
        warnings.append(
            f"the measured window ({window_s:.3f} s) is shorter than "
            f"{SHORT_WINDOW_RESOLUTIONS:g} x the meter's resolution ({resolution_s:.3f} s): "
            "energy is coarse; raise --vlm-samples"
        )
    ok = [r for r in measured if r["error"] is None]
    tokens = sum(r["completion_tokens"] or 0 for r in ok)
    images = sum(len(r["images"]) for r in ok) if vision else 0
    block.update(
        energy_j=energy,
        avg_power_w=_div(energy, window_s),
        peak_power_w=trace.peak_power(t0, t1),
        tokens=tokens,
        images=images,
        energy_per_token_j=_div(energy, tokens),
        energy_per_request_j=_div(energy, len(measured)),
        energy_per_image_j=_div(energy, images) if vision else None,
        tokens_per_s_per_w=_div(tokens, energy),
        rails_energy_j=rails_energy(readings, t0, t1),
    )
    if idle_power_w is not None:
        above = energy - idle_power_w * window_s
        block["above_idle_energy_j"] = above
        block["above_idle_energy_per_token_j"] = _div(above, tokens)
        block["above_idle_tokens_per_s_per_w"] = _div(tokens, above) if above > 0 else None
    per_request: list[dict[str, float]] = []
    skipped = 0
    for r, start, end in timed:  # a successful request is always timed
        if r["error"] is not None:
            continue
        if (end - start) / 1e9 < PER_REQUEST_MIN_RESOLUTIONS * resolution_s:
            skipped += 1
            continue
        e = trace.energy_between(start, end)
        if e is not None and math.isfinite(e):
            per_request.append(
                {"seq": r["seq"], "energy_j": e, "tokens": r["completion_tokens"] or 0}
            )
    block["per_request"] = per_request
    block["per_request_j"] = distribution([p["energy_j"] for p in per_request])
    if skipped:
        warnings.append(
            f"{skipped} requests shorter than {PER_REQUEST_MIN_RESOLUTIONS:g} x the meter's "
            f"resolution ({resolution_s:.3f} s) have no per-request energy"
        )
    return block


def idle_power(readings: Sequence[Reading], t0: int, t1: int) -> float | None:
    """Average power over an idle window, or None when the readings do not cover it."""
    trace = Trace.of(readings)
    if trace is None or t1 <= t0:
        return None
    energy = trace.energy_between(t0, t1)
    return None if energy is None else energy / ((t1 - t0) / 1e9)
