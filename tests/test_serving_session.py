"""Whole benchmark sessions against servers (issue 12), end to end: an inner pytest
session runs the real plugin with a catalog whose models are served by managed servers
(llama-cpp-python's server, llama.cpp's llama-server, a command) or sit behind an
external `base_url`, all on loopback with the tiny random GGUF model; each test asserts
on the session's outcome, its terminal lines and the files it wrote.

- a concurrency sweep (marker and --vlm-load): one entry per level, the sweep's verdict,
  goodput, TPOT/ITL, the serving keys of the records; an in-process model stays
  sequential under --vlm-load;
- cold and warm: two models on one swapping server, the request after the switch kept
  apart from the measured figures;
- a server that ignores the constraint (a proxy strips it) and a dialect a server
  refuses: one line each;
- a canary API key written nowhere (results, records, logs, JUnit XML, terminal), and a
  missing key variable named in one line;
- a server killed mid-run, a server that never becomes ready, an endpoint that cannot
  be reached: the records, the line the test fails with, the next test running.

llama-server cases need the binary tools/build_llama_tool.sh builds; they skip, saying
so, where it is absent.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_vlmbench.metrics import per_request
from pytest_vlmbench.results.document import validate_record
from tests.fault_proxy import (
    LLAMA_SERVER,
    Fault,
    FaultProxy,
    LcpServer,
    shared,
    tiny_lcp_models,
    tiny_weights,
)
from tests.serving_catalog import (
    IN_PROCESS,
    Outcome,
    ServingProject,
    files_under,
    make_project,
    model,
    server,
)

needs_llama_server = pytest.mark.skipif(
    not LLAMA_SERVER.is_file(),
    reason=f"llama-server not built at {LLAMA_SERVER}: tools/build_llama_tool.sh "
           "llama-server (CI builds it)")
CANARY = "sk-canary-0123456789abcdefABCDEF0123456789"
KEY_VAR = "VLMBENCH_SERVING_CANARY_KEY"


@pytest.fixture
def project(pytester: pytest.Pytester, model_cache: Path,
            monkeypatch: pytest.MonkeyPatch) -> ServingProject:
    # pytester points HOME at its directory: the inner session would look for the
    # binary under that home
    monkeypatch.setenv("VLMBENCH_LLAMA_SERVER", str(LLAMA_SERVER))
    return make_project(pytester, model_cache)


@pytest.fixture(scope="module")
def lcp(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> LcpServer:
    """A llama-cpp-python server the tests start themselves (an "external" server)."""
    weights = tiny_weights(model_cache)
    started: LcpServer = shared("lcp", lambda: LcpServer(
        tiny_lcp_models(weights), tmp_path_factory.mktemp("lcp")))
    return started


@pytest.fixture
def proxy(lcp: LcpServer) -> Iterator[FaultProxy]:
    p = FaultProxy(f"http://127.0.0.1:{lcp.port}")
    yield p
    p.close()


def one_line(out: Outcome, test: str, starts: str) -> str:
    """The report of `test` (its failure or setup error): checked to be one line, no
    traceback, starting with `starts`."""
    lines = out.failure_lines(test)
    assert len(lines) == 1, "\n".join(lines)
    assert lines[0].startswith(starts), lines[0]
    return lines[0]


def measured(records: list[dict[str, Any]], bench: str) -> list[dict[str, Any]]:
    return [r for r in records if r["benchmark"] == bench and r["phase"] == "measure"]


def overlap(records: list[dict[str, Any]]) -> int:
    """The most requests in flight at one instant."""
    events = sorted([(r["t_start_ns"], 1) for r in records]
                    + [(r["t_end_ns"], -1) for r in records], key=lambda e: (e[0], e[1]))
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


# -- load patterns ------------------------------------------------------------------

SWEEP = """
import pytest
from serving_tasks import CAPTION

