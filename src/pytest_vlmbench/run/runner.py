"""The request loop: warm-up, then N measured requests, each recorded as it completes.

The loop is kept lean: the task's constraint and output checker are built once before
it; inside it there is only image preparation (timed separately, outside request
latency), the request, the check and one flushed line of JSON. A failing sample
(corrupt image, backend error) becomes an error record and the loop goes on; Ctrl-C
ends it, and the benchmark is still summarised from what completed.

Progress goes to the `progress` line writer: one line per request with the benchmark's
ETA, and, while a request runs longer than `tick_s`, a line every `tick_s` seconds with
its elapsed time and the tokens sampled so far (from one daemon thread per benchmark
that sleeps on an Event, so it costs the request nothing measurable; the writer must be
thread-safe).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pytest_vlmbench.backends import LoadedModel, Progress, Request
from pytest_vlmbench.datasets import (
    Dataset,
    DatasetArgumentError,
    ImagePrep,
    Sample,
    dataset_hash,
    dataset_label,
    dataset_notes,
)
from pytest_vlmbench.datasets.images import prepare_image
from pytest_vlmbench.metrics.roofline import roofline
from pytest_vlmbench.metrics.summary import stage_warning, summarize, warmup_warning
from pytest_vlmbench.power.monitor import PowerMonitor, Window
from pytest_vlmbench.run import machine_load, memory
from pytest_vlmbench.run.records import RecordWriter
from pytest_vlmbench.tasks import Task
from pytest_vlmbench.tasks.structured import ParseOutcome


@dataclass(frozen=True)
class ModelCase:
    """One cell of the matrix: which model, at which precision, on which device."""

    model: str
    precision: str
    device: str
    backend: str
    modality: str

    @property
    def id(self) -> str:
        return f"{self.model}-{self.precision}-{self.device}"


@dataclass
class BenchmarkPlan:
    """What one benchmark runs; the fixtures fill it from options and markers."""

    benchmark_id: str
    test: str
    task: Task
    dataset: Dataset
    prep: ImagePrep
    samples: int
    warmup: int
    seed: int
    run_id: str
    slo: dict[str, float] = field(default_factory=dict)
    bandwidth_gbs: float | None = None  # peak memory bandwidth, for the roofline
    bandwidth_source: str = "unknown"


def _stream(dataset: Dataset, n: int) -> Iterator[tuple[Sample, int]]:
    """n samples, cycling through the dataset lazily; yields (sample, repetition)."""
    produced = 0
    repetition = 0
    while produced < n:
        before = produced
        for sample in dataset.samples():
            yield sample, repetition
            produced += 1
            if produced >= n:
                return
        if produced == before:  # before any request: a usage mistake, one line
            raise DatasetArgumentError(f"dataset {dataset_label(dataset)!r} yields no samples")
        repetition += 1


def _error(stage: str, exc: BaseException) -> dict[str, str]:
    return {"stage": stage, "type": type(exc).__name__, "message": str(exc) or repr(exc)}


def _duration(seconds: float) -> str:
    """A human ETA: ``<1 s``, ``42 s``, ``3 min 05 s``, ``2 h 10 min``."""
    whole = round(seconds)
    if seconds < 1:
        return "<1 s"
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def repeat_warning(dataset: Dataset, repetitions: list[int], warmups: int) -> str | None:
    """One line when the measured requests went round the dataset more than once.

    Repeating is kept (16 requests over 5 photos is a legitimate choice), but repeated
    samples are not independent measurements, so the benchmark says so; `repetitions`
    are the measured requests' repetition numbers (0: first use, 1: ``#1``...).
    """
    last = max(repetitions, default=0)
    if last == 0:
        return None
    size = repetitions.count(0)  # the measured stream starts at the first sample
    repeated = repetitions.count(1)
    samples = "sample" if size == 1 else "samples"
    warm = f" (+{warmups} warm-up)" if warmups else ""
    times = f" up to {last} times" if last > 1 else ""
    ids = "#1" if last == 1 else f"#1 to #{last}"
    return (f"dataset {dataset_label(dataset)!r} has {size} {samples}; {len(repetitions)} "
            f"measured requests{warm} repeat {repeated} of them{times} (sample ids {ids})")


class _Ticker:
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


class Runner:
    """Runs one benchmark plan against one loaded model and writes its records."""

    def __init__(
        self,
        case: ModelCase,
        model: LoadedModel,
        plan: BenchmarkPlan,
        writer: RecordWriter,
        progress: Callable[[str], None] | None = None,
        monitor: PowerMonitor | None = None,
        tick_s: float | None = 5.0,
    ) -> None:
        """`progress` writes one terminal line (it must be thread-safe: the ticker of a
        long request calls it from another thread); `tick_s` is how long a request runs
        before its first "running" line and between them (None: never)."""
        self.case = case
        self.model = model
        self.plan = plan
        self.writer = writer
        self.progress = progress
        self.monitor = monitor
        self.tick_s = tick_s
        self._ticker: _Ticker | None = None  # while run() runs, with progress and tick_s
        self._window: Window | None = None
        self._cpu_before: machine_load.CpuTimes | None = None
        self.records: list[dict[str, Any]] = []
        self._repetitions: list[int] = []  # of the measured requests, for repeat_warning
        self.input_mode = "image" if case.modality == "vision" else "text"

    def _one(self, seq: int, phase: str, sample: Sample, repetition: int,
             constraint: Any, checker: Any, label: str = "") -> dict[str, Any]:
        plan, case = self.plan, self.case
        record: dict[str, Any] = {
            "run_id": plan.run_id,
            "benchmark": plan.benchmark_id,
            "seq": seq,
            "phase": phase,
            "sample_id": sample.id if repetition == 0 else f"{sample.id}#{repetition}",
            "model": case.model,
            "precision": case.precision,
            "backend": case.backend,
            "device": case.device,
            "task": plan.task.name,
            "t_start_ns": None,
            "t_first_token_ns": None,
            "t_end_ns": None,
            "prepare_ns": None,
            "prompt_tokens": None,
            "completion_tokens": None,
            "finish_reason": None,
            "output": None,
            "parse": ParseOutcome.NO_OUTPUT.value,
            "parse_detail": None,
            "stages_ns": {},
            "counts": {},
            "images": [],
            "error": None,
        }
        images = []
        if self.input_mode == "image":
            t0 = time.perf_counter_ns()
            try:
                prepared = prepare_image(sample, plan.prep)
            except Exception as exc:  # ImageError, or anything Pillow raises: a record
                record.update(prepare_ns=time.perf_counter_ns() - t0,
                              error=_error("prepare", exc))
                return record
            record["prepare_ns"] = time.perf_counter_ns() - t0
            images.append(prepared)
            record["images"] = [{"source": prepared.source, "sha256": prepared.sha256,
                                 "width": prepared.width, "height": prepared.height}]
            user = plan.task.user_text(None)
        else:
            if sample.description is None:
                record["error"] = {
                    "stage": "prepare", "type": "DatasetError",
                    "message": f"{sample.source}: no text description for a text-only model",
                }
                return record
            user = plan.task.user_text(sample.description)
        counter = Progress()
        request = Request(
            system=plan.task.system, user=user, images=images, params=plan.task.params,
            seed=plan.seed, constraint=constraint, progress=counter,
        )
        ticker = self._ticker
        if ticker is not None:
            ticker.watch(label or record["sample_id"], counter)
        t_call = time.perf_counter_ns()
        try:
            response = self.model.generate(request)
        except Exception as exc:  # a failed request is a record, not the end of the run
            # Timed by us from the call to the error: it is in the wall time, the rate's
            # denominator and the energy window (summary.METHODS["failures"]).
            record.update(t_start_ns=t_call, t_end_ns=time.perf_counter_ns(),
                          error=_error("request", exc))
            return record
        finally:
            if ticker is not None:  # idle before the record is written or reported
                ticker.idle()
        check = checker.check(response.text, response.finish_reason)
        record.update(
            t_start_ns=response.t_start_ns,
            t_first_token_ns=response.t_first_token_ns,
            t_end_ns=response.t_end_ns,
            prompt_tokens=response.prompt_tokens,
            completion_tokens=response.completion_tokens,
            finish_reason=response.finish_reason,
            output=response.text,
            parse=check.outcome.value,
            parse_detail=check.detail,
            stages_ns=response.stages_ns,
            counts=response.counts,
        )
        return record

    def _report(self, record: dict[str, Any], index: int, total: int,
                eta_s: float | None = None) -> None:
        if self.progress is None:
            return
        if record["error"] is not None:
            what = f"ERROR ({record['error']['stage']}): {record['error']['message']}"
            if record["t_start_ns"] is not None and record["t_end_ns"] is not None:
                what += f" after {(record['t_end_ns'] - record['t_start_ns']) / 1e9:.3f} s"
        else:
            lat = (record["t_end_ns"] - record["t_start_ns"]) / 1e9
            what = f"{lat:.3f} s, {record['completion_tokens']} tokens, {record['parse']}"
        if eta_s is not None:
            what += f", ETA {_duration(eta_s)}"
        self.progress(f"{record['phase']} {index}/{total} {record['sample_id']}: {what}")

    def run(self, sink: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Run warm-up and measured requests; hand the benchmark entry to `sink` always."""
        plan = self.plan
        started = datetime.now(UTC).isoformat(timespec="seconds")
        status, error = "complete", None
        prompt_version = plan.task.prompt_version(seed=plan.seed, input_mode=self.input_mode)
        data_hash = dataset_hash(plan.dataset, plan.prep)
        warm_latency: list[float | None] = []
        try:
            # The checker first: an unsatisfiable schema is one line of ours, not the
            # grammar converter's complaint about it.
            checker = plan.task.checker()
            constraint = self.model.prepare(plan.task)
            if self.progress is not None and self.tick_s is not None and self.tick_s > 0:
                self._ticker = _Ticker(self.tick_s, self.progress)
                self._ticker.start()
            if self.monitor is not None:  # idle baseline (first time), memory peak reset
                self._window = self.monitor.begin()
            self._cpu_before = machine_load.read()
            seq = 0
            # Seconds per request (prepare + request + check), per phase, for the ETA.
            spent: dict[str, list[float]] = {"warmup": [], "measure": []}
            for phase, count in (("warmup", plan.warmup), ("measure", plan.samples)):
                for i, (sample, rep) in enumerate(_stream(plan.dataset, count), 1):
                    label = f"{phase} {i}/{count} {sample.id}" + (f"#{rep}" if rep else "")
                    t0 = time.perf_counter()
                    record = self._one(seq, phase, sample, rep, constraint, checker, label)
                    self.writer.write(record)
                    self.records.append(record)
                    spent[phase].append(time.perf_counter() - t0)
                    seq += 1
                    if phase == "warmup":
                        warm_latency.append(
                            (record["t_end_ns"] - record["t_start_ns"]) / 1e9
                            if record["error"] is None else None
                        )
                    else:
                        self._repetitions.append(rep)
                    self._report(record, i, count, self._eta(spent, phase, count - i))
        except KeyboardInterrupt:
            status, error = "interrupted", "interrupted by the user (KeyboardInterrupt)"
            raise
        except Exception as exc:
            status, error = "error", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            if self._ticker is not None:
                self._ticker.close()
                self._ticker = None
            entry = self._entry(started, status, error, prompt_version, data_hash, warm_latency)
            try:
                sink(entry)
            except Exception as exc:
                if status == "complete":
                    raise
                # Something (Ctrl-C, an error) is already propagating: do not replace it.
                print(f"pytest-vlmbench: could not record {plan.benchmark_id}: {exc}",
                      file=sys.__stderr__)
        return entry

    def _eta(self, spent: dict[str, list[float]], phase: str, left: int) -> float | None:
        """Seconds until this benchmark ends: requests left x the mean so far (of the
        measured requests once there are some: the cold first warm-up would inflate it)."""
        if phase == "warmup":
            left += self.plan.samples
        if left <= 0:
            return None
        basis = spent["measure"] or spent["warmup"]
        return left * sum(basis) / len(basis)

    def _entry(self, started: str, status: str, error: str | None, prompt_version: str,
               data_hash: str, warm_latency: list[float | None]) -> dict[str, Any]:
        plan, case = self.plan, self.case
        measured = [r for r in self.records if r["phase"] == "measure"]
        summary = summarize(
            self.records, checks_output=plan.task.checks_output,
            load_s=getattr(self.model, "timings_ns", {}).get("load", 0) / 1e9 or None,
            peak_rss=memory.peak_rss_bytes(),
        )
        if self.monitor is not None and self._window is not None:
            summary.update(self.monitor.finish(
                self._window, self.records, vision=self.input_mode == "image",
                interrupted=status == "interrupted",
            ))
        summary["roofline"] = roofline(
            bandwidth_gbs=plan.bandwidth_gbs, bandwidth_source=plan.bandwidth_source,
            bytes_per_token=getattr(self.model, "decode_bytes_per_token", None),
            bytes_source=getattr(self.model, "decode_bytes_source", None),
            achieved_tokens_per_s=summary["decode_tokens_per_s"],
        )
        warnings = dataset_notes(plan.dataset)  # e.g. files a folder dataset skipped
        repeats = repeat_warning(plan.dataset, self._repetitions,
                                 len(self.records) - len(measured))
        if repeats:
            warnings.append(repeats)
        warnings += list(getattr(self.model, "warnings", []))  # e.g. a GPU device on CPU
        machine = (machine_load.assess(self._cpu_before, machine_load.read())
                   if self._cpu_before is not None else None)
        for note in (warmup_warning(self.records), stage_warning(self.records),
                     machine["note"] if machine and machine["busy"] else None):
            if note:
                warnings.append(note)
        if summary["failed"]:
            warnings.append(f"{summary['failed']} of {summary['requests']} requests failed")
        return {
            "id": plan.benchmark_id,
            "run_id": plan.run_id,
            "test": plan.test,
            "model": case.model,
            "backend": case.backend,
            "precision": case.precision,
            "device": case.device,
            "task": plan.task.name,
            "prompt_version": prompt_version,
            "input_mode": self.input_mode,
            "dataset": {
                "name": plan.dataset.name,
                "hash": data_hash,
                "prep": {"long_edge": plan.prep.long_edge, "jpeg_quality": plan.prep.jpeg_quality},
            },
            "samples": plan.samples,
            "warmup": {"requests": plan.warmup, "latency_s": warm_latency},
            "status": status,
            "error": error,
            "summary": summary,
            "slo": [],
            "slo_passed": None,
            "warnings": warnings,
            "records": {"file": self.writer.path.name, "measured": len(measured),
                        "warmup": len(self.records) - len(measured)},
            "settings": dict(getattr(self.model, "settings", {})),
            "machine": machine,
            "started_at": started,
        }
