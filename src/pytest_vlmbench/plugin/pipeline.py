"""`vlm_pipeline.run(stage1, stage2, dataset)`: a two-stage pipeline in one test.

Stage 1 (a catalog model, usually a vision model, and a task) runs over the dataset;
each of its outputs becomes the `description` of a stage-2 sample with the same sample
id, which a second catalog model (usually a text model) answers through its task's
`text_template`. Each stage is an ordinary benchmark of the results document (id
`<pipeline id>::<stage name>`), run by the Runner (driven one request at a time:
Runner.open/request/close), so its figures, SLOs, energy, gate and records mean what
an ordinary benchmark's do. Every record carries `lineage`: its pipeline, stage and
stage name, and at stage 2 the stage-1 record (benchmark, seq, sample id) that fed it.
A stage-1 request that failed still gives a stage-2 record: an error naming the
stage-1 failure, nothing sent (never a silently missing sample). Stage 2 is fed the
stage-1 output's text: the JSON field its task's `text_field` names when the output
parsed as JSON with that field, else the whole output. Warm-ups go through both stages
too: stage 2's warm-ups answer stage 1's warm-ups.

Two modes, because a pipeline must run whether or not both models fit in memory:
- `staged`: one model in memory at a time. Stage 1 runs over every sample (warm-ups,
  then measured), its model is closed, stage 2's is loaded and runs over every stage-1
  record. The session never holds two models (`models_held_max` says 1).
- `together`: both models loaded at once (ModelPool.together); each sample goes through
  stage 1 and then straight into stage 2. Both are closed afterwards. Each stage's
  requests alternate with the other's, so its wall-clock figures (requests/s, its
  energy window, machine load) span both stages' work: said in each entry's warnings.

End to end (document `pipelines[].end_to_end`), per measured lineage where both stages
succeeded: staged, stage-1 latency + stage-2 latency (loads, the model swap and the
handoff are outside it); together, stage-2 t_end - stage-1 t_start (the handoff is
inside it, loads outside). `handoff_s` is stage-2 t_start - stage-1 t_end either way
(staged: it includes waiting for the other samples and the swap).

The stage-2 dataset's fingerprint is its provenance (stage 1's benchmark id, model,
precision, task prompt version, dataset hash, seed and counts), not its outputs' text:
known before stage 1 runs (together mode needs it then), and two runs of the same
pipeline compare as the same benchmark even when a model's words differ.

Imported when a test first asks for `vlm_pipeline` (fixtures.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pytest

from pytest_vlmbench.backends import BackendError, PrecisionUnavailable
from pytest_vlmbench.backends.native_log import native_stderr_to
from pytest_vlmbench.datasets import Dataset, DatasetError, ImagePrep, Sample, dataset_hash
from pytest_vlmbench.errors import UsageMistake
from pytest_vlmbench.metrics.per_request import latency_s
from pytest_vlmbench.metrics.slo import SLOError, breach_message, check_spec, evaluate
from pytest_vlmbench.metrics.stats import distribution
from pytest_vlmbench.models.catalog import CatalogError
from pytest_vlmbench.models.devices import REMOTE
from pytest_vlmbench.pipeline import Stage
from pytest_vlmbench.plugin import benchmark_bridge
from pytest_vlmbench.plugin.bench import (
    RunArgumentError,
    _all_outputs_invalid,
    _check_kinds,
    _default_samples,
    _masked_id,
    _progress_writer,
    score_slo_problem,
)
from pytest_vlmbench.plugin.fixtures import session_of
from pytest_vlmbench.results.models import (
    BenchmarkEntry,
    Lineage,
    Pipeline,
    PipelineStageFigures,
    PipelineVariants,
    Record,
    RecordError,
    Status,
)
from pytest_vlmbench.run.requests import sample_stream
from pytest_vlmbench.run.runner import BenchmarkPlan, ModelCase, Runner
from pytest_vlmbench.tasks import Task, builtin_tasks
from pytest_vlmbench.tasks.structured import ConstraintError

if TYPE_CHECKING:
    from pytest_vlmbench.plugin.session import VlmSession

Mode = Literal["staged", "together"]
MODES: tuple[Mode, ...] = ("staged", "together")

DEFINITIONS: dict[str, str] = {
    "staged": (
        "staged mode (one model in memory at a time: stage 1 over every sample, its model "
        "closed, then stage 2 loaded and run over every stage-1 record): per sample, "
        "stage-1 latency + stage-2 latency (t_end - t_start of each request); the loads, "
        "the model swap and the handoff between the stages are outside it"),
    "together": (
        "together mode (both models loaded at once; each sample goes through stage 1 and "
        "then straight into stage 2): per sample, stage-2 t_end - stage-1 t_start, so the "
        "handoff (recording stage 1's output, building stage 2's request) is inside it; "
        "the loads are outside it"),
}


class PipelineError(UsageMistake):
    """A `vlm_pipeline.run()` argument no pipeline can run with."""


@dataclass
class _Stage:
    """A stage resolved: its task, matrix cell, plan and (once run) records."""

    stage: Stage
    name: str
    task: Task
    case: ModelCase
    spec: dict[str, float]
    plan: BenchmarkPlan | None = None
    runner: Runner | None = None
    entries: list[BenchmarkEntry] = field(default_factory=list)


class VlmPipeline:
    """Runs two-stage pipelines: `vlm_pipeline.run(Stage(...), Stage(...), dataset)`."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        self._runs = 0

    def run(self, first: Stage, second: Stage, dataset: Dataset | None = None, *,
            mode: Mode = "staged", samples: int | None = None, warmup: int | None = None,
            image_size: int | None = None) -> Pipeline:
        """Stage 1 over `dataset` (default: the `vlm_dataset` fixture's), then stage 2
        over stage 1's outputs, in `mode` ("staged" or "together"). `samples` measured
        requests per stage (default --vlm-samples), `warmup` warm-ups (default
        --vlm-warmup), `image_size` the long edge stage 1's images are prepared at.
        Returns the pipeline's entry of the results document (`pipelines[]`); the test
        fails, as `vlm_bench.run` does, when a stage's requests all failed, its SLOs were
        breached or its outputs never passed the task's check."""
        request = self._request
        session = session_of(request.config)
        opts = session.options
        node = request.node
        if mode not in MODES:
            raise PipelineError(f"vlm_pipeline.run: mode must be one of {MODES}, got {mode!r}")
        _check_counts(samples=samples, warmup=warmup, image_size=image_size)
        for stage in (first, second):
            if not isinstance(stage, Stage):
                raise PipelineError(
                    f"vlm_pipeline.run: stages must be pytest_vlmbench.pipeline.Stage, got "
                    f"{type(stage).__name__} {stage!r:.60}")
        one, two = (self._resolve(stage, session) for stage in (first, second))
        if one.name == two.name:
            raise PipelineError(
                f"vlm_pipeline.run: both stages are named {one.name!r}; name one: "
                f"Stage(..., name='...')")
        chosen = dataset if dataset is not None else request.getfixturevalue("vlm_dataset")
        try:
            _check_kinds(one.task, chosen)
        except RunArgumentError as exc:
            raise PipelineError(str(exc).replace("vlm_bench.run", "vlm_pipeline.run", 1)) \
                from None
        if one.case.modality == "text":
            head = next(iter(chosen.samples()), None)
            if head is not None and head.description is None:
                pytest.skip(f"stage 1's model {one.case.model} is a text-only model and "
                            f"dataset {chosen.name!r} has no text descriptions of its images")
        self._runs += 1
        nodeid = _masked_id(node.nodeid)
        pid = nodeid if self._runs == 1 else f"{nodeid}#{self._runs}"
        n = samples or _default_samples(chosen, opts.samples, opts.samples_given)
        w = opts.warmup if warmup is None else warmup
        prep = ImagePrep(long_edge=image_size or opts.image_size)
        one.plan = self._plan(session, one, f"{pid}::{one.name}", nodeid, chosen, prep, n, w)
        outputs = _StageOutputs(one, chosen, prep, opts.seed, n, w)
        outputs.stage2_name = two.name
        two.plan = self._plan(session, two, f"{pid}::{two.name}", nodeid, outputs,
                              ImagePrep(long_edge=prep.long_edge), n, w)
        pool = session.pool
        events_at, held_at = len(pool.events), len(pool.held())
        failure: str | None = None
        try:
            with native_stderr_to(session.log_path, f"pipeline {pid}") as native:
                progress = _progress_writer(session, native)
                if mode == "staged":
                    self._staged(session, one, two, outputs, progress)
                else:
                    self._together(session, one, two, outputs, progress)
        except UsageMistake:
            raise
        except (ConstraintError, DatasetError) as exc:
            failure = str(exc)
        if failure is not None:
            pytest.fail(failure, pytrace=False)
        assert one.runner is not None
        assert two.runner is not None
        entry = _pipeline_entry(
            pid, nodeid, mode, (one, two), n,
            _held_max(pool.events[events_at:], held_at))
        session.pipelines.append(entry)
        failures = [f"{stage.name}: {line}" for stage in (one, two)
                    for line in self._conclude(session, stage)]
        session.write_results("running")
        if failures:
            pytest.fail("\n".join(failures), pytrace=False)
        return entry

    # -- resolving -------------------------------------------------------------------
    def _resolve(self, stage: Stage, session: VlmSession) -> _Stage:
        node = self._request.node
        task = _task_of(stage.task, self._request)
        try:
            spec = check_spec(stage.slo or {}, f"{node.nodeid}: Stage({stage.model!r}, "
                                               f"slo=...)")
        except SLOError as exc:
            raise PipelineError(str(exc)) from None
        problem = score_slo_problem(task, spec, f"{node.nodeid}: Stage({stage.model!r})")
        if problem is not None:
            raise PipelineError(problem)
        return _Stage(stage, stage.label, task, _case_of(stage, session), spec)

    def _plan(self, session: VlmSession, stage: _Stage, benchmark_id: str, test: str,
              dataset: Dataset, prep: ImagePrep, samples: int, warmup: int) -> BenchmarkPlan:
        bandwidth = _bandwidth(session, stage.case)
        return BenchmarkPlan(
            benchmark_id=benchmark_id, test=test, task=stage.task, dataset=dataset,
            prep=prep, samples=samples, warmup=warmup, seed=session.options.seed,
            run_id=session.run_id, slo=stage.spec, bandwidth_gbs=bandwidth[0],
            bandwidth_source=bandwidth[1],
        )

    def _load(self, session: VlmSession, cases: list[ModelCase]) -> list[Any]:
        """The stages' models (one, or two together), as the `vlm_model` fixture loads
        them: a precision this install cannot run skips the test, a failed load fails
        it with one line."""
        pool = session.pool
        try:
            handles = [pool.get(cases[0])] if len(cases) == 1 else pool.together(cases)
        except PrecisionUnavailable as exc:
            pytest.skip(str(exc))
        except BackendError as exc:
            message = str(exc)
        else:
            return [handle.model for handle in handles]
        pytest.fail(message, pytrace=False)

    def _runner(self, session: VlmSession, stage: _Stage, model: Any, progress: Any,
                text: bool) -> Runner:
        assert stage.plan is not None
        runner = Runner(stage.case, model, stage.plan, session.writer, progress,
                        monitor=None if stage.case.device == REMOTE else session.power())
        if text:
            runner.input_mode = "text"  # stage 2 answers stage 1's text, whatever its model
        stage.runner = runner
        return runner

    # -- the two modes -----------------------------------------------------------------
    def _staged(self, session: VlmSession, one: _Stage, two: _Stage,
                outputs: _StageOutputs, progress: Any) -> None:
        (model,) = self._load(session, [one.case])
        first = self._runner(session, one, model, progress, text=False)
        with _opened(first, one, session):
            for phase, items in outputs.phases():
                for index, (sample, rep) in enumerate(items, 1):
                    record = first.request(phase, sample, rep, fields=outputs.lineage1(),
                                           index=index, total=len(items))
                    outputs.add(record, sample)
        (model,) = self._load(session, [two.case])  # the pool closes stage 1's first
        second = self._runner(session, two, model, progress, text=True)
        with _opened(second, two, session):
            fed = outputs.fed
            for phase in ("warmup", "measure"):
                items2 = [pair for pair in fed if pair[0]["phase"] == phase]
                for index, (record, sample) in enumerate(items2, 1):
                    self._second(second, outputs, record, sample, index, len(items2))

    def _together(self, session: VlmSession, one: _Stage, two: _Stage,
                  outputs: _StageOutputs, progress: Any) -> None:
        model1, model2 = self._load(session, [one.case, two.case])
        try:
            first = self._runner(session, one, model1, progress, text=False)
            second = self._runner(session, two, model2, progress, text=True)
            note = ("together mode: this stage's requests alternate with the other "
                    "stage's (both models loaded), so its wall-clock figures (requests/s, "
                    "its energy window, machine load) span both stages' work")
            with _opened(first, one, session, note), _opened(second, two, session, note):
                for phase, items in outputs.phases():
                    for index, (sample, rep) in enumerate(items, 1):
                        record = first.request(phase, sample, rep,
                                               fields=outputs.lineage1(),
                                               index=index, total=len(items))
                        outputs.add(record, sample)
                        self._second(second, outputs, record, sample, index, len(items))
        finally:
            session.pool.release()  # both: the next test loads what it needs

    @staticmethod
    def _second(runner: Runner, outputs: _StageOutputs, record: Record, sample: Sample,
                index: int, total: int) -> Record:
        """Stage 2's request for one stage-1 record (an error record when that failed)."""
        fed, error = outputs.sample2(record, sample)
        return runner.request(record["phase"], fed, 0, fields=outputs.lineage2(record),
                              error=error, index=index, total=total)

    # -- after the run: as vlm_bench.run concludes a benchmark -------------------------
    def _conclude(self, session: VlmSession, stage: _Stage) -> list[str]:
        """The stage entry's SLO verdicts and gate check, pytest-benchmark's run, and
        why the test fails, if it does ([] when it passes)."""
        request = self._request
        assert stage.runner is not None
        assert stage.entries
        entry, records = stage.entries[0], stage.runner.records
        summary = entry["summary"]
        regression = None
        if session.gate is not None:
            props, regression = session.gate.check(
                session.document("running"), session.results_path, entry, records)
            request.node.user_properties.extend(props)
        entry["slo"] = evaluate(stage.spec, summary)
        entry["slo_passed"] = all(v["passed"] for v in entry["slo"]) if stage.spec else None
        benchmark_bridge.add_run(request, entry, records)
        failures = []
        if summary["requests"] and not summary["succeeded"]:
            first = next(r["error"] for r in records if r["error"] is not None)
            failures.append(f"all {summary['requests']} requests failed; "
                            f"first: {first['message']}")
        message = breach_message(entry["slo"], summary["requests"])
        invalid = _all_outputs_invalid(summary, records, stage.task)
        failures.extend(m for m in (invalid, message, regression) if m)
        return failures