@pytest.mark.vlm_load(concurrency=[1, 2])
@pytest.mark.vlm_slo(max_latency_p95_s=60.0, min_success_rate=1.0)
def test_sweep(vlm_bench):
    entry = vlm_bench.run(CAPTION, samples=3, warmup=1)
    assert entry["load"]["label"] == "c2"  # the highest level that met the SLOs
"""


def check_level(entry: dict[str, Any], records: list[dict[str, Any]], label: str,
                base: str) -> None:
    """One level of a sweep: its load block, the sweep's verdict, the serving figures
    recomputed from its records."""
    assert entry["load"]["label"] == label
    assert entry["load"]["concurrency"] == int(label[1:])
    assert entry["sweep"] == {"benchmark": base, "levels": ["c1", "c2"], "best": "c2",
                              "met_slo": True}
    mine = measured(records, entry["id"])
    assert len(mine) == 3
    for r in mine:
        validate_record(r)
        assert r["level"] == label
        assert r["error"] is None
        assert r["scheduled_ns"] <= r["t_start_ns"]
        chunks = r["chunks_ns"]
        assert len(chunks) == r["completion_tokens"] == 8
        assert 0 <= chunks[0] == r["t_first_token_ns"] - r["t_start_ns"]
        assert chunks == sorted(chunks)
        assert chunks[-1] <= r["t_end_ns"] - r["t_start_ns"]
    s = entry["summary"]
    assert s["requests"] == s["succeeded"] == 3
    assert s["tpot_s"]["n"] == 3
    assert math.isclose(s["tpot_s"]["max"], max(per_request.tpot_s(r) or 0 for r in mine))
    assert s["itl_s"]["n"] == 3 * 7
    assert s["client_lag_s"]["n"] == 3
    wall = (max(r["t_end_ns"] for r in mine) - min(r["t_start_ns"] for r in mine)) / 1e9
    assert math.isclose(s["wall_s"], wall)
    assert s["goodput_slo"] == {"e2el_s": 60.0}
    assert s["goodput_rps"] is not None
    assert math.isclose(s["goodput_rps"], 3 / wall)  # every request met 60 s
    assert math.isclose(s["output_tokens_per_s"], 24 / wall)
    assert s["server"]["processes"] >= 1
    assert s["server"]["rss_bytes"] > 0


@pytest.mark.parametrize("kind", [
    "llama-cpp-python", pytest.param("llama-server", marks=needs_llama_server)])
def test_a_concurrency_sweep_gives_one_entry_per_level(project: ServingProject,
                                                       kind: str) -> None:
    settings = "n_ctx = 512, n_threads = 1" + (", n_parallel = 2" if kind == "llama-server"
                                               else "")
    project.catalog(server("srv", kind, settings=settings), model("tiny-srv", 'server = "srv"'))
    project.tests(SWEEP)
    out = project.run()
    out.run.assert_outcomes(passed=1)
    base = "test_bench.py::test_sweep[tiny-srv-fp32-cpu]"
    entries = out.entries()
    assert set(entries) == {f"{base}@c1", f"{base}@c2"}
    records = out.records()
    for label in ("c1", "c2"):
        check_level(entries[f"{base}@{label}"], records, label, base)
    c1, c2 = (measured(records, f"{base}@{label}") for label in ("c1", "c2"))
    assert overlap(c1) == 1
    assert overlap(c2) == 2  # two in flight (llama-cpp-python's server queues them)
    # the warm-up once, before the first level; none before the second
    assert [r["phase"] for r in records] == ["warmup"] + ["measure"] * 6
    assert "level" not in records[0]
    assert entries[f"{base}@c1"]["warmup"]["requests"] == 1
    assert entries[f"{base}@c2"]["warmup"]["requests"] == 0
    sources = {"llama-cpp-python": "counted", "llama-server": "usage"}
    assert entries[f"{base}@c2"]["summary"]["tokens_source"] == {sources[kind]: 3}
    out.run.stdout.fnmatch_lines([
        f"sweep {base}: levels c1, c2; highest meeting the SLOs: c2",
        f"server srv ({kind}) at http://127.0.0.1:*: ready in * s; log: *server-srv.log",
    ])
    doc = out.doc()
    assert [s["id"] for s in doc["servers"]] == ["srv"]


def test_the_load_option_sweeps_server_models_only(project: ServingProject) -> None:
    project.catalog(server("lcp", "llama-cpp-python"), model("tiny-srv", 'server = "lcp"'),
                    IN_PROCESS)
    project.tests("""
