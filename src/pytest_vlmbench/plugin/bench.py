"""`vlm_bench.run(task, dataset)`: one benchmark of a test's model, from the arguments
to the results entry, the SLO verdicts and the gate's.

Imported when a test first asks for `vlm_bench` (fixtures.py), with the runner, the
datasets and the tasks it needs.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_vlmbench.backends.native_log import Capture, native_stderr_to
from pytest_vlmbench.datasets import Dataset, DatasetError, ImagePrep, VideoSource
from pytest_vlmbench.errors import UsageMistake
from pytest_vlmbench.metrics.slo import SLOError, breach_message, check_spec, evaluate
from pytest_vlmbench.models.devices import REMOTE
from pytest_vlmbench.plugin import benchmark_bridge
from pytest_vlmbench.plugin.fixtures import session_of
from pytest_vlmbench.results.models import BenchmarkEntry, Record, Summary
from pytest_vlmbench.run import environment
from pytest_vlmbench.run.load import highest_level_met
from pytest_vlmbench.run.runner import BenchmarkPlan, Runner
from pytest_vlmbench.tasks import Task, builtin_tasks
from pytest_vlmbench.tasks.structured import ConstraintError

if TYPE_CHECKING:
    from pytest_vlmbench.plugin.pool import LoadedHandle
    from pytest_vlmbench.plugin.session import VlmSession
    from pytest_vlmbench.run.load import LoadLevel


def _default_samples(dataset: Dataset, samples: int, given: bool) -> int:
    """Measured requests when the test gives no `samples=`: --vlm-samples where it was
    given, else one per scene for a video dataset (its real-time factor needs every
    scene), else the session's default."""
    if given or not isinstance(dataset, VideoSource):
        return samples
    return max(1, sum(1 for _ in dataset.samples()))


