"""What does our OpenAI client cost per request? Against a server that answers at once.

tools/null_server.py (bare asyncio, one core) streams a fixed answer (`--chunks` content
chunks, a usage chunk, `[DONE]`) to every request; this script drives it, from one
other core, with
- **ours**: `OpenAIModel` (backends/openai_http) under the load driver (`run.load.drive`,
  closed loop, N workers), every response parsed and timed chunk by chunk as in a
  benchmark;
- **bare**: the floor, a hand-written aiohttp loop over the same body (one session,
  unlimited kept-alive connections, as ours) that reads the stream as it comes
  (`readany`), splits the events and parses each with orjson, and times nothing.
At 1 and at 32 concurrent streams, `--requests` requests per run, alternating ours and
bare for `--rounds` rounds (ABBA order, so a drift of the machine falls on both), each
process pinned to its own core where the machine allows it. Printed per level: the
requests per second sustained and the client CPU per request (`time.process_time`: this
process only, the server is another), medians over the rounds, and ours/bare measured
side by side in each round. The server's CPU share shows whether the server's core,
not the client, was the limit; each run also shows what other processes took of the
client's core (the machine is shared: before each run the script waits, up to
`--quiet-wait` seconds, for a second in which they leave it alone).

    python tools/client_overhead.py [--requests 3000] [--rounds 3] [--chunks 8]
    python tools/client_overhead.py --profile   # cProfile of ours at 32 streams
    python tools/client_overhead.py --loop uvloop   # both clients on uvloop (if installed)

A performance target (issue 12: >= 1,000 requests/s and < 0.5 ms client CPU per request
at 32 streams), not a test: it prints what it measured and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import importlib
import io
import os
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from pytest_vlmbench.backends import Request  # noqa: E402
from pytest_vlmbench.backends.openai_http import ClientConfig, OpenAIModel  # noqa: E402
from pytest_vlmbench.backends.openai_http.body import ImageURLs, build  # noqa: E402
from pytest_vlmbench.run.load import LoadLevel, Outcome, drive  # noqa: E402
from pytest_vlmbench.run.machine_load import CpuTimes, read  # noqa: E402
from pytest_vlmbench.tasks import GenerationParams  # noqa: E402

CLIENT_CORE, SERVER_CORE = 0, 1
GOAL_RPS, GOAL_CPU_MS = 1000.0, 0.5


def pin(pid: int, core: int) -> bool:
    """Pin `pid` (0: this process) to `core` when the machine has it; False otherwise."""
    try:
        os.sched_setaffinity(pid, {core})  # EINVAL: no such core here
    except (AttributeError, OSError):
        return False
    return True


def cpu_ns_of(pid: int) -> int:
    """utime + stime of a process from /proc (ns); 0 where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def others_cpus(before: CpuTimes, after: CpuTimes, also_ours_s: float = 0.0) -> float | None:
    """CPUs' worth used by other processes on this process's CPUs between two readings
    (/proc/stat busy time minus our own, and minus `also_ours_s`: a server we started
    that may share them); None where /proc/stat is unreadable."""
    if before.busy_jiffies is None or after.busy_jiffies is None:
        return None
    busy_s = (after.busy_jiffies - before.busy_jiffies) / os.sysconf("SC_CLK_TCK")
    own_s = after.own_cpu_s - before.own_cpu_s + also_ours_s
    return max(0.0, busy_s - own_s) / ((after.wall_ns - before.wall_ns) / 1e9)