class _opened:
    """Open a stage's runner; close it on the way out, the entry recorded (status
    error or interrupted when something propagates), with a pipeline note."""

    def __init__(self, runner: Runner, stage: _Stage, session: VlmSession,
                 note: str | None = None) -> None:
        self.runner, self.stage, self.session, self.note = runner, stage, session, note

    def __enter__(self) -> Runner:
        try:
            self.runner.open()  # a constraint the backend refuses: an entry, status error
        except BaseException as exc:
            self.__exit__(type(exc), exc, None)
            raise
        return self.runner

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        status: Status = "complete"
        error = None
        if isinstance(exc, KeyboardInterrupt):
            status, error = "interrupted", "interrupted by the user (KeyboardInterrupt)"
        elif exc is not None:
            status, error = "error", f"{type(exc).__name__}: {exc}"

        def sink(entry: BenchmarkEntry) -> None:
            if self.note:
                entry["warnings"].append(self.note)
            self.stage.entries.append(entry)
            self.session.add_benchmark(entry)

        self.runner.close(sink, status, error)


class _StageOutputs:
    """Stage 1's records as stage 2's dataset, with their lineage (see the module)."""

    name = "pipeline-stage-outputs"

    def __init__(self, one: _Stage, dataset: Dataset, prep: ImagePrep, seed: int,
                 samples: int, warmup: int) -> None:
        assert one.plan is not None
        self._one, self._prep = one, prep
        self._samples, self._warmup = samples, warmup
        self.label = f"{one.name} outputs"
        input_mode = "image" if one.case.modality == "vision" else "text"
        self._provenance = {
            "from": one.plan.benchmark_id, "model": one.case.model,
            "precision": one.case.precision, "task": one.task.name,
            "prompt_version": one.task.prompt_version(seed=seed, input_mode=input_mode),
            "seed": seed, "samples": samples, "warmup": warmup,
        }
        self.pipeline = one.plan.benchmark_id.rsplit("::", 1)[0]
        self.fed: list[tuple[Record, Sample]] = []  # stage-1 records, with their samples
        self.stage2_name = ""

    # Dataset: the measured stage-1 records so far, as stage-2 samples
    def samples(self) -> Iterator[Sample]:
        for record, sample in self.fed:
            if record["phase"] == "measure":
                yield self.sample2(record, sample)[0]

    @property
    def _dataset(self) -> Dataset:
        """Stage 1's dataset as its runner shows it: a video dataset with layout "auto"
        is adapted to the stage-1 model (Runner: dataset_for_model) once that runner is
        made, and stage 1's samples, their layout and the provenance's hash follow it."""
        assert self._one.plan is not None
        return self._one.plan.dataset

    def fingerprint(self) -> str:
        provenance = {**self._provenance, "dataset": dataset_hash(self._dataset, self._prep)}
        encoded = json.dumps(provenance, sort_keys=True).encode()
        return hashlib.sha256(encoded).hexdigest()

    def phases(self) -> list[tuple[Literal["warmup", "measure"], list[tuple[Sample, int]]]]:
        """Stage 1's warm-up and measured samples, as the Runner would draw them."""
        return [("warmup", list(sample_stream(self._dataset, self._warmup))
                 if self._warmup else []),
                ("measure", list(sample_stream(self._dataset, self._samples)))]

    def add(self, record: Record, sample: Sample) -> None:
        if record["phase"] != "cold":
            self.fed.append((record, sample))

    def sample2(self, record: Record, sample: Sample) -> tuple[Sample, RecordError | None]:
        """The stage-2 sample fed by a stage-1 record (same sample id), and the error its
        stage-2 record carries when that record failed."""
        failed = record["error"]
        fed = Sample(
            id=record["sample_id"], source=f"{record['benchmark']} seq {record['seq']}",
            load_image=None, description=None if failed else _text_of(record, self._one.task),
            truth=sample.truth,
        )
        if failed is None:
            return fed, None
        return fed, {
            "stage": "prepare", "type": "UpstreamStageFailed",
            "message": (f"stage 1 ({self._one.name}) failed for sample {record['sample_id']} "
                        f"({record['benchmark']} seq {record['seq']}), so this stage had no "
                        f"input: {failed['stage']}: {failed['type']}: {failed['message']}"),
        }

    def lineage1(self) -> dict[str, Any]:
        lineage: Lineage = {"pipeline": self.pipeline, "stage": 1,
                            "stage_name": self._one.name, "from": None}
        return {"lineage": lineage}

    def lineage2(self, record: Record) -> dict[str, Any]:
        lineage: Lineage = {
            "pipeline": self.pipeline, "stage": 2, "stage_name": self.stage2_name,
            "from": {"benchmark": record["benchmark"], "seq": record["seq"],
                     "sample_id": record["sample_id"]},
        }
        return {"lineage": lineage}