class Bench:
    """Runs a task against the test's model: `vlm_bench.run(task, dataset)`.

    Returns the benchmark's results entry (a dict, as written to the results file).
    SLOs from the `vlm_slo` marker and the `slo=` argument are checked afterwards and
    a breach fails the test with one line. Under a load pattern of several levels (a
    sweep: `load=`, `vlm_load`, --vlm-load) each level is its own entry and compare key
    (`<test id>@c4`); the test fails when no level met the SLOs, and the entry returned
    is the highest level that did (else the first).
    """

    def __init__(self, request: pytest.FixtureRequest, handle: LoadedHandle) -> None:
        self._request = request
        self._handle = handle
        self._runs = 0

    def run(
        self,
        task: Task | str | os.PathLike[str],
        dataset: Dataset | None = None,
        *,
        samples: int | None = None,
        warmup: int | None = None,
        slo: Mapping[str, float] | None = None,
        image_size: int | None = None,
        load: str | Mapping[str, Any] | None = None,
        prep: ImagePrep | None = None,
    ) -> BenchmarkEntry:
        request, session = self._request, session_of(self._request.config)
        opts = session.options
        node = request.node
        if isinstance(task, (str, os.PathLike)):
            task = _named_task(task, node.path.parent)
        _check_kinds(task, dataset)
        _check_counts(samples=samples, warmup=warmup, image_size=image_size)
        prep = _chosen_prep(prep, image_size, opts.image_size)
        spec: dict[str, float] = {}
        slo_error: str | None = None
        try:
            for marker in reversed(list(node.iter_markers("vlm_slo"))):
                spec.update(check_spec(marker.kwargs, f"{node.nodeid}: @pytest.mark.vlm_slo"))
            spec.update(check_spec(slo or {}, f"{node.nodeid}: vlm_bench.run(slo=...)"))
        except SLOError as exc:
            slo_error = str(exc)
        slo_error = slo_error or score_slo_problem(task, spec, node.nodeid)
        if slo_error is not None:
            pytest.fail(slo_error, pytrace=False)
        self._runs += 1
        nodeid = _masked_id(node.nodeid)  # a token in a test id stays out
        base_id = nodeid if self._runs == 1 else f"{nodeid}#{task.name}"
        chosen = dataset if dataset is not None else request.getfixturevalue("vlm_dataset")
        from pytest_vlmbench.metrics.video import video_slo_problem

        problem = video_slo_problem(chosen, spec, node.nodeid)
        if problem is not None:
            pytest.fail(problem, pytrace=False)
        if self._handle.case.modality == "text":
            first = next(iter(chosen.samples()), None)
            if first is not None and first.description is None:
                pytest.skip(
                    f"{self._handle.case.model} is a text-only model and dataset "
                    f"{chosen.name!r} has no text descriptions of its images"
                )
        levels = self._levels(load)
        fail_on = [str(rule) for m in node.iter_markers("vlm_fail_on") for rule in m.args]
        if fail_on:
            from pytest_vlmbench.compare import RuleError, parse_rules

            try:
                parse_rules(fail_on)
            except RuleError as exc:
                pytest.fail(f"{node.nodeid}: @pytest.mark.vlm_fail_on: {exc}", pytrace=False)
        bandwidth = session.bandwidth() if self._handle.case.device != REMOTE \
            else (None, "none: the model runs on a server elsewhere")
        done: list[tuple[BenchmarkEntry, list[str]]] = []
        for index, level in enumerate(levels):
            plan = BenchmarkPlan(
                benchmark_id=base_id if level is None or level.pattern == "sequential"
                else f"{base_id}@{level.label}",
                test=nodeid,
                task=task,
                dataset=chosen,
                prep=prep,
                samples=samples or _default_samples(chosen, opts.samples, opts.samples_given),
                # A sweep warms the server once: its later levels follow without a pause.
                warmup=0 if index else (opts.warmup if warmup is None else warmup),
                seed=opts.seed,
                run_id=session.run_id,
                slo=spec,
                bandwidth_gbs=bandwidth[0],
                bandwidth_source=bandwidth[1],
                load=level,
                cold=index == 0,
            )
            done.append(self._run_level(plan, fail_on, session))
        entry = done[0][0] if len(done) == 1 else _mark_sweep(base_id, done)
        session.write_results("running")
        failures = _failures(done)
        if failures:
            pytest.fail("\n".join(failures), pytrace=False)
        return entry

    def _levels(self, load: str | Mapping[str, Any] | None) -> list[LoadLevel | None]:
        """The load levels of this benchmark: `load=` (a --vlm-load string or the marker's
        keywords), else --vlm-load, else the `vlm_load` marker; [None] (sequential, as an
        in-process backend runs) when none is given. --vlm-load applies to the models that
        can be driven so: a concurrency or rate pattern to server-backed models (an
        in-process model runs one request at a time), a batch pattern to engines with
        generate_batch (the others run their benchmark sequentially)."""
        node = self._request.node
        session = session_of(self._request.config)
        marker = node.get_closest_marker("vlm_load")
        if load is None and marker is None and session.options.load is None:
            return [None]
        from pytest_vlmbench.run.load import LoadPatternError, levels_from_marker, parse_load

        try:
            if isinstance(load, str):
                return list(parse_load(load))
            if load is not None:
                return list(levels_from_marker(dict(load)))
            if session.options.load is not None:
                levels = list(parse_load(session.options.load))
                capabilities = self._handle.model.capabilities
                if all(level.pattern == "batch" for level in levels):
                    return list(levels) if capabilities.batch else [None]
                return list(levels) if capabilities.asynchronous else [None]
            assert marker is not None
            return list(levels_from_marker(marker.kwargs))
        except LoadPatternError as exc:
            where = "vlm_bench.run(load=...)" if load is not None else \
                "--vlm-load" if marker is None else "@pytest.mark.vlm_load"
            raise RunArgumentError(f"{node.nodeid}: {where}: {exc}") from None

    def _run_level(self, plan: BenchmarkPlan, fail_on: list[str],
                   session: VlmSession) -> tuple[BenchmarkEntry, list[str]]:
        """One load level (or the one sequential run): its entry, SLO verdicts and gate
        check, and why it fails, if it does ([] when it passes)."""
        request, spec = self._request, plan.slo
        entries: list[BenchmarkEntry] = []

        def sink(entry: BenchmarkEntry) -> None:
            if fail_on:
                entry["fail_on"] = fail_on
            entries.append(entry)
            session.add_benchmark(entry)

        failure = None
        try:
            with native_stderr_to(session.log_path, f"benchmark {plan.benchmark_id}") as native:
                progress = _progress_writer(session, native)
                runner = Runner(
                    self._handle.case, self._handle.model, plan, session.writer, progress,
                    # a meter here measures this machine, not a server elsewhere
                    monitor=None if self._handle.case.device == REMOTE else session.power(),
                )
                runner.run(sink)
        except UsageMistake:
            raise  # a schema nothing satisfies, a dataset with no samples: one line, exit 4
        except (ConstraintError, DatasetError) as exc:
            failure = str(exc)
        if failure is not None:
            pytest.fail(failure, pytrace=False)
        entry = entries[0]
        summary = entry["summary"]
        regression = None
        if session.gate is not None:
            props, regression = session.gate.check(
                session.document("running"), session.results_path, entry, runner.records
            )
            request.node.user_properties.extend(props)
        entry["slo"] = evaluate(spec, summary)
        entry["slo_passed"] = all(v["passed"] for v in entry["slo"]) if spec else None
        session.write_results("running")
        # Every run; pytest-benchmark gets them all when the test returns (plugin.py).
        benchmark_bridge.add_run(request, entry, runner.records)
        suffix = "" if plan.load is None else f"_{plan.load.label}"
        for key in ("requests", "succeeded", "parse_rate", "decode_tokens_per_s"):
            request.node.user_properties.append((f"vlm_{key}{suffix}", summary[key]))
        request.node.user_properties.append(
            (f"vlm_latency_p95_s{suffix}", summary["latency_s"]["p95"]))
        failures = []
        died = getattr(self._handle.model, "server_died", None)
        reason = died() if died is not None else None
        if reason is not None and summary["failed"] and summary["succeeded"]:
            # the managed server died during this benchmark: its figures hold the requests
            # sent before; the rest are error records naming the exit
            failures.append(f"{summary['failed']} of {summary['requests']} requests failed: "
                            f"{reason}")
        if summary["requests"] and not summary["succeeded"]:
            first = next(r["error"] for r in runner.records if r["error"] is not None)
            failures.append(f"all {summary['requests']} requests failed; "
                            f"first: {first['message']}")
        message = breach_message(entry["slo"], summary["requests"])
        invalid = _all_outputs_invalid(summary, runner.records, plan.task)
        failures.extend(m for m in (invalid, message, regression) if m)
        return entry, failures