from serving_tasks import CAPTION

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION, samples=3, warmup=0)
""")
    out = project.run("--vlm-load=concurrency:1,2")
    out.run.assert_outcomes(passed=2)
    served = "test_bench.py::test_caption[tiny-srv-fp32-cpu]"
    local = "test_bench.py::test_caption[tiny-text-fp32-cpu]"
    entries = out.entries()
    assert set(entries) == {f"{served}@c1", f"{served}@c2", local}
    assert "load" not in entries[local]
    assert "sweep" not in entries[local]
    assert entries[local]["summary"]["goodput_rps"] is None  # no per-request SLO
    records = out.records()
    for label in ("c1", "c2"):
        mine = measured(records, f"{served}@{label}")
        assert [r["level"] for r in mine] == [label] * 3
        assert all("scheduled_ns" in r and r["chunks_ns"] for r in mine)
        sweep = entries[f"{served}@{label}"]["sweep"]
        assert sweep["best"] is None  # no SLO: no level "met" one
        assert sweep["met_slo"] is True  # (nor breached one)
    assert overlap(measured(records, f"{served}@c2")) == 2
    in_process = measured(records, local)
    assert len(in_process) == 3
    assert not [k for r in in_process for k in ("level", "scheduled_ns", "chunks_ns") if k in r]
    assert overlap(in_process) == 1


# -- cold and warm ------------------------------------------------------------------

def test_the_request_after_a_model_switch_is_cold(project: ServingProject) -> None:
    """Two models on one llama-cpp-python server: the first is loaded at start (warm);
    the second makes the server swap, and its first request is the cold phase."""
    project.catalog(server("lcp", "llama-cpp-python"),
                    model("tiny-a", 'server = "lcp"'),
                    model("tiny-b", 'server = "lcp"', weights="generated:llama-tiny@1"))
    project.tests("""
from serving_tasks import CAPTION

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION, samples=3, warmup=1)
""")
    out = project.run()
    out.run.assert_outcomes(passed=2)
    entries = out.entries()
    a = entries["test_bench.py::test_caption[tiny-a-fp32-cpu]"]
    b = entries["test_bench.py::test_caption[tiny-b-fp32-cpu]"]
    records = out.records()
    assert [r["phase"] for r in records if r["benchmark"] == a["id"]] == \
        ["warmup"] + ["measure"] * 3
    mine = [r for r in records if r["benchmark"] == b["id"]]
    assert [r["phase"] for r in mine] == ["cold", "warmup"] + ["measure"] * 3
    cold = mine[0]
    assert cold["error"] is None
    assert "level" not in cold
    cold_latency = per_request.latency_s(cold)
    assert cold_latency is not None
    assert "cold" not in a["summary"]
    s = b["summary"]
    assert s["cold"] == {"requests": 1, "failed": 0, "latency_s": cold_latency,
                         "ttft_s": per_request.ttft_s(cold)}
    assert b["records"] == {"file": "results.records.jsonl", "measured": 3, "warmup": 1,
                            "cold": 1}
    warm = [x for r in mine[2:] if (x := per_request.latency_s(r)) is not None]
    assert s["requests"] == s["latency_s"]["n"] == len(warm) == 3
    assert cold_latency not in warm
    assert math.isclose(s["latency_s"]["mean"], sum(warm) / 3)
    assert (s["latency_s"]["min"], s["latency_s"]["max"]) == (min(warm), max(warm))
    assert b["warmup"]["latency_s"] == [per_request.latency_s(mine[1])]
    assert s["itl_s"]["n"] == sum(len(r["chunks_ns"]) - 1 for r in mine[2:])
    # one server for both models, started once
    assert [srv["id"] for srv in out.doc()["servers"]] == ["lcp"]
    assert a["settings"]["server_pid"] == b["settings"]["server_pid"]
    assert a["settings"]["server_started"] is True
    assert b["settings"]["server_started"] is False
    out.run.stdout.fnmatch_lines(["*cold 1/1 *", "*cold s*"])


# -- constraints --------------------------------------------------------------------

CONSTRAINED = """
from serving_tasks import YES_NO