# -- helpers -------------------------------------------------------------------------
def _check_counts(**values: int | None) -> None:
    minimum = {"samples": 1, "warmup": 0, "image_size": 1}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise PipelineError(f"vlm_pipeline.run({name}={value!r}): expected a whole number")
        if value < minimum[name]:
            raise PipelineError(
                f"vlm_pipeline.run({name}={value}): must be at least {minimum[name]}")


def _task_of(task: Task | str, request: pytest.FixtureRequest) -> Task:
    """A Task, a built-in task's name, or a task file (relative to the test's folder)."""
    if isinstance(task, Task):
        return task
    if isinstance(task, str):
        known = builtin_tasks()
        if task in known:
            return known[task]
        if task.endswith(".toml"):
            from pytest_vlmbench.tasks.files import load_task

            path = request.node.path.parent / task
            return load_task(path if path.is_file() else task)
        raise PipelineError(f"vlm_pipeline.run: unknown task {task!r}; built-in: "
                            f"{', '.join(known)} (or a task file, <name>.toml)")
    raise PipelineError(f"vlm_pipeline.run: a stage's task must be a Task, a built-in task's "
                        f"name or a task file, got {type(task).__name__}")


def _case_of(stage: Stage, session: VlmSession) -> ModelCase:
    """The stage's matrix cell: its catalog model at its precision (default: the first of
    --vlm-precisions, else of the model's run precisions, that the device supports), on
    the session's device (the CPU fallback or `remote` as the matrix labels them). A
    model --vlm-models leaves out, or a precision the model or device lacks, skips the
    test with the reason."""
    from pytest_vlmbench.models import devices

    opts = session.options
    try:
        spec = session.catalog().get(stage.model)
    except CatalogError as exc:
        raise PipelineError(f"vlm_pipeline.run: Stage({stage.model!r}): {exc}") from None
    if opts.models and stage.model not in opts.models:
        pytest.skip(f"--vlm-models leaves out {stage.model}, a model of this pipeline")
    remote = spec.endpoint is not None and spec.endpoint.base_url is not None
    device = devices.remote_profile() if remote else session.device_for(spec.backend)
    if stage.precision is not None:
        precision = stage.precision
        if precision not in spec.precisions:
            raise PipelineError(
                f"vlm_pipeline.run: Stage({stage.model!r}, precision={precision!r}): the "
                f"catalog has {', '.join(spec.precisions)}")
    else:
        wanted = [p for p in (opts.precisions or spec.run_precisions())
                  if p in spec.precisions and (remote or device.supports(p))]
        if not wanted:
            pytest.skip(f"{stage.model}: no precision of it runs on device {device.name}")
        precision = wanted[0]
    if not remote and not device.supports(precision):
        pytest.skip(f"device {device.name} does not support {precision}")
    return ModelCase(stage.model, precision, device.name, spec.backend, spec.modality)