def score_slo_problem(task: Task, spec: Mapping[str, float], where: str) -> str | None:
    """The task's scorers resolved now, before any request (an unknown scorer name is a
    ScorerError: one line, exit 4), and why an SLO names a score they do not give (it
    would only say "not measured" after the run), or None."""
    from pytest_vlmbench.metrics.registry import slos

    scored: set[str] = set()
    if task.scorers:
        from pytest_vlmbench.scoring import resolve_scorers, specs_of

        scorers = resolve_scorers(task.scorers, text_field=task.text_field)
        scored = {s.name for s in specs_of(scorers)}
    for name in spec:
        metric = slos().get(name)
        if metric is not None and not metric.machine_bound and metric.name not in scored:
            gives = ", ".join(sorted(scored)) or "no scores"
            return (f"{where}: SLO {name}: task {task.name!r} gives no {metric.name} score "
                    f"(its scorers {list(task.scorers)} give: {gives})")
    return None


class RunArgumentError(UsageMistake):
    """A `vlm_bench.run()` argument no benchmark can run with."""


def _named_task(task: str | os.PathLike[str], folder: Path) -> Task:
    """The task `vlm_bench.run()` was given by name: a built-in task's name, or a task
    file (a path ending .toml, relative to the test file's folder)."""
    if isinstance(task, os.PathLike) or (isinstance(task, str) and task.endswith(".toml")):
        path = folder / os.fspath(task)
        if not path.is_file():
            raise RunArgumentError(f"vlm_bench.run: task file {os.fspath(task)!r} not found "
                                   f"(looked in {path})")
        from pytest_vlmbench.tasks.files import load_task

        return load_task(path)
    known = builtin_tasks()
    if task not in known:
        raise RunArgumentError(
            f"vlm_bench.run: unknown task {task!r}; built-in: {', '.join(known)}; or a "
            f"task file: a path ending .toml, relative to the test file"
        )
    return known[task]


def _masked_id(nodeid: str) -> str:
    """The test id with secrets masked; when something was masked, a short digest of the
    original follows, so two ids that differ only in their secrets stay two benchmarks
    (and the same test keeps the same id from run to run, for compare)."""
    masked = environment.redact_text(nodeid)
    if masked == nodeid:
        return nodeid
    return f"{masked}~{hashlib.sha256(nodeid.encode()).hexdigest()[:8]}"


def _check_kinds(task: object, dataset: object) -> None:
    """A path where a dataset belongs, a class where an instance does: one line, not an
    AttributeError from deep inside the runner."""
    if not isinstance(task, Task):
        raise RunArgumentError(
            f"vlm_bench.run: task must be a pytest_vlmbench.tasks.Task or a built-in task "
            f"name, got {type(task).__name__} {task!r:.60}")
    if dataset is None:
        return
    if isinstance(dataset, str | os.PathLike):
        raise RunArgumentError(
            f"vlm_bench.run: dataset {str(dataset)!r} is a path; wrap it: "
            f"FolderDataset({str(dataset)!r})")
    if isinstance(dataset, type) or not all(
            callable(getattr(dataset, name, None)) for name in ("samples", "fingerprint")):
        shown = dataset.__name__ + " (a class; call it)" if isinstance(dataset, type) \
            else type(dataset).__name__
        raise RunArgumentError(
            f"vlm_bench.run: dataset must be a dataset (FolderDataset(...), "
            f"SyntheticScenes(...)), got {shown}")


