"""Load patterns: how the measured requests of a benchmark are sent.

Three patterns, as `vllm bench serve` and MLPerf's server scenario have them, and the
offline throughput mode of `vllm bench throughput` (MLPerf's offline scenario):

- **sequential** (the default): one request at a time, as the runner always sent them;
- **closed loop, concurrency N**: N workers, each sending its next request as soon as its
  previous one ends, so exactly min(N, requests left) are in flight;
- **open loop, request rate R**: each request is sent at a time drawn in advance, whatever
  the server is doing, like users arriving. Arrivals are `get_request`'s in vLLM's
  `vllm/benchmarks/serve.py`: the gap before every request (the first included) is drawn
  from a gamma distribution with shape = burstiness and scale = 1 / (R * burstiness)
  (mean 1/R; burstiness 1 is a Poisson process, below 1 burstier, above 1 more even; the
  `constant` arrival is burstiness infinite: every gap 1/R); the gaps are summed and the
  sums rescaled so the last is exactly n / R (vLLM does this so that runs with different
  seeds offer the same load). Seeded: one `random.Random(seed)` per level.
  `max_concurrency` caps the requests in flight: a request whose time has come waits for
  a slot, and that wait is the *client lag* each record keeps (`t_start_ns - scheduled_ns`):
  E2EL starts when the request is sent, so vLLM's users found the wait missing from it.

- **offline throughput, batch N**: the measured requests are split into batches of N, each
  submitted together in one engine call (`generate_batch`, Capabilities.batch: vLLM's
  `LLM.generate(list)`, one padded transformers `generate`). The sample unit is the batch:
  its requests/s and output tokens/s over the batch's wall time (metrics/throughput.py),
  with statistics over the repeated batches. Its entry is its own compare key (`@b8`), so
  batch figures are never compared with one-request-at-a-time ones.

A sweep is several levels (`concurrency:1,4,8`); the plugin makes each its own results
entry and compare key. `drive` sends one level's requests on the model's event loop
(`model.run_async(drive(...))`, Capabilities.asynchronous) and hands each outcome to a
callback in completion order; the runner writes the record there, at once.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pytest_vlmbench.backends import Request, Response
from pytest_vlmbench.errors import UsageMistake, UserInputError

Pattern = Literal["sequential", "concurrency", "rate", "batch"]
Arrival = Literal["poisson", "gamma", "constant"]
ARRIVALS: tuple[Arrival, ...] = ("poisson", "gamma", "constant")
SYNTAX = ("sequential | concurrency:N[,N...] | rate:R[,R...][:poisson|:gamma:B|:constant]"
          "[:max=N] | batch:N[,N...]")


class LoadPatternError(UsageMistake):
    """A load pattern that makes no sense (the option, the marker): one line, before
    any request."""


class UnsupportedLoad(UserInputError):
    """A load pattern on a model that serves one request at a time: one line, before
    any request (this benchmark fails; others of the session run)."""


def refuse_unsupported(level: LoadLevel, backend: str, model: str, *, asynchronous: bool,
                       batch: bool) -> None:
    """UnsupportedLoad for a level the model cannot be driven with: a batch level on a
    model without `generate_batch`, a concurrency or rate level on one without
    asynchronous requests (an in-process engine)."""
    if level.pattern == "batch":
        if not batch:
            raise UnsupportedLoad(
                f"load level {level.label}: backend {backend!r} (model {model!r}) cannot "
                "submit a batch of requests together (offline throughput needs an engine "
                "with generate_batch: vllm, transformers)")
        return
    if not asynchronous:
        refuse_sequential_model(level, backend, model)


def refuse_sequential_model(level: LoadLevel, backend: str, model: str) -> None:
    """UnsupportedLoad for a concurrency or rate level on a model without asynchronous
    requests (an in-process backend): its requests cannot overlap."""
    if not level.sequential:
        raise UnsupportedLoad(
            f"load level {level.label}: backend {backend!r} (model {model!r}) runs one "
            "request at a time; load patterns need a server backend (asynchronous requests)")


@dataclass(frozen=True)
class LoadLevel:
    """One point of a load pattern: sequential, N concurrent workers, or R requests/s.

    `burstiness` is the gamma shape of an open loop's gaps (1 = Poisson); it is 1 and
    meaningless for the other patterns and for `constant` arrivals. `max_concurrency`
    caps an open loop's requests in flight (None: no cap)."""

    pattern: Pattern = "sequential"
    concurrency: int | None = None
    rate: float | None = None
    arrival: Arrival = "poisson"
    burstiness: float = 1.0
    max_concurrency: int | None = None
    batch: int | None = None
    """Requests per batch of an offline-throughput level (pattern "batch")."""

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:  # the caller (option, marker) says where the level came from
            raise LoadPatternError(problem)

    def _problem(self) -> str | None:
        if self.pattern != "batch" and self.batch is not None:
            return "only a batch level has a batch size"
        if self.pattern == "sequential":
            if self.concurrency is not None or self.rate is not None \
                    or self.max_concurrency is not None:
                return "a sequential level has no concurrency, rate or max_concurrency"
        elif self.pattern == "batch":
            if not _positive_int(self.batch):
                return f"batch size must be a whole number >= 1, got {self.batch!r}"
            if self.concurrency is not None or self.rate is not None \
                    or self.max_concurrency is not None:
                return "a batch level has no concurrency, rate or max_concurrency"
        elif self.pattern == "concurrency":
            if not _positive_int(self.concurrency):
                return f"concurrency must be a whole number >= 1, got {self.concurrency!r}"
            if self.rate is not None or self.max_concurrency is not None:
                return "a concurrency level has no rate or max_concurrency"
        elif self.pattern == "rate":
            if not _positive_number(self.rate):
                return (f"rate must be a finite number > 0 (requests/s), got {self.rate!r}"
                        + (" (to send as fast as the server takes them, use concurrency:N)"
                           if self.rate == math.inf else ""))
            if self.concurrency is not None:
                return "a rate level has no concurrency (cap it with max_concurrency)"
            if self.max_concurrency is not None and not _positive_int(self.max_concurrency):
                return f"max_concurrency must be a whole number >= 1, got {self.max_concurrency!r}"
        else:
            return (f"pattern must be sequential, concurrency, rate or batch, got "
                    f"{self.pattern!r}")
        if self.arrival not in ARRIVALS:
            return f"arrival must be one of {', '.join(ARRIVALS)}, got {self.arrival!r}"
        if not _positive_number(self.burstiness):
            return f"burstiness must be a finite number > 0, got {self.burstiness!r}"
        if self.arrival == "poisson" and self.burstiness != 1.0:
            return (f"poisson arrivals have burstiness 1, got {self.burstiness:g} "
                    "(use gamma arrivals for another burstiness)")
        if self.arrival != "poisson" and self.pattern != "rate":
            return f"{self.arrival} arrivals apply to a request rate only"
        if self.arrival == "constant" and self.burstiness != 1.0:
            return "constant arrivals have no burstiness"
        return None

    @property
    def sequential(self) -> bool:
        return self.pattern == "sequential"

    @property
    def label(self) -> str:
        """Short and unique within a sweep, part of the benchmark's compare key:
        `seq`, `c4`, `r2.5`, `r2.5-gamma0.5`, `r8-constant`, `r8-max16`."""
        if self.pattern == "sequential":
            return "seq"
        if self.pattern == "concurrency":
            return f"c{self.concurrency}"
        if self.pattern == "batch":
            return f"b{self.batch}"
        label = f"r{self.rate:g}"
        if self.arrival == "gamma":
            label += f"-gamma{self.burstiness:g}"
        elif self.arrival == "constant":
            label += "-constant"
        if self.max_concurrency is not None:
            label += f"-max{self.max_concurrency}"
        return label

    def to_json(self) -> dict[str, Any]:
        """The results entry's `load` block."""
        rate = self.pattern == "rate"
        return {
            "pattern": self.pattern, "label": self.label,
            "concurrency": self.concurrency, "rate_rps": self.rate,
            "arrival": self.arrival if rate else None,
            "burstiness": self.burstiness if rate and self.arrival == "gamma"
            else 1.0 if rate and self.arrival == "poisson" else None,
            "max_concurrency": self.max_concurrency,
            **({"batch_size": self.batch} if self.pattern == "batch" else {}),
        }


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _positive_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