def _bandwidth(session: VlmSession, case: ModelCase) -> tuple[float | None, str]:
    """Peak memory bandwidth for a stage's roofline (as VlmSession.bandwidth, for the
    stage's cell rather than the model held now)."""
    if session.options.bandwidth_gbs is not None:
        return session.options.bandwidth_gbs, "--vlm-bandwidth-gbs"
    if case.device == REMOTE:
        return None, "none: the model runs on a server elsewhere"
    device = session.profile_for(case)
    return device.bandwidth_gbs, f"device profile {device.name} ({device.bandwidth_source})"


def _text_of(record: Record, task: Task) -> str:
    """What stage 2 is fed: the field the stage-1 task's `text_field` names when the
    output parsed as JSON with that (string) field, else the whole output."""
    output = record["output"] or ""
    if task.text_field and record["parse"] == "valid":
        with suppress(ValueError):
            value = json.loads(output)
            if isinstance(value, dict) and isinstance(value.get(task.text_field), str):
                return str(value[task.text_field])
    return output


def _held_max(events: Sequence[tuple[str, str]], held: int) -> int:
    """The most models held at once over the pool's events, from `held` at the start."""
    peak = held
    for kind, _ in events:
        held += 1 if kind == "load" else -1
        peak = max(peak, held)
    return peak


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _figures(records: Sequence[Record]) -> PipelineStageFigures:
    ok = [r for r in records if r["phase"] == "measure" and r["error"] is None]
    return {
        "latency_s": distribution([x for r in ok if (x := latency_s(r)) is not None]),
        "prompt_tokens_mean": _mean([r["prompt_tokens"] for r in ok
                                     if r["prompt_tokens"] is not None]),
        "completion_tokens_mean": _mean([r["completion_tokens"] for r in ok
                                         if r["completion_tokens"] is not None]),
        "response_chars": distribution([len(r["output"] or "") for r in ok]),
    }