def _chosen_prep(prep: object, image_size: int | None, default: int) -> ImagePrep:
    """The benchmark's image preparation: ``prep=`` whole (its long edge included), else
    the long edge of ``image_size=`` or --vlm-image-size; both given with different long
    edges is a mistake, not a silent choice."""
    if prep is None:
        return ImagePrep(long_edge=image_size or default)
    if not isinstance(prep, ImagePrep):
        raise RunArgumentError(
            f"vlm_bench.run: prep must be a pytest_vlmbench.datasets.ImagePrep, got "
            f"{type(prep).__name__} {prep!r:.60}")
    if image_size is not None and image_size != prep.long_edge:
        raise RunArgumentError(
            f"vlm_bench.run: image_size={image_size} and prep=ImagePrep(long_edge="
            f"{prep.long_edge}) disagree; give the long edge once (in prep)")
    return prep


def _check_counts(**values: int | None) -> None:
    """`samples=0` used to run the default count (`0 or default`), a negative warm-up
    nothing: each is refused, naming the argument."""
    minimum = {"samples": 1, "warmup": 0, "image_size": 1}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise RunArgumentError(
                f"vlm_bench.run({name}={value!r}): expected a whole number")
        if value < minimum[name]:
            raise RunArgumentError(
                f"vlm_bench.run({name}={value}): must be at least {minimum[name]}")


def _all_outputs_invalid(summary: Summary, records: Sequence[Record],
                         task: Task) -> str | None:
    """One line when the task checks its outputs and not one successful measured
    request gave a valid one (a schema nothing satisfies, a grammar and schema that
    disagree): a parse rate of 0 is a broken benchmark, not a figure."""
    if not task.checks_output or not summary["succeeded"] or summary["parse"]["valid"]:
        return None
    measured = [r for r in records if r["phase"] == "measure" and r["error"] is None]
    first = next((r for r in measured if r["parse"] == "schema_violation"),
                 measured[0] if measured else None)
    detail = (f"; first, {first['sample_id']}: {first['parse']}: {first['parse_detail']}"
              if first else "")
    return (f"task {task.name!r}: none of the {summary['succeeded']} outputs passed its "
            f"output check{detail}")


def _progress_writer(session: VlmSession, native: Capture) -> Any:
    """Per-request lines on the terminal (not captured), unless -q was given; safe to
    call from the runner's progress thread."""
    if session.config.get_verbosity() < 0 \
            or session.config.pluginmanager.get_plugin("terminalreporter") is None:
        return None
    lock = threading.Lock()  # the runner's ticker thread writes too (long requests)

    def write(line: str) -> None:
        with lock:
            session.say(f"    {line}")
            native.reapply()  # resuming pytest's capture took fd 2 back

    return write


def _mark_sweep(base_id: str, done: list[tuple[BenchmarkEntry, list[str]]]) -> BenchmarkEntry:
    """Each level of a sweep learns the sweep's outcome: its levels and the highest (most
    streams, or highest rate) that met every SLO of the benchmark (None without SLOs, or
    when none did). Returns that level's entry, else the first."""
    entries = [entry for entry, _ in done]
    best_label = highest_level_met(entries)
    levels = [e["load"]["label"] for e in entries if "load" in e]
    for entry in entries:
        entry["sweep"] = {"benchmark": base_id, "levels": levels, "best": best_label,
                          "met_slo": entry["slo_passed"] is not False}
    best = [e for e in entries if "load" in e and e["load"]["label"] == best_label]
    return best[0] if best else entries[0]


def _failures(done: list[tuple[BenchmarkEntry, list[str]]]) -> list[str]:
    """Why the test fails: its one level's failures. For a sweep, an SLO breach fails it
    only when no level met the SLOs (a sweep is meant to find the level where they
    break); every other failure of any level (all requests failed, a server that died,
    outputs that never parse, a gated regression) fails it always."""
    if len(done) == 1:
        return done[0][1]
    met = any(entry["slo_passed"] is not False for entry, _ in done)
    return [f"{entry['id']}: {line}" for entry, failures in done for line in failures
            if not (met and line == breach_message(entry["slo"], entry["summary"]["requests"]))]