SEQUENTIAL = LoadLevel()


# -- parsing -------------------------------------------------------------------------


def _fail(text: str, why: str, syntax: bool = False) -> LoadPatternError:
    return LoadPatternError(f"load pattern {text!r}: {why}"
                            + (f" (syntax: {SYNTAX})" if syntax else ""))


def _parse_list(text: str, part: str, what: str, convert: Callable[[str], Any]) -> list[Any]:
    values = []
    for item in part.split(","):
        item = item.strip()
        try:
            values.append(convert(item))
        except ValueError:
            raise _fail(text, f"{what} {item!r} is not a number") from None
    return values


def _checked(text: str, levels: Iterable[LoadLevel]) -> list[LoadLevel]:
    """The levels in order, each label once (a level twice would be two entries with
    one id)."""
    out: list[LoadLevel] = []
    for level in levels:
        if level in out:
            raise _fail(text, f"level {level.label} is given twice")
        out.append(level)
    if not out:
        raise _fail(text, "no level")
    return out


def _level(text: str, **fields: Any) -> LoadLevel:
    try:
        return LoadLevel(**fields)
    except LoadPatternError as exc:
        raise _fail(text, str(exc)) from None


def parse_load(text: str) -> list[LoadLevel]:
    """The levels of a `--vlm-load` value.

    >>> [lv.label for lv in parse_load("concurrency:1,4,8")]
    ['c1', 'c4', 'c8']
    >>> [lv.label for lv in parse_load("rate:2,4:gamma:0.5:max=16")]
    ['r2-gamma0.5-max16', 'r4-gamma0.5-max16']
    """
    spec = text.strip()
    if spec in ("sequential", "seq"):
        return [SEQUENTIAL]
    head, _, rest = spec.partition(":")
    if head not in ("concurrency", "rate", "batch"):
        raise _fail(text, f"unknown pattern {head!r}", syntax=True)
    if not rest.strip():
        raise _fail(text, f"{head} needs values, e.g. {head}:1,4")
    parts = rest.split(":")
    if head == "batch":
        if len(parts) > 1:
            raise _fail(text, "batch takes only a list of batch sizes")
        sizes = _parse_list(text, parts[0], "batch size", int)
        return _checked(text, (_level(text, pattern="batch", batch=n) for n in sizes))
    if head == "concurrency":
        if len(parts) > 1:
            raise _fail(text, "concurrency takes only a list of worker counts")
        counts = _parse_list(text, parts[0], "concurrency", int)
        return _checked(text, (_level(text, pattern="concurrency", concurrency=n)
                               for n in counts))
    rates = _parse_list(text, parts[0], "rate", float)
    options = [p.strip() for p in parts[1:]]
    cap: int | None = None
    if options and options[-1].startswith("max="):
        value = options.pop()[4:]
        try:
            cap = int(value)
        except ValueError:
            raise _fail(text, f"max={value!r} is not a whole number") from None
    arrival: Arrival = "poisson"
    burstiness = 1.0
    if options:
        name = options.pop(0)
        if name not in ARRIVALS:
            raise _fail(text, f"unknown arrival {name!r} (poisson, gamma or constant)")
        arrival = name
        if options:
            burstiness = _parse_list(text, options.pop(0), "burstiness", float)[0]
        elif arrival == "gamma":
            raise _fail(text, "gamma arrivals need a burstiness, e.g. rate:2:gamma:0.5")
    if options:
        raise _fail(text, f"unexpected {':'.join(options)!r}", syntax=True)
    return _checked(text, (
        _level(text, pattern="rate", rate=r, arrival=arrival, burstiness=burstiness,
               max_concurrency=cap) for r in rates))


