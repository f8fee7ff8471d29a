"""Feed pytest-benchmark's `benchmark` fixture with our per-request latencies.

So that `pytest benchmarks/ --benchmark-autosave` and `--benchmark-compare
--benchmark-compare-fail=median:10%` work on our benchmarks exactly as on any other.

Every `vlm_bench.run()` of a test reaches pytest-benchmark, as one benchmark per test.
pytest-benchmark gives a test one `benchmark` fixture, and the fixture accepts one
`pedantic()` call (a second raises `FixtureAlreadyUsed`); its compare matches saved
benchmarks by the test's full name. So each run's latencies are collected as the run
ends, and all of them are replayed in one `pedantic()` call when the test function
returns (`pytest_runtest_call`), in the order the runs were made:

- each benchmark item gets a `benchmark(timer=ReplayClock)` marker (the user's own
  `benchmark` marker kwargs are kept), the documented way to choose its clock;
- `benchmark.pedantic(clock.advance, rounds=n, iterations=1)` times one call per
  successful measured request of every run; the clock only moves inside that call, by
  that request's latency, so each round's duration is exactly one recorded latency;
- `benchmark.extra_info["vlmbench"]["runs"]` lists the runs, each with its benchmark id,
  its summary and `rounds: [start, stop]`, its slice of the rounds (`stats.data[start:stop]`
  in a `--benchmark-save-data` or `--benchmark-json` file); the device goes into
  pytest-benchmark's machine info (plugin.py, `pytest_benchmark_update_machine_info`).

A test that always makes the same runs therefore compares like any pytest-benchmark
test. A round is one successful measured request, t_end_ns - t_start_ns. Warm-up
requests, failed requests and image preparation are not rounds.

Only pytest-benchmark's public surface is used: its plugin's registered name, its
command-line options through `config.getoption`, its `benchmark` marker and fixture
(`pedantic`, `extra_info`). Nothing reads its private `config._benchmarksession`.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from pytest_vlmbench.metrics.per_request import latency_s
from pytest_vlmbench.results.models import BenchmarkEntry, Record

PLUGIN_NAME = "pytest-benchmark"  # the name its pytest_configure registers its session under

EXTRA_KEYS = ("requests", "succeeded", "failed", "success_rate", "parse_rate",
              "decode_tokens_per_s", "stream_tokens_per_s", "requests_per_s")

ROUND = "one successful measured request: t_end_ns - t_start_ns"


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


@dataclass
class _Feed:
    """One benchmark item's clock and the runs it has made so far."""

    clock: ReplayClock = field(default_factory=ReplayClock)
    fixture: Any = None  # pytest-benchmark's BenchmarkFixture, once a run has rounds
    latencies: list[float] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)


_FEED_KEY = pytest.StashKey[_Feed]()


def _option(config: pytest.Config, name: str) -> bool:
    return bool(config.getoption(name, False))


# Options that only turn pytest-benchmark's benchmarks off: they do not ask for its output.
_NOT_ASKING = ("--benchmark-skip", "--benchmark-disable")


def asked(config: pytest.Config) -> bool:
    """Whether the user asked for pytest-benchmark's output: a `--benchmark-...` option
    on the command line, in PYTEST_ADDOPTS or in the ini's addopts (other than the ones
    that turn it off). Without one, installing pytest-benchmark (it came with the
    `interop` extra, or with another project) must not add its header, its second table
    and its legend to every run: the bridge then feeds it nothing and its header line
    is dropped (plugin.py)."""
    words = [*config.invocation_params.args, *shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))]
    with contextlib.suppress(ValueError, KeyError):
        words += [str(w) for w in config.getini("addopts")]
    return any(
        str(w).startswith("--benchmark-") and not str(w).startswith(_NOT_ASKING) for w in words
    )


def active(config: pytest.Config) -> bool:
    """pytest-benchmark is installed, enabled, asked for, and not skipping benchmarks
    (--benchmark-only overrides --benchmark-skip, as in pytest-benchmark)."""
    if not config.pluginmanager.hasplugin(PLUGIN_NAME) or not asked(config):
        return False
    return not _option(config, "benchmark_skip") or _option(config, "benchmark_only")


def prepare_item(item: pytest.Item) -> None:
    """Give a benchmark item our clock. The `benchmark` fixture is requested when a run
    has rounds (a test that never runs a benchmark must not get an unused fixture, which
    pytest-benchmark warns about), except under --benchmark-only, which skips tests that
    do not ask for it at collection."""
    feed = _Feed()
    item.stash[_FEED_KEY] = feed
    user = item.get_closest_marker("benchmark")
    kwargs = dict(user.kwargs) if user is not None else {}
    kwargs["timer"] = feed.clock
    item.add_marker(pytest.mark.benchmark(**kwargs), append=False)
    names = getattr(item, "fixturenames", None)
    if _option(item.config, "benchmark_only") and isinstance(names, list) \
            and "benchmark" not in names:
        names.append("benchmark")


def add_run(request: pytest.FixtureRequest, entry: BenchmarkEntry,
            records: Sequence[Record]) -> bool:
    """Keep one `vlm_bench.run()`'s measured latencies for `flush`; False if
    pytest-benchmark is not in use for this item or the run has no rounds."""
    feed = request.node.stash.get(_FEED_KEY, None)
    if feed is None or not active(request.config):
        return False
    latencies = [latency for r in records if r["phase"] == "measure" and r["error"] is None
                 and (latency := latency_s(r)) is not None]
    if not latencies:
        return False
    if feed.fixture is None:
        feed.fixture = request.getfixturevalue("benchmark")
    summary = entry["summary"]
    start = len(feed.latencies)
    feed.latencies.extend(latencies)
    feed.runs.append({
        "benchmark": entry["id"], "run_id": entry.get("run_id"), "model": entry["model"],
        "precision": entry["precision"], "device": entry["device"], "task": entry["task"],
        "prompt_version": entry["prompt_version"], "dataset_hash": entry["dataset"]["hash"],
        **{k: summary.get(k) for k in EXTRA_KEYS},
        "ttft_p50_s": summary["ttft_s"]["median"],
        "energy_per_token_j": (summary.get("energy") or {}).get("energy_per_token_j"),
        "rounds": [start, len(feed.latencies)],
    })
    return True


def flush(item: pytest.Item) -> None:
    """Replay every run of the test into its `benchmark` fixture: one `pedantic()` call,
    one round per latency, in run order. Called once, when the test function returns."""
    feed = item.stash.get(_FEED_KEY, None)
    if feed is None or feed.fixture is None or not feed.latencies:
        return
    latencies, runs = feed.latencies, feed.runs
    feed.latencies, feed.runs = [], []
    fixture = feed.fixture
    fixture.extra_info["vlmbench"] = {"round": ROUND, "runs": runs}
    feed.clock.load(latencies)
    fixture.pedantic(feed.clock.advance, rounds=len(latencies), iterations=1, warmup_rounds=0)