def test_stripped(vlm_bench):
    vlm_bench.run(YES_NO, samples=2, warmup=1)

def test_kept(vlm_bench):
    vlm_bench.run(YES_NO, samples=2, warmup=0)
"""


def test_a_constraint_the_server_ignored_is_said(project: ServingProject,
                                                 proxy: FaultProxy) -> None:
    """The proxy drops the constraint from the first test's three requests: the server
    answers 200 with free text, ended by the server itself. Those outputs are
    `constraint_ignored`, the benchmark warns, the test fails with one line; the second
    test's requests keep their constraint and every output is valid."""
    project.catalog(model("tiny-ext", f'base_url = "{proxy.base_url}"\n'
                          'dialect = "llama-cpp-python"', weights="remote:tiny"))
    project.tests(CONSTRAINED)
    proxy.arm(Fault("strip", times=3))
    out = project.run()
    out.run.assert_outcomes(passed=1, failed=1)
    assert len(proxy.received) == 5
    assert all("response_format" in body for body in proxy.received)
    assert [("response_format" in body) for body in proxy.forwarded] == [False] * 3 + [True] * 2
    entries = out.entries()
    stripped = entries["test_bench.py::test_stripped[tiny-ext-fp32-remote]"]
    kept = entries["test_bench.py::test_kept[tiny-ext-fp32-remote]"]
    records = out.records()
    ignored = [r for r in records if r["benchmark"] == stripped["id"]]
    assert [r["parse"] for r in ignored] == ["constraint_ignored"] * 3
    for r in ignored:
        assert r["finish_reason"] == "stop"
        assert r["counts"] == {"constrained": 1}
        assert "the server ignored the schema constraint" in r["parse_detail"]
    s = stripped["summary"]
    assert s["parse"]["constraint_ignored"] == 2
    assert s["parse_rate"] == 0.0
    assert ("the server ignored the constraint in 2 of 2 requests (dialect llama-cpp-python); "
            "check [model.endpoint] dialect") in stripped["warnings"]
    line = one_line(out, "test_stripped[tiny-ext-fp32-remote]", "task 'yes_no'")
    assert line.startswith("task 'yes_no': none of the 2 outputs passed its output check; "
                           "first, ")
    assert ": constraint_ignored: the server ignored the schema constraint" in line
    assert kept["summary"]["parse_rate"] == 1.0
    assert "constraint_ignored" not in kept["summary"]["parse"]
    # an external server that does not swap (the default) has no cold request
    assert [r["phase"] for r in records] == ["warmup"] + ["measure"] * 4


def test_a_dialect_the_server_refuses_is_one_line(project: ServingProject,
                                                  lcp: LcpServer) -> None:
    """vLLM's `response_format: json_schema` sent to llama-cpp-python's server, which
    accepts only `json_object` (it answers 500 to a body it cannot validate)."""
    project.catalog(model("tiny-vllm", f'base_url = "{lcp.base_url}"\ndialect = "vllm"',
                          weights="remote:tiny"))
    project.tests("""
from serving_tasks import YES_NO

def test_yes_no(vlm_bench):
    vlm_bench.run(YES_NO, samples=3, warmup=1)
""")
    out = project.run()
    out.run.assert_outcomes(failed=1)
    line = one_line(out, "test_yes_no[tiny-vllm-fp32-remote]", "server ")
    assert line.startswith(f"server {lcp.base_url}/chat/completions (dialect vllm) rejected "
                           "the constraint (500): ")
    assert line.endswith("; check [model.endpoint] dialect")
    assert "'input': 'json_schema'" in line
    assert 'File "' not in line  # the server's words, without its source lines
    records = out.records()
    assert len(records) == 1  # the first request ends the benchmark
    assert records[0]["error"]["type"] == "ConstraintRejected"
    assert records[0]["retries"] == 0
    (entry,) = out.doc()["benchmarks"]
    assert entry["status"] == "error"