MARKER_KEYS = ("concurrency", "rate", "arrival", "burstiness", "max_concurrency", "batch")


def levels_from_marker(kwargs: Mapping[str, Any], args: Sequence[Any] = ()) -> list[LoadLevel]:
    """The levels of `@pytest.mark.vlm_load(...)`: `vlm_load(concurrency=[1, 4, 8])`,
    `vlm_load(rate=[2, 4], arrival="gamma", burstiness=0.5, max_concurrency=16)`, or the
    option's syntax as one argument, `vlm_load("rate:2,4")`."""
    where = "@pytest.mark.vlm_load"
    if args:
        if len(args) != 1 or kwargs or not isinstance(args[0], str):
            raise LoadPatternError(f"{where}: give one pattern string (\"concurrency:1,4\") "
                                   "or keywords (concurrency=[1, 4]), not both")
        try:
            return parse_load(args[0])
        except LoadPatternError as exc:
            raise LoadPatternError(f"{where}: {exc}") from None
    unknown = sorted(set(kwargs) - set(MARKER_KEYS))
    if unknown:
        raise LoadPatternError(f"{where}: unknown argument(s) {', '.join(unknown)}; "
                               f"known: {', '.join(MARKER_KEYS)}")
    if "batch" in kwargs:
        others = sorted(set(kwargs) - {"batch"})
        if others:
            raise LoadPatternError(f"{where}: batch=[...] takes no {', '.join(others)}")
        sizes = kwargs["batch"]
        sizes = list(sizes) if isinstance(sizes, list | tuple) else [sizes]
        try:
            return _checked(f"batch={sizes}", (LoadLevel("batch", batch=n) for n in sizes))
        except LoadPatternError as exc:
            raise LoadPatternError(f"{where}: {exc}") from None
    concurrency, rate = kwargs.get("concurrency"), kwargs.get("rate")
    if (concurrency is None) == (rate is None):
        raise LoadPatternError(f"{where}: give concurrency=[...] or rate=[...] (one of them; "
                               "to cap a rate's requests in flight use max_concurrency=N)")
    values = concurrency if concurrency is not None else rate
    values = list(values) if isinstance(values, list | tuple) else [values]
    fields: dict[str, Any] = {k: kwargs[k] for k in ("arrival", "burstiness", "max_concurrency")
                              if k in kwargs}
    if _positive_number(fields.get("burstiness")):
        fields["burstiness"] = float(fields["burstiness"])
    if concurrency is not None and fields:
        names = sorted(fields)
        raise LoadPatternError(f"{where}: {', '.join(names)} appl{'y' if len(names) > 1 else 'ies'}"
                               " to rate=[...] only")
    if fields.get("arrival") == "gamma" and "burstiness" not in fields:
        raise LoadPatternError(f"{where}: arrival='gamma' needs burstiness=B")
    levels = []
    for value in values:
        try:
            if concurrency is not None:
                levels.append(LoadLevel("concurrency", concurrency=value))
            else:
                rps = float(value) if _positive_number(value) else value
                levels.append(LoadLevel("rate", rate=rps, **fields))
        except LoadPatternError as exc:
            raise LoadPatternError(f"{where}: {exc}") from None
        except TypeError as exc:  # a field of the wrong kind
            raise LoadPatternError(f"{where}: {exc}") from None
    seen: set[str] = set()
    for level in levels:
        if level.label in seen:
            raise LoadPatternError(f"{where}: level {level.label} is given twice")
        seen.add(level.label)
    if not levels:
        raise LoadPatternError(f"{where}: no level")
    return levels