def _variants(records: Sequence[Record], task: Task) -> PipelineVariants | None:
    """Strings per stage-2 JSON array (None when its task expects no JSON); an answer
    that is not a JSON array gives 0 variants (as the `variants` scorer reads it) and is
    counted in `not_arrays`, never left out of the mean."""
    if not task.expects_json:
        return None
    counts: list[float] = []
    not_arrays = 0
    for record in records:
        value: Any = None
        with suppress(ValueError):
            value = json.loads(record["output"] or "")
        if isinstance(value, list):
            counts.append(sum(isinstance(item, str) and bool(item.strip()) for item in value))
        else:
            counts.append(0.0)
            not_arrays += 1
    return {"per_request": distribution(counts), "total": int(sum(counts)),
            "not_arrays": not_arrays}


def _pipeline_entry(pid: str, test: str, mode: Mode, stages: tuple[_Stage, _Stage],
                    samples: int, held_max: int) -> Pipeline:
    one, two = stages
    assert one.runner is not None
    assert two.runner is not None
    records1, records2 = one.runner.records, two.runner.records
    by_seq = {r["seq"]: r for r in records1}
    e2e: list[float] = []
    handoff: list[float] = []
    failed = 0
    measured2 = [r for r in records2 if r["phase"] == "measure"]
    for r2 in measured2:
        source = r2["lineage"]["from"]
        r1 = by_seq[source["seq"]] if source is not None else None
        if r1 is None or r1["error"] is not None or r2["error"] is not None:
            failed += 1
            continue
        s1, e1, s2, e2 = r1["t_start_ns"], r1["t_end_ns"], r2["t_start_ns"], r2["t_end_ns"]
        if s1 is None or e1 is None or s2 is None or e2 is None:
            failed += 1
            continue
        e2e.append(((e1 - s1) + (e2 - s2)) / 1e9 if mode == "staged" else (e2 - s1) / 1e9)
        handoff.append((s2 - e1) / 1e9)
    ok2 = [r for r in measured2 if r["error"] is None]
    return {
        "id": pid, "test": test, "mode": mode,
        "stages": [{"name": s.name, "benchmark": s.entries[0]["id"], "model": s.case.model,
                    "precision": s.case.precision, "task": s.task.name} for s in stages],
        "samples": samples,
        "models_held_max": held_max,
        "end_to_end": {"latency_s": distribution(e2e), "handoff_s": distribution(handoff),
                       "n": len(e2e), "failed": failed, "definition": DEFINITIONS[mode]},
        "per_stage": {one.name: _figures(records1), two.name: _figures(records2)},
        "variants": _variants(ok2, two.task),
        "response_chars": distribution([len(r["output"] or "") for r in ok2]),
    }