# -- the API key --------------------------------------------------------------------

KEYED = """
import urllib.error, urllib.request
from serving_tasks import CAPTION

def test_caption(vlm_bench, vlm_model):
    base_url = vlm_model.model.settings["base_url"]
    try:  # the server really wants the key
        urllib.request.urlopen(base_url + "/models", timeout=10)
        status = 200
    except urllib.error.HTTPError as exc:
        status = exc.code
    assert status == 401
    vlm_bench.run(CAPTION, samples=2, warmup=1)
"""


def keyed_catalog(project: ServingProject) -> None:
    project.catalog(server("lcp", "llama-cpp-python"),
                    model("tiny-keyed", f'server = "lcp"\napi_key_env = "{KEY_VAR}"'))
    project.tests(KEYED)


def test_a_canary_key_is_written_nowhere(project: ServingProject, model_cache: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VAR, CANARY)
    keyed_catalog(project)
    junit = project.pytester.path / "out" / "junit.xml"
    out = project.run(f"--junitxml={junit}", "-rA")
    out.run.assert_outcomes(passed=1)
    written = files_under(project.pytester.path)
    names = {p.name for p in written}
    assert {"results.json", "results.records.jsonl", "junit.xml", "results.server-lcp.log",
            } <= names, names
    assert "vlm_latency_p95_s" in written[junit]  # the benchmark's properties are there
    assert KEY_VAR in written[out.out]  # the variable's name is recorded
    seen = {**written, **files_under(model_cache), Path("terminal"): out.text()}
    for path, text in seen.items():
        for piece in (CANARY, CANARY[:16], CANARY[-16:]):
            assert piece not in text, f"{piece!r} in {path}"


def test_a_missing_key_variable_is_one_line(project: ServingProject,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_VAR, raising=False)
    keyed_catalog(project)
    out = project.run()
    out.run.assert_outcomes(errors=1)
    assert one_line(out, "test_caption[tiny-keyed-fp32-cpu]", "model") == (
        f"model 'tiny-keyed': its [model.endpoint] api_key_env names {KEY_VAR}, which is "
        f"not set in the environment (export {KEY_VAR}=...)")
    assert not out.records_path.exists()
    assert "servers" not in out.doc()  # refused before any server started


# -- faults -------------------------------------------------------------------------

DIES = """
import os, signal, threading, time
from pathlib import Path
from serving_tasks import CAPTION, LONG_CAPTION

RECORDS = Path({records!r})

def kill_after_first_measured(pid):
    while True:
        text = RECORDS.read_text() if RECORDS.exists() else ""
        if '"phase": "measure"' in text or '"phase":"measure"' in text:
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.002)

def test_dies(vlm_bench, vlm_model):
    pid = vlm_model.model.settings["server_pid"]
    killer = threading.Thread(target=kill_after_first_measured, args=(pid,), daemon=True)
    killer.start()
    vlm_bench.run(LONG_CAPTION, samples=5, warmup=0)

def test_after(vlm_bench):
    vlm_bench.run(CAPTION, samples=2, warmup=0)
"""