# -- the arrival schedule -------------------------------------------------------------


def gaps_s(n: int, rate: float, burstiness: float, rng: random.Random) -> list[float]:
    """n gaps (seconds) before each request, as vLLM draws them: gamma(shape=burstiness,
    scale=1/(rate*burstiness)), mean 1/rate; burstiness inf: every gap 1/rate."""
    if math.isinf(burstiness):
        return [1.0 / rate] * n
    theta = 1.0 / (rate * burstiness)
    return [rng.gammavariate(burstiness, theta) for _ in range(n)]


def schedule_s(n: int, level: LoadLevel, seed: int) -> list[float]:
    """Send times (seconds after the level starts) of an open loop's n requests: the
    cumulative gaps, rescaled so the last is n / rate (vLLM `get_request`)."""
    if level.pattern != "rate" or level.rate is None:
        raise ValueError(f"level {level.label} has no arrival schedule")
    burst = math.inf if level.arrival == "constant" else level.burstiness
    times: list[float] = []
    total = 0.0
    for gap in gaps_s(n, level.rate, burst, random.Random(seed)):
        total += gap
        times.append(total)
    if times and times[-1] > 0:
        scale = (n / level.rate) / times[-1]
        times = [t * scale for t in times]
    return times


# -- the driver -----------------------------------------------------------------------


