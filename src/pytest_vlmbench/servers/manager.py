"""Start, probe, share and stop the servers a session's catalog asks for.

One ServerManager per session (the plugin makes it lazily and closes it at session end,
on Ctrl-C and through atexit). `ensure(server, models)` starts a server on a free
loopback port unless a running one already serves what is asked, waits for a real
readiness probe (`ready_timeout_s`, then a ServerError naming the log file and its last
lines), and returns a RunningServer: its address, pid, log, cold start and the /proc
figures of its process tree.

- Each server runs in a session of its own (start_new_session), so that Ctrl-C in the
  terminal reaches pytest, which then stops the whole process group (SIGTERM, 10 s,
  SIGKILL); on Linux a server started from the main thread also gets SIGTERM from the
  kernel if pytest itself dies without cleaning up (PR_SET_PDEATHSIG).
- The cold start is spawn -> first 200 from the probe, polled every 10 ms for the first
  5 s and every 50 ms after (its resolution).
- Its stdout and stderr go to `log_dir/<prefix>.server-<id>.log` beside the results (the
  plugin passes the results file's stem); keys never reach argv, the log or the
  recorded settings.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import http.client
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import IO, Any

from pytest_vlmbench.models.catalog import WeightSource
from pytest_vlmbench.models.endpoints import ServerSpec
from pytest_vlmbench.servers import command, llama_cpp_python, llama_server, vllm_serve
from pytest_vlmbench.servers.base import LOOPBACK, Launch, ManagedModel, ServerError
from pytest_vlmbench.servers.procs import NO_USAGE, ServerUsage, usage

STOP_GRACE_S = 10.0
_PR_SET_PDEATHSIG = 1


def managed_models(server: ServerSpec, resolve: Callable[[WeightSource], Path], *,
                   first: tuple[str, str] | None = None,
                   only: Collection[tuple[str, str]] | None = None) -> list[ManagedModel]:
    """What `server` serves (the catalog's ServerSpec.served), files resolved.

    `resolve` turns a weight source into a file (the caller's models/weights.resolve);
    `first` (model id, precision) goes first, the model the server loads at start;
    `only` restricts the set (a llama-cpp-python server swaps among all it is given).
    """
    out: list[ManagedModel] = []
    for served in server.served:
        key = (served.model_id, served.precision)
        if only is not None and key not in only and key != first:
            continue
        weights = None if served.source.kind == "remote" else resolve(served.source)
        projector = (resolve(served.projector) if served.projector is not None
                     and served.projector.kind != "remote" else None)
        model = ManagedModel(served.model_id, served.precision, served.served_name, weights,
                             projector, served.chat_format, served.modality,
                             served.max_images)
        if key == first:
            out.insert(0, model)
        else:
            out.append(model)
    if first is not None and (not out or out[0].key != first):
        raise ServerError(f"server {server.id!r} serves no model {first[0]!r} at precision "
                          f"{first[1]!r} (its catalog entry's [model.endpoint] must name it)")
    return out


def free_port(host: str = LOOPBACK) -> int:
    """A port nobody listens on now (bound to 0, then released for the server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _log_tail(path: Path, after: int, lines: int = 6, limit: int = 600) -> str:
    """The last lines a server wrote to its log since byte `after`, on one line."""
    try:
        with path.open("rb") as fh:
            fh.seek(after)
            text = fh.read()[-8192:].decode("utf-8", "replace")
    except OSError:
        return "(log unreadable)"
    kept = [line.strip() for line in text.splitlines()
            if line.strip() and not line.startswith("--- ")][-lines:]  # not our own notes
    joined = " | ".join(kept) or "(nothing)"
    return joined if len(joined) <= limit else "..." + joined[-limit:]


def _probe(host: str, port: int, path: str, api_key: str | None,
           timeout: float) -> int | None:
    """GET the probe path; the status, or None when nothing answers (stdlib http.client:
    no proxy variables apply to loopback probes)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _cause(kind: str, path: Path, start: int) -> str:
    """'; cause: ...' where the kind's log names a root cause its last lines hide (vLLM's
    end with "Engine core initialization failed. See root cause above")."""
    reason = vllm_serve.failure_reason(path, start) if kind == "vllm" else None
    return f"; cause: {reason}" if reason else ""


def _signal_name(code: int) -> str:
    try:
        return f" ({signal.Signals(-code).name})"
    except ValueError:
        return ""


class RunningServer:
    """A started server: where it listens, what it serves, and what it costs."""

    def __init__(self, spec: ServerSpec, launch: Launch, proc: subprocess.Popen[bytes],
                 port: int, log_path: Path, log_start: int, spawned_ns: int) -> None:
        self.spec = spec
        self.id = spec.id
        self.kind = spec.kind
        self.host = LOOPBACK
        self.port = port
        self.root_url = f"http://{LOOPBACK}:{port}"
        self.base_url = f"{self.root_url}/v1"
        self.pid = proc.pid
        self.log_path = log_path
        self.start_error: str | None = None  # why it never became ready, when it did not
        self.argv = list(launch.argv)
        self.settings = dict(launch.settings)
        self.models = {m.key: m for m in launch.models}
        self.first = launch.models[0].key
        self.spawned_ns = spawned_ns
        """perf_counter_ns just before the spawn: a caller that read perf_counter_ns
        before ensure() knows whether its call started the server."""
        self.cold_start_ns = 0
        """Spawn -> ready (the first 200 from the readiness probe)."""
        self._proc = proc
        self._log_start = log_start
        self._stopped = False
        self._exit_reason: str | None = None
        self._final_usage = NO_USAGE

    def served_name(self, model_id: str, precision: str) -> str:
        """The model name to send for (model_id, precision)."""
        model = self.models.get((model_id, precision))
        if model is None:
            served = ", ".join(f"{m}/{p}" for m, p in self.models) or "nothing"
            raise ServerError(f"server {self.id!r} does not serve {model_id!r} at "
                              f"{precision!r}; it serves {served}")
        return model.served_name

    def alive(self) -> bool:
        return self._proc.poll() is None

    def exit_reason(self) -> str | None:
        """Why the server is gone (None while it runs), naming its log; said the same
        way every time (its last lines are read once, before a restart appends)."""
        if self._exit_reason is not None:
            return self._exit_reason
        code = self._proc.poll()
        if code is None:
            return None
        if self._stopped:
            return f"server {self.id} (pid {self.pid}) was stopped; log: {self.log_path}"
        self._exit_reason = (
            f"server {self.id} (pid {self.pid}) exited with code {code}{_signal_name(code)}"
            f"{_cause(self.kind, self.log_path, self._log_start)}; "
            f"log: {self.log_path}; last lines: "
            f"{_log_tail(self.log_path, self._log_start, lines=3, limit=300)}")
        return self._exit_reason

    def usage(self) -> ServerUsage:
        """RSS, peak RSS and CPU seconds of the server's process tree now (zeros once
        it has exited)."""
        return usage(self.pid) if self.alive() else NO_USAGE

    def last_usage(self) -> ServerUsage:
        """usage() while it runs; once stopped, the figures read just before the stop."""
        return self.usage() if self.alive() else self._final_usage

    def died_reason(self) -> str | None:
        """exit_reason() for a server that exited on its own; None while it runs or when
        the session stopped it."""
        return None if self._stopped else self.exit_reason()

    def to_json(self) -> dict[str, Any]:
        """What a results document records about the server (no secrets in any field)."""
        return {
            "id": self.id, "kind": self.kind, "pid": self.pid, "base_url": self.base_url,
            "cold_start_s": self.cold_start_ns / 1e9, "log": str(self.log_path),
            "argv": self.argv, "settings": self.settings,
            "served": [m.served_name for m in self.models.values()],
        }

    def _stop(self, grace_s: float) -> None:
        """SIGTERM the process group, SIGKILL it after `grace_s`, reap the process (one
        that had died keeps its own exit reason)."""
        if self._proc.poll() is None:
            self._stopped = True
            self._final_usage = usage(self.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
                self._proc.wait()
        # whatever the leader left behind in its group goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


class ServerManager:
    """The session's managed servers: at most one running per [[server]] id."""

    def __init__(self, log_dir: Path, cache_dir: Path, prefix: str = "") -> None:
        """Logs (and configs without a key) go to `log_dir`, named
        `<prefix>.server-<id>.log` (the results file's stem: one set per run and per
        xdist worker), or `server-<id>[-<worker>].log` without a prefix."""
        self.log_dir = Path(log_dir)
        self.cache_dir = Path(cache_dir)
        self.prefix = prefix
        self._running: dict[str, RunningServer] = {}
        self._started: list[RunningServer] = []
        self._served: dict[str, str] = {}
        self._lock = threading.RLock()
        self._private: Path | None = None
        self._closed = False
        atexit.register(self.close)

    # -- the interface backends use ---------------------------------------------------
    def ensure(self, server: ServerSpec, models: Sequence[ManagedModel]) -> RunningServer:
        """A running, ready `server` serving models[0] (and, for a llama-cpp-python server,
        every one of `models`); started or restarted as needed."""
        if not models:
            raise ServerError(f"server {server.id!r}: no model to serve")
        with self._lock:
            if self._closed:
                raise ServerError(f"server {server.id!r}: the session's servers are closed")
            running = self._running.pop(server.id, None)
            if running is not None:
                if running.alive() and self._fits(running, server, models):
                    self._running[server.id] = running
                    return running
                if running.alive():
                    asked = ", ".join(m.served_name for m in models)
                    self._note(running, f"stopping: asked for {asked}")
                else:
                    self._note(running, f"restarting: {running.exit_reason()}")
                running._stop(STOP_GRACE_S)
                self._served.pop(running.base_url, None)
            wanted = list(models)
            if (running is not None and running.spec == server
                    and server.kind == "llama-cpp-python"):  # keep what it served too
                keys = {m.key for m in wanted}
                wanted += [m for m in running.models.values() if m.key not in keys]
            started = self._start(server, wanted)
            self._running[server.id] = started
            self._served[started.base_url] = started.models[started.first].served_name
            return started

    def history(self) -> list[dict[str, Any]]:
        """Every server this manager started, in start order (the results' `servers`):
        RunningServer.to_json() plus `exit_reason` (why it exited on its own; None while it
        runs or once the session stopped it) and `usage` (its process tree's figures now,
        or the last ones read before the session stopped it)."""
        with self._lock:
            return [{**server.to_json(), "exit_reason": server.died_reason(),
                     "start_error": server.start_error,
                     "usage": None if server.died_reason() else server.last_usage().to_json()}
                    for server in self._started]

    def get(self, server_id: str) -> RunningServer | None:
        """The running server of that id, if any."""
        with self._lock:
            return self._running.get(server_id)

    def note_served(self, base_url: str, served_name: str) -> bool:
        """Record that `served_name` is what `base_url` serves next; True when that is a
        switch (another model before it, or nothing known: an external server's state is
        unknown until we have sent it something)."""
        with self._lock:
            previous = self._served.get(base_url)
            self._served[base_url] = served_name
            return previous != served_name

    def stop(self, server_id: str) -> None:
        """Stop that server (a no-op when none runs)."""
        with self._lock:
            running = self._running.pop(server_id, None)
            if running is not None:
                self._served.pop(running.base_url, None)
                running._stop(STOP_GRACE_S)
                self._note(running, "stopped")

    def close(self) -> None:
        """Stop every server; idempotent (called at session end, on Ctrl-C, at exit)."""
        with self._lock:
            self._closed = True
            for server_id in list(self._running):
                self.stop(server_id)
            if self._private is not None:
                with contextlib.suppress(OSError):
                    for path in self._private.iterdir():
                        path.unlink()
                    self._private.rmdir()
                self._private = None
        atexit.unregister(self.close)

    # -- starting ----------------------------------------------------------------------
    @staticmethod
    def _fits(running: RunningServer, server: ServerSpec,
              models: Sequence[ManagedModel]) -> bool:
        if running.spec != server:
            return False
        if server.kind == "llama-cpp-python":
            return all(m.key in running.models for m in models)
        if server.kind == "command" and not command.per_model(server):
            return True
        return running.first == models[0].key

    def _file(self, server_id: str, suffix: str) -> Path:
        if self.prefix:
            return self.log_dir / f"{self.prefix}.server-{server_id}{suffix}"
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        tail = f"-{worker}" if worker else ""
        return self.log_dir / f"server-{server_id}{tail}{suffix}"

    def _private_dir(self) -> Path:
        if self._private is None:
            self._private = Path(tempfile.mkdtemp(prefix="vlmbench-servers-"))  # 0700
        return self._private

    def _api_key(self, server: ServerSpec) -> str | None:
        if server.api_key_env is None:
            return None
        key = os.environ.get(server.api_key_env)
        if not key:
            raise ServerError(f"server {server.id!r}: its models' [model.endpoint] "
                              f"api_key_env names {server.api_key_env}, which is not set")
        return key

    def _plan(self, server: ServerSpec, models: list[ManagedModel], port: int,
              api_key: str | None) -> Launch:
        if server.kind == "llama-cpp-python":
            config = self._file(server.id, ".config.json")
            if api_key is not None:  # a key: a private file, deleted once the server is ready
                config = self._private_dir() / config.name
            return llama_cpp_python.plan(server, models, host=LOOPBACK, port=port,
                                         config_path=config, cache_dir=self.cache_dir,
                                         api_key=api_key)
        if server.kind == "llama-server":
            return llama_server.plan(server, models, host=LOOPBACK, port=port,
                                     cache_dir=self.cache_dir, api_key=api_key)
        if server.kind == "vllm":
            return vllm_serve.plan(server, models, host=LOOPBACK, port=port,
                                   cache_dir=self.cache_dir, api_key=api_key)
        return command.plan(server, models, host=LOOPBACK, port=port)

    def _start(self, server: ServerSpec, models: list[ManagedModel]) -> RunningServer:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        api_key = self._api_key(server)
        port = free_port()
        launch = self._plan(server, models, port, api_key)
        env = {name: value for name, value in os.environ.items()
               if not _unset(name, launch.unset_env)}
        env.update(server.env)
        env.update(launch.env)
        log_path = self._file(server.id, ".log")
        try:
            with log_path.open("ab") as log:
                log_start = log.tell()
                log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} server {server.id} "
                          f"({server.kind}) on port {port}: {shlex.join(launch.argv)}\n"
                          .encode())
                log.flush()
                spawned_ns = time.perf_counter_ns()
                proc = self._spawn(launch.argv, env, log)
        except OSError as exc:
            self._forget(launch)
            raise ServerError(f"server {server.id!r} ({server.kind}) cannot start "
                              f"{launch.argv[0]}: {exc.strerror or exc}") from None
        running = RunningServer(server, launch, proc, port, log_path, log_start, spawned_ns)
        self._started.append(running)
        try:
            running.cold_start_ns = self._wait_ready(running, launch, api_key) - spawned_ns
            if server.kind == "vllm":  # /health is open: /v1 must list the model (and take the key)
                vllm_serve.check_listed(LOOPBACK, port, running.models[running.first].served_name,
                                        api_key)
        except BaseException as exc:  # not ready, or Ctrl-C while waiting: leave nothing running
            running.start_error = str(exc) or type(exc).__name__
            running._stop(2.0)
            raise
        finally:
            self._forget(launch)
        served = ", ".join(m.served_name for m in running.models.values())
        self._note(running, f"ready after {running.cold_start_ns / 1e9:.3f} s (pid "
                   f"{running.pid}, serving {served})")
        return running

    @staticmethod
    def _spawn(argv: list[str], env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
        on_parent_death = None
        if sys.platform == "linux" and threading.current_thread() is threading.main_thread():
            # The kernel signals the child when the thread that forked it ends: only the
            # main thread lives as long as the session.
            on_parent_death = _pdeathsig
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                preexec_fn=on_parent_death)

    def _wait_ready(self, running: RunningServer, launch: Launch, api_key: str | None) -> int:
        """perf_counter_ns of the first 200 from the probe; ServerError if the process
        exits first or `ready_timeout_s` passes."""
        spec = running.spec
        deadline = running.spawned_ns + int(spec.ready_timeout_s * 1e9)
        status: int | None = None
        while True:
            code = running._proc.poll()
            if code is not None:
                after = (time.perf_counter_ns() - running.spawned_ns) / 1e9
                raise ServerError(
                    f"server {spec.id} ({spec.kind}) exited with code {code}"
                    f"{_signal_name(code)} {after:.1f} s after start, before it was ready"
                    f"{_cause(spec.kind, running.log_path, running._log_start)}; "
                    f"its log: {running.log_path}; last lines: "
                    f"{_log_tail(running.log_path, running._log_start)}")
            now = time.perf_counter_ns()
            left = (deadline - now) / 1e9
            status = _probe(LOOPBACK, running.port, launch.probe_path, api_key,
                            timeout=max(0.05, min(1.0, left)))
            if status == 200:
                return time.perf_counter_ns()
            now = time.perf_counter_ns()
            if now >= deadline:
                last = f"HTTP {status}" if status is not None else "no answer"
                raise ServerError(
                    f"server {spec.id} ({spec.kind}) not ready after {spec.ready_timeout_s:g} s "
                    f"on {running.root_url} (GET {launch.probe_path}: {last}); its log: "
                    f"{running.log_path}; last lines: "
                    f"{_log_tail(running.log_path, running._log_start)}")
            elapsed = (now - running.spawned_ns) / 1e9
            time.sleep(min(0.01 if elapsed < 5 else 0.05, max(0.0, (deadline - now) / 1e9)))

    def _forget(self, launch: Launch) -> None:
        for path in launch.private_files:
            with contextlib.suppress(OSError):
                path.unlink()

    def _note(self, running: RunningServer, text: str) -> None:
        """A line of the plugin's own in the server's log, on a line of its own (a
        server's last output may lack its newline: vLLM's did)."""
        with contextlib.suppress(OSError), running.log_path.open("a+b") as log:
            size = log.seek(0, os.SEEK_END)
            if size:
                log.seek(size - 1)
                fresh = log.read(1) == b"\n"
            else:
                fresh = True
            log.write(("" if fresh else "\n").encode() + (
                f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} server {running.id}: "
                f"{text}\n").encode())


def _unset(name: str, patterns: tuple[str, ...]) -> bool:
    return any(name.startswith(p[:-1]) if p.endswith("*") else name == p for p in patterns)


def _load_prctl() -> Any:
    """libc's prctl, looked up before any fork (a lookup in the child could deadlock)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - not glibc/musl
        return None


_PRCTL = _load_prctl() if sys.platform == "linux" else None


def _pdeathsig() -> None:
    """In the child, before exec: SIGTERM when the parent thread dies."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)
