"""The engine's processes seen from this one: their environment when they start, where
their logs and warnings go, which processes they are, how they are stopped, and why a
start failed.

vLLM's `LLM` starts an engine-core process, which starts a worker per device. They are
spawned (`VLLM_WORKER_MULTIPROC_METHOD=spawn`, set by model.py) and keep the environment
and file descriptors they were started with, so what they need is set for the duration
of the start only (`environment`). Processes are found and stopped through /proc
(Linux; elsewhere none is found and vLLM's own shutdown is all there is).
"""

from __future__ import annotations

import copy
import logging
import os
import re
import signal
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any


@contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """os.environ with `values` set (None: removed) inside the block. The engine's
    processes are started inside it and keep their copy."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def warnings_to_log() -> Iterator[None]:
    """Python warnings raised inside vLLM's and torch's own calls are logged through the
    `vllm` logger (the session log), not raised: under pytest's `-W error` a deprecation
    inside torch (seen: torch.jit.script_method, imported by vLLM's engine start) would
    otherwise fail the load, and it is no fault of the benchmark."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            yield
        finally:
            log = logging.getLogger("vllm")
            for said in caught:
                log.warning("%s:%s: %s: %s", said.filename, said.lineno,
                            said.category.__name__, said.message)


def logging_config(log_path: Path) -> dict[str, Any]:
    """vLLM's own logging dictConfig with its stream handler replaced by the log file."""
    from vllm.logger import DEFAULT_LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(DEFAULT_LOGGING_CONFIG)
    level = os.environ.get("VLLM_LOGGING_LEVEL", "INFO").upper()
    config["handlers"] = {"vllm": {
        "class": "logging.FileHandler", "filename": str(log_path), "mode": "a",
        "encoding": "utf-8", "formatter": "vllm", "level": level}}
    config["loggers"]["vllm"]["level"] = level
    return config


def descendants(pid: int) -> list[int]:
    """Every living process below `pid` (from /proc; empty where there is none)."""
    children: dict[int, list[int]] = {}
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return []
    for name in entries:
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[0] != "Z":  # a zombie is gone but its exit status
            children.setdefault(int(fields[1]), []).append(int(name))
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kids)
    return found


def process_title(pid: int) -> str:
    """The title vLLM gives its processes ("VLLM::EngineCore", "VLLM::Worker_..."), or
    the command line; "" when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return " ".join(part for part in raw.decode("utf-8", "replace").split("\0") if part)[:80]


def engine_processes(before: set[int]) -> dict[int, str]:
    """The processes below this one that were not there `before`, by title; the
    multiprocessing resource tracker that spawn starts once per process (it stays, and
    is no engine's) left out."""
    found = {pid: process_title(pid) for pid in set(descendants(os.getpid())) - before}
    return {pid: title for pid, title in found.items()
            if title and "resource_tracker" not in title}


def stop_processes(processes: Mapping[int, str], grace_s: float) -> list[int]:
    """Wait up to `grace_s` for `processes` to end, then kill the ones still there under
    the same title (a pid the system gave to another process since is left alone).
    Returns the pids killed."""
    deadline = time.monotonic() + grace_s
    while True:
        alive = [pid for pid, title in processes.items() if process_title(pid) == title
                 and _state(pid) not in (None, "Z")]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    for pid in alive:
        with suppress(OSError):  # it ended meanwhile
            os.kill(pid, signal.SIGKILL)
    return alive


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return None


def affinity(pid: int) -> list[int] | None:
    try:
        return sorted(os.sched_getaffinity(pid))
    except (OSError, AttributeError):
        return None


_LOG_PREFIX = re.compile(r"^(?:\([^)]*pid=\d+\) )?(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) "
                         r"\d\d-\d\d \d\d:\d\d:\d\d \[[^\]]*\] ?")
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit)\b:? ?.*")


def engine_reason(exc: BaseException, said: str) -> str:
    """vLLM's first reason line for a failed start: the exception the engine core
    logged ("EngineCore failed to start." and its traceback, in the log), else what
    this process raised (a config vLLM refuses before any process starts)."""
    lines = [_LOG_PREFIX.sub("", line).rstrip() for line in said.splitlines()]
    raised = [line for line in lines if _EXCEPTION_LINE.fullmatch(line)
              and "Engine core initialization failed" not in line]
    if raised:
        return raised[-1]
    text = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # pydantic's ValidationError: "1 validation error for ModelConfig", then the field
    detail = next((line for line in text[1:] if "Value error" in line or "Error" in line), None)
    return f"{type(exc).__name__}: {detail or (text[0] if text else repr(exc))}"