def test_a_server_killed_mid_run(project: ServingProject) -> None:
    project.catalog(server("lcp", "llama-cpp-python"), model("tiny-srv", 'server = "lcp"'))
    records_path = project.pytester.path / "out" / "results.records.jsonl"
    project.tests(DIES.replace("{records!r}", repr(str(records_path))))
    out = project.run()
    records = out.records()
    dies = [r for r in records if "test_dies" in r["benchmark"]]
    after = [r for r in records if "test_after" in r["benchmark"]]
    assert len(dies) == 5  # every request has its record
    assert dies[0]["error"] is None
    assert dies[0]["completion_tokens"] == 120
    failed = [r for r in dies if r["error"] is not None]
    assert len(failed) >= 3
    assert dies[5 - len(failed):] == failed  # once dead, every later request failed
    log = out.out.with_name("results.server-lcp.log")
    for r in failed + after:
        message = r["error"]["message"]
        assert message.startswith("server lcp (pid ")
        assert f"exited with code -9 (SIGKILL); log: {log}" in message
        assert r["retries"] == 0
    assert len(after) == 2
    out.run.assert_outcomes(failed=2)
    reason = failed[0]["error"]["message"]
    assert one_line(out, "test_dies[tiny-srv-fp32-cpu]", "") == \
        f"{len(failed)} of 5 requests failed: {reason}"
    assert one_line(out, "test_after[tiny-srv-fp32-cpu]", "") == \
        f"all 2 requests failed; first: {reason}"
    out.run.stdout.fnmatch_lines(["server lcp died during the run: server lcp (pid *) exited "
                                  "with code -9 (SIGKILL)*"])
    (srv,) = out.doc()["servers"]
    assert "exited with code -9" in srv["exit_reason"]


def test_a_server_that_never_becomes_ready(project: ServingProject) -> None:
    marker = f"never-ready-{os.getpid()}"
    argv = json.dumps([sys.executable, "-c", "import time; time.sleep(60)", "{port}", marker])
    project.catalog(
        server("slow", "command", settings="",
               extra=f"command = {argv}\nready_timeout_s = 2.0"),
        model("tiny-slow", 'server = "slow"\ndialect = "openai"', weights="remote:slow"),
        IN_PROCESS)
    project.tests("""
from serving_tasks import CAPTION

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION, samples=1, warmup=0)
""")
    out = project.run()
    out.run.assert_outcomes(passed=1, errors=1)
    log = out.out.with_name("results.server-slow.log")
    assert log.is_file()
    line = one_line(out, "test_caption[tiny-slow-fp32-cpu]", "server slow (command) ")
    assert re.fullmatch(r"server slow \(command\) not ready after 2 s on http://127\.0\.0\.1:"
                        rf"\d+ \(GET /v1/models: no answer\); its log: {re.escape(str(log))};"
                        r" last lines: .*", line), line
    out.run.stdout.fnmatch_lines(["server slow (command) at http://127.0.0.1:*/v1: never "
                                  "became ready; log: *results.server-slow.log"])
    assert set(out.entries()) == {"test_bench.py::test_caption[tiny-text-fp32-cpu]"}
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit()
                and _cmdline_has(p, marker)]


def _cmdline_has(proc: Path, marker: str) -> bool:
    try:
        return marker.encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False


def test_an_endpoint_that_cannot_be_reached_is_one_line(project: ServingProject) -> None:
    project.catalog(
        model("refused", 'base_url = "http://127.0.0.1:9/v1"\ndialect = "openai"\nretries = 0',
              weights="remote:m"),
        model("nowhere", 'base_url = "http://no-such-host.invalid:8080/v1"\n'
                         'dialect = "openai"', weights="remote:m"))
    project.tests("""
from serving_tasks import CAPTION

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION, samples=1, warmup=0)
""")
    out = project.run()
    out.run.assert_outcomes(errors=2)
    assert one_line(out, "test_caption[refused-fp32-remote]", "cannot reach ") == \
        "cannot reach http://127.0.0.1:9/v1: connection failed (Connect call failed " \
        "('127.0.0.1', 9))"
    assert one_line(out, "test_caption[nowhere-fp32-remote]", "cannot reach ").startswith(
        "cannot reach http://no-such-host.invalid:8080/v1: name resolution failed (")
    assert out.doc()["benchmarks"] == []
