"""Progress lines for long requests, and human durations for ETAs.

A request that runs longer than the tick gets a line every tick with its elapsed time
and the tokens sampled so far, from one daemon thread per benchmark that sleeps on an
Event, so it costs the request nothing measurable.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from pytest_vlmbench.backends import Progress


def duration(seconds: float) -> str:
    """A human ETA: ``<1 s``, ``42 s``, ``3 min 05 s``, ``2 h 10 min``."""
    whole = round(seconds)
    if seconds < 1:
        return "<1 s"
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"



class Ticker:
    """While a request runs, a line every `every_s` seconds: elapsed time and tokens.

    One daemon thread for the whole benchmark (not one per request: the request loop
    stays lean), sleeping on an Event until the watched request's next tick. `watch`
    names the request about to start, `idle` ends it; the line is written under the
    lock `idle` takes, so no line about a request ever follows its result line.
    """

    def __init__(self, every_s: float, write: Callable[[str], None]) -> None:
        self.every_s = every_s
        self.write = write
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._current: tuple[str, Progress, float] | None = None  # label, counter, start
        self._thread = threading.Thread(target=self._loop, name="vlmbench-ticker", daemon=True)

    def start(self) -> None:
        with contextlib.suppress(RuntimeError):  # no thread to be had: run, silently
            self._thread.start()

    def watch(self, label: str, counter: Progress) -> None:
        with self._lock:
            self._current = (label, counter, time.perf_counter())
        self._wake.set()

    def idle(self) -> None:
        with self._lock:
            self._current = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._current = None
        self._wake.set()
        if self._thread.ident is not None:  # it started
            self._thread.join()

    def _loop(self) -> None:
        ticks = 0  # lines written about the watched request
        watched: tuple[str, Progress, float] | None = None
        while True:
            timeout = None if watched is None \
                else watched[2] + (ticks + 1) * self.every_s - time.perf_counter()
            if timeout is None or timeout > 0:
                self._wake.wait(timeout)
            self._wake.clear()
            with self._lock:
                if self._closed:
                    return
                if self._current is not watched:  # another request (or none) now
                    watched, ticks = self._current, 0
                    continue
                if watched is None:
                    continue
                label, counter, started = watched
                elapsed = time.perf_counter() - started
                if elapsed < (ticks + 1) * self.every_s:
                    continue
                ticks += 1
                tokens = counter.tokens
                so_far = f", {tokens} tokens so far" if tokens else ""
                try:
                    self.write(f"{label}: running {elapsed:.1f} s{so_far}")
                except Exception:  # a closed terminal must not end the run: stop ticking
                    return
