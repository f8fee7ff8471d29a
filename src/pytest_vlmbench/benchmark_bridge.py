"""Feed pytest-benchmark's `benchmark` fixture with our per-request latencies.

So that `pytest benchmarks/ --benchmark-autosave` and `--benchmark-compare
--benchmark-compare-fail=median:10%` work on our benchmarks exactly as on any other.
Only pytest-benchmark's public surface is used:
- each benchmark item gets a `benchmark(timer=ReplayClock)` marker (the user's own
  `benchmark` marker kwargs are kept), the documented way to choose its clock;
- after our run, `benchmark.pedantic(clock.advance, rounds=n, iterations=1)` times one
  call per successful measured request; the clock only moves inside that call, by
  that request's latency, so each round's duration is exactly one recorded latency;
- our summary goes into `benchmark.extra_info`, the device into its machine info.
A round is one successful measured request, t_end_ns - t_start_ns. Warm-up requests,
failed requests and image preparation are not rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

_CLOCK_KEY = pytest.StashKey["ReplayClock"]()


class ReplayClock:
    """A clock that stands still except when `advance` moves it by the next latency."""

    __name__ = "ReplayClock"  # pytest-benchmark prints the timer's name

    def __init__(self) -> None:
        self.now = 0.0
        self._pending: list[float] = []

    def __call__(self) -> float:
        return self.now

    def load(self, latencies_s: Sequence[float]) -> None:
        self._pending = list(reversed(latencies_s))

    def advance(self) -> None:
        self.now += self._pending.pop()


def active(config: pytest.Config) -> bool:
    """pytest-benchmark is installed, enabled and not skipping benchmarks."""
    bs = getattr(config, "_benchmarksession", None)
    return bs is not None and not getattr(bs, "skip", False)


def prepare_item(item: pytest.Item) -> None:
    """Give a benchmark item our clock. The `benchmark` fixture is requested when the run
    ends (a test that never runs a benchmark must not get an unused fixture, which
    pytest-benchmark warns about), except under --benchmark-only, which skips tests that
    do not ask for it at collection."""
    clock = ReplayClock()
    item.stash[_CLOCK_KEY] = clock
    user = item.get_closest_marker("benchmark")
    kwargs = dict(user.kwargs) if user is not None else {}
    kwargs["timer"] = clock
    item.add_marker(pytest.mark.benchmark(**kwargs), append=False)
    names = getattr(item, "fixturenames", None)
    only = getattr(getattr(item.config, "_benchmarksession", None), "only", False)
    if only and isinstance(names, list) and "benchmark" not in names:
        names.append("benchmark")


EXTRA_KEYS = ("requests", "succeeded", "failed", "success_rate", "parse_rate",
              "decode_tokens_per_s", "stream_tokens_per_s", "requests_per_s")


def feed(request: pytest.FixtureRequest, entry: dict[str, Any],
         records: Sequence[dict[str, Any]]) -> bool:
    """Replay the benchmark's measured latencies into pytest-benchmark; False if it is
    not in use for this item."""
    node = request.node
    clock = node.stash.get(_CLOCK_KEY, None)
    if clock is None or not active(request.config):
        return False
    latencies = [
        (r["t_end_ns"] - r["t_start_ns"]) / 1e9
        for r in records if r["phase"] == "measure" and r["error"] is None
    ]
    if not latencies:
        return False
    fixture = request.getfixturevalue("benchmark")
    summary = entry["summary"]
    fixture.extra_info.update({
        "vlmbench": {
            "benchmark": entry["id"], "run_id": entry.get("run_id"), "model": entry["model"],
            "precision": entry["precision"], "device": entry["device"], "task": entry["task"],
            "prompt_version": entry["prompt_version"], "dataset_hash": entry["dataset"]["hash"],
            **{k: summary.get(k) for k in EXTRA_KEYS},
            "ttft_p50_s": summary["ttft_s"]["median"],
            "energy_per_token_j": (summary.get("energy") or {}).get("energy_per_token_j"),
            "round": "one successful measured request: t_end_ns - t_start_ns",
        }
    })
    clock.load(latencies)
    fixture.pedantic(clock.advance, rounds=len(latencies), iterations=1, warmup_rounds=0)
    return True