class AsyncModel(Protocol):
    """What the driver needs of a model (Capabilities.asynchronous)."""

    async def agenerate(self, request: Request) -> Response: ...


@dataclass(frozen=True)
class Outcome:
    """One request as the driver sent it: when it was due, when the driver called the
    model and saw it return, and the response or the exception."""

    index: int
    scheduled_ns: int
    t_call_ns: int
    t_done_ns: int
    response: Response | None
    error: Exception | None


@dataclass
class DriveStats:
    """What the driver saw of a level: requests sent, the most in flight at once, and
    its span (perf_counter_ns)."""

    sent: int = 0
    peak_in_flight: int = 0
    t_begin_ns: int = 0
    t_end_ns: int = 0


async def drive(model: AsyncModel, requests: Sequence[Request], level: LoadLevel,
                on_done: Callable[[Outcome], None], *, seed: int = 0) -> DriveStats:
    """Send `requests` under `level` and call `on_done` once per request, in completion
    order, on the event loop (keep it short: it delays the other streams' chunk times).

    Closed loop (concurrency N): each outcome's `scheduled_ns` is when its worker took it
    (the client's own delay before the request's t_start_ns). Open loop (rate R): it is
    the drawn send time. A request that raises is an outcome with the error, timed by
    the driver from the call to the exception (Runner._ask's rule); an exception from
    `on_done` ends the level (the requests in flight are cancelled) and propagates."""
    stats = DriveStats(t_begin_ns=time.perf_counter_ns())
    in_flight = 0

    async def send(index: int, scheduled: int) -> None:
        nonlocal in_flight
        in_flight += 1
        stats.sent += 1
        stats.peak_in_flight = max(stats.peak_in_flight, in_flight)
        t_call = time.perf_counter_ns()
        response: Response | None = None
        error: Exception | None = None
        try:
            response = await model.agenerate(requests[index])
        except Exception as exc:  # a failed request is a record, not the end of the level
            error = exc
        t_done = time.perf_counter_ns()
        in_flight -= 1
        on_done(Outcome(index, scheduled, t_call, t_done, response, error))

    try:
        if level.pattern == "rate":
            await _open_loop(send, len(requests), level, seed, stats.t_begin_ns)
        else:
            workers = 1 if level.sequential else int(level.concurrency or 1)
            await _closed_loop(send, len(requests), workers)
    except BaseExceptionGroup as group:  # TaskGroup: the first failure, as itself
        raise group.exceptions[0] from None
    stats.t_end_ns = time.perf_counter_ns()
    return stats


Send = Callable[[int, int], Any]


async def _closed_loop(send: Send, n: int, workers: int) -> None:
    """`workers` coroutines, each taking the next request when its previous one ended."""
    pending = iter(range(n))

    async def worker() -> None:
        for index in pending:  # one shared iterator: each index is taken once
            await send(index, time.perf_counter_ns())

    async with asyncio.TaskGroup() as group:
        for _ in range(min(workers, n)):
            group.create_task(worker())


async def _open_loop(send: Send, n: int, level: LoadLevel, seed: int, t0: int) -> None:
    """Each request sent at its drawn time; with max_concurrency, once a slot is free."""
    due = [t0 + round(t * 1e9) for t in schedule_s(n, level, seed)]
    slots = asyncio.Semaphore(level.max_concurrency) if level.max_concurrency else None

    async def capped(index: int) -> None:
        try:
            await send(index, due[index])
        finally:
            if slots is not None:
                slots.release()

    async with asyncio.TaskGroup() as group:
        for index in range(n):
            wait_s = (due[index] - time.perf_counter_ns()) / 1e9
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            if slots is not None:
                await slots.acquire()  # a late request waits here: its lag grows
            group.create_task(capped(index))


def highest_level_met(entries: Sequence[Mapping[str, Any]]) -> str | None:
    """The label of a sweep's highest level (most workers, highest rate, largest batch) whose
    benchmark met all its SLOs (entries with `load` and `slo_passed`); None when none
    did or none had SLOs."""
    met = [(float(load.get("concurrency") or load.get("rate_rps") or load.get("batch_size")
                  or 0), str(load["label"]))
           for entry in entries
           if isinstance(load := entry.get("load"), Mapping) and entry.get("slo_passed") is True]
    return max(met)[1] if met else None