def wait_quiet(limit_s: float, threshold: float = 0.25,
               cpus: frozenset[int] | None = None) -> float:
    """Wait (up to `limit_s`) for a second in which other processes use under
    `threshold` of a CPU on `cpus` (default: those this process may run on): the
    machine is shared. Returns the seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s:
        before = read(cpus=cpus)
        time.sleep(1.0)
        others = others_cpus(before, read(cpus=cpus))
        if others is None or others < threshold:
            break
    return time.perf_counter() - t0


@contextlib.contextmanager
def null_server(chunks: int) -> Iterator[tuple[int, int, bool]]:
    """tools/null_server.py on a free port: yields (port, pid, pinned)."""
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tools" / "null_server.py"), "--chunks", str(chunks)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise SystemExit(f"null server did not start: {line!r}")
        pinned = pin(proc.pid, SERVER_CORE)
        yield int(line.split()[1]), proc.pid, pinned
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass(frozen=True)
class Run:
    """One run of one client at one level."""

    client: str
    streams: int
    requests: int
    wall_ns: int
    cpu_ns: int
    server_cpu_ns: int
    errors: int
    others: float | None  # CPUs' worth other processes used on the client's core

    @property
    def rps(self) -> float:
        return self.requests / (self.wall_ns / 1e9)

    @property
    def cpu_ms(self) -> float:
        return self.cpu_ns / self.requests / 1e6

    @property
    def server_busy(self) -> float:
        return self.server_cpu_ns / self.wall_ns


Driver = Callable[[int, int], tuple[int, int, int]]  # (n, streams) -> wall, cpu, errors


def measured(driver: Driver, client: str, n: int, streams: int, server_pid: int) -> Run:
    server0, before = cpu_ns_of(server_pid), read()
    wall, cpu, errors = driver(n, streams)
    after = read()
    return Run(client, streams, n, wall, cpu, cpu_ns_of(server_pid) - server0, errors,
               others_cpus(before, after))


class Ours:
    """OpenAIModel under the load driver, as a benchmark level runs it."""

    def __init__(self, base_url: str, chunks: int) -> None:
        self.chunks = chunks
        self.model = OpenAIModel(ClientConfig(base_url=base_url, model="null",
                                              dialect="openai", api="chat"))
        self.request = Request(system="", user="Describe the photo.", images=(),
                               params=GenerationParams(max_tokens=chunks), seed=0)

    def body(self) -> bytes:
        made: bytes = build(self.model.config, self.request, ImageURLs())
        return made

    def __call__(self, n: int, streams: int) -> tuple[int, int, int]:
        errors = 0
        chunks = self.chunks

        def on_done(outcome: Outcome) -> None:
            nonlocal errors
            r = outcome.response
            if r is None or r.completion_tokens != chunks or len(r.chunk_ns) != chunks:
                errors += 1

        level = LoadLevel("concurrency", concurrency=streams)
        requests = [self.request] * n
        cpu0, t0 = time.process_time_ns(), time.perf_counter_ns()
        self.model.run_async(drive(self.model, requests, level, on_done))
        wall, cpu = time.perf_counter_ns() - t0, time.process_time_ns() - cpu0
        return wall, cpu, errors

    def close(self) -> None:
        self.model.close()


class Bare:
    """The floor: aiohttp alone, same body and connector, events parsed, nothing timed."""

    def __init__(self, url: str, body: bytes) -> None:
        self.url, self.body = url, body
        self.headers = {"Content-Type": "application/json"}
        self.runner = asyncio.Runner()
        self.session: aiohttp.ClientSession = self.runner.run(self._open())

    async def _open(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=None))

    async def _one(self) -> bool:
        chunks, pending = 0, b""
        async with self.session.post(self.url, data=self.body, headers=self.headers) as r:
            while raw := await r.content.readany():
                events = (pending + raw).split(b"\n\n")
                pending = events.pop()
                for event in events:
                    if event[:6] != b"data: ":
                        continue
                    if event[6:] == b"[DONE]":
                        return r.status == 200 and chunks > 0
                    if orjson.loads(event[6:]).get("choices"):
                        chunks += 1
        return False

    async def _closed_loop(self, n: int, streams: int) -> int:
        pending, errors = iter(range(n)), 0

        async def worker() -> None:
            nonlocal errors
            for _ in pending:
                if not await self._one():
                    errors += 1

        async with asyncio.TaskGroup() as group:
            for _ in range(min(n, streams)):
                group.create_task(worker())
        return errors

    def __call__(self, n: int, streams: int) -> tuple[int, int, int]:
        cpu0, t0 = time.process_time_ns(), time.perf_counter_ns()
        errors = self.runner.run(self._closed_loop(n, streams))
        wall, cpu = time.perf_counter_ns() - t0, time.process_time_ns() - cpu0
        return wall, cpu, errors

    def close(self) -> None:
        self.runner.run(self.session.close())
        self.runner.close()


def profile(ours: Ours, n: int, streams: int, top: int) -> str:
    """cProfile of one run of ours: the functions by own time and by cumulative time."""
    prof = cProfile.Profile()
    prof.enable()
    ours(n, streams)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def _share(value: float | None) -> str:
    return "?" if value is None else f"{value:.0%}"


def report(runs: list[Run], levels: list[int], rounds: int) -> list[str]:
    lines = [f"{'streams':>7}  {'client':<9} {'req/s':>8} {'CPU ms/req':>11} "
             f"{'server core busy':>17}  runs: req/s (others' CPU on the client core)"]
    for streams in levels:
        by = {c: [r for r in runs if r.client == c and r.streams == streams]
              for c in ("ours", "bare")}
        for client, rs in by.items():
            lines.append(
                f"{streams:>7}  {client:<9} {statistics.median(r.rps for r in rs):>8.0f} "
                f"{statistics.median(r.cpu_ms for r in rs):>11.3f} "
                f"{statistics.median(r.server_busy for r in rs):>16.0%}  "
                + " ".join(f"{r.rps:.0f} ({_share(r.others)})" for r in rs)
                + (f"  ERRORS {sum(r.errors for r in rs)}" if any(r.errors for r in rs)
                   else ""))
        rps = [o.rps / b.rps for o, b in zip(by["ours"], by["bare"], strict=True)]
        cpu = [o.cpu_ms / b.cpu_ms for o, b in zip(by["ours"], by["bare"], strict=True)]
        lines.append(f"{streams:>7}  {'ours/bare':<9} {statistics.median(rps):>8.2f} "
                     f"{statistics.median(cpu):>11.2f} {'':>17}  per round: "
                     + " ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(rps, cpu, strict=True))
                     + "  (req/s / CPU)")
    top = max(levels)
    ours_top = [r for r in runs if r.client == "ours" and r.streams == top]
    top_rps = statistics.median(r.rps for r in ours_top)
    top_cpu = statistics.median(r.cpu_ms for r in ours_top)
    lines.append(
        f"goal at {top} streams (issue 12): >= {GOAL_RPS:.0f} req/s: "
        f"{'reached' if top_rps >= GOAL_RPS else 'missed'} ({top_rps:.0f}); < {GOAL_CPU_MS} "
        f"ms client CPU/request: {'reached' if top_cpu < GOAL_CPU_MS else 'missed'} "
        f"({top_cpu:.3f}); "
        f"medians of {rounds} rounds")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="per run (default 3000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", default="1,32", help="levels (default 1,32)")
    parser.add_argument("--chunks", type=int, default=8, help="content chunks per answer")
    parser.add_argument("--warmup", type=int, default=300, help="requests before measuring")
    parser.add_argument("--quiet-wait", type=float, default=20.0,
                        help="seconds to wait at most, before each run, for a second in "
                             "which other processes leave the client's core alone")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="event loop of both clients (uvloop: if importable)")
    parser.add_argument("--profile", action="store_true",
                        help="print a cProfile of ours at the highest level instead")
    args = parser.parse_args()
    levels = [int(s) for s in args.streams.split(",")]
    if args.loop == "uvloop":  # asyncio.Runner() takes its loop from the policy
        uvloop = importlib.import_module("uvloop")
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    client_pinned = pin(0, CLIENT_CORE)
    t_begin = time.perf_counter()
    with null_server(args.chunks) as (port, server_pid, server_pinned):
        base = f"http://127.0.0.1:{port}/v1"
        ours = Ours(base, args.chunks)
        bare = Bare(base + "/chat/completions", ours.body())
        drivers: dict[str, Driver] = {"ours": ours, "bare": bare}
        try:
            for driver in drivers.values():  # connections opened, code paths warm
                driver(args.warmup, max(levels))
            if args.profile:
                print(profile(ours, args.requests, max(levels), 30))
                return
            runs: list[Run] = []
            waited = 0.0
            for round_no in range(args.rounds):
                order = ["ours", "bare"] if round_no % 2 == 0 else ["bare", "ours"]
                for streams in levels:
                    for client in order:
                        waited += wait_quiet(args.quiet_wait)
                        runs.append(measured(drivers[client], client, args.requests,
                                             streams, server_pid))
        finally:
            ours.close()
            bare.close()
    print(f"client overhead: null server ({args.chunks} content chunks + usage + [DONE] per "
          f"streamed answer), {args.requests} requests per run, {args.rounds} rounds "
          f"alternating ours/bare (ABBA); client pinned to core {CLIENT_CORE}: "
          f"{'yes' if client_pinned else 'no'}, server to core {SERVER_CORE}: "
          f"{'yes' if server_pinned else 'no'}; Python {sys.version.split()[0]}, "
          f"aiohttp {aiohttp.__version__}, {args.loop} event loop")
    for line in report(runs, levels, args.rounds):
        print(line)
    print(f"took {time.perf_counter() - t_begin:.1f} s ({waited:.0f} s of it waiting for a "
          "quiet second before runs)")


if __name__ == "__main__":
    main()
