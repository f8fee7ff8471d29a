"""Typed read models of the results document and its records.

The JSON Schema (schema/results.schema.json) is the authority on disk: documents and
records are validated against it on write and on load (document.py). These TypedDicts
are the read models the code reads through, so mypy --strict checks every field
access. A key the schema lists in `required` is a plain key here, any other key is
NotRequired; a nullable schema type is `X | None`; where the schema allows any object
the model says dict[str, Any]. tests/test_read_models.py proves the two agree: the
keys and required keys of every model against the schema, and a real run's document
against both.

No `from __future__ import annotations` here: Python 3.11 TypedDict sees
NotRequired only in evaluated annotations (string ones make every key required).
"""

from typing import Any, Literal, NotRequired, TypedDict

Phase = Literal["cold", "warmup", "measure"]
ParseOutcome = Literal[
    "valid", "invalid_json", "schema_violation", "truncated", "not_checked", "no_output",
    "constraint_ignored",
]
ErrorStage = Literal["prepare", "request", "check"]
Status = Literal["complete", "interrupted", "error"]
RunStatus = Literal["running", "complete", "interrupted"]
WorkerStatus = Literal["complete", "interrupted", "failed", "lost"]
InputMode = Literal["image", "text"]


class RecordError(TypedDict):
    """Why a request failed: the record's `error` when it is not null."""

    stage: ErrorStage
    type: str
    message: str


class ImageRef(TypedDict):
    """One image a request sent (record `images[]`)."""

    source: str
    sha256: str
    width: int
    height: int


class SceneRef(TypedDict):
    """The video scene a request showed (record `scene`; datasets/video.py): the video's
    id, the scene's 0-based index, its span in seconds of the video (end exclusive), the
    times of the frames sampled from it and how they were laid out."""

    video: str
    index: int
    start_s: float
    end_s: float
    duration_s: float
    frames_s: list[float]
    layout: Literal["images", "panorama", "grid", "middle"]


class LineageSource(TypedDict):
    """The stage-1 record that fed a stage-2 record (record `lineage.from`)."""

    benchmark: str
    seq: int
    sample_id: str


# A two-stage pipeline's record (plugin/pipeline.py): its pipeline, stage (1 or 2) and
# stage name, and the stage-1 record that fed it (`from`, None at stage 1). The
# functional form, because `from` is a keyword.
Lineage = TypedDict("Lineage", {
    "pipeline": str, "stage": int, "stage_name": str, "from": LineageSource | None,
})


class Record(TypedDict):
    """One request: a line of the records file ($defs/record)."""

    run_id: str
    benchmark: str
    seq: int
    phase: Phase
    sample_id: str
    model: str
    precision: str
    backend: str
    device: str
    task: str
    t_start_ns: int | None
    t_first_token_ns: int | None
    t_end_ns: int | None
    prepare_ns: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None
    output: str | None
    parse: ParseOutcome
    parse_detail: str | None
    stages_ns: dict[str, int]
    counts: dict[str, int]
    images: list[ImageRef]
    error: RecordError | None
    chunks_ns: NotRequired[list[int]]
    scheduled_ns: NotRequired[int | None]
    level: NotRequired[str | None]
    retries: NotRequired[int]
    rate_limited: NotRequired[int]
    retry_reasons: NotRequired[list[str]]
    tokens_source: NotRequired[Literal["usage", "counted", "engine", None]]
    ttft_source: NotRequired[Literal["stream", "engine"]]
    batch: NotRequired[int]
    batch_ns: NotRequired[list[int]]
    scores: NotRequired[dict[str, float | None]]
    chance: NotRequired[dict[str, float]]
    read_as: NotRequired[Any]
    lineage: NotRequired[Lineage]
    scene: NotRequired[SceneRef]


class Distribution(TypedDict):
    """n, mean, percentiles, stdev and CV of a metric ($defs/distribution;
    metrics/stats.py distribution() makes it): all but n are None when n is 0."""

    n: int
    mean: float | None
    median: float | None
    min: float | None
    max: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    stdev: float | None
    cv: float | None


class BatchFigure(TypedDict):
    """One batch of an offline-throughput level (metrics/throughput.py)."""

    batch: int
    requests: int
    succeeded: int
    wall_s: float
    requests_per_s: float
    output_tokens_per_s: float | None


class ThroughputSummary(TypedDict):
    """summary.throughput of a batch level: each batch's figures and their statistics
    over the full batches (metrics/throughput.py)."""

    batch_size: int
    batches: int
    partial_batches: int
    requests_per_s: Distribution
    output_tokens_per_s: Distribution
    per_batch: list[BatchFigure]
    method: str


EnergySummary = dict[str, Any]
"""summary.energy: the schema allows any object (or null when there was no meter)."""
MemorySummary = dict[str, Any]
"""summary.memory: the schema allows any object."""
RooflineSummary = dict[str, Any]
"""summary.roofline: the schema allows any object."""


class MetricFigure(TypedDict):
    """summary.metrics[name]: a figure of a metric declared outside the package
    (metrics/registry.py)."""

    value: float | None
    unit: str
    statistic: Literal["median", "mean", "p90", "p95", "p99"]
    n: int
    absent_reason: str | None


class ColdSummary(TypedDict):
    """summary.cold: the request(s) sent as phase "cold", first after the server loaded
    or swapped the model; latency and TTFT are means over the successful ones."""

    requests: int
    failed: int
    latency_s: float | None
    ttft_s: float | None


class ServerSummary(TypedDict):
    """summary.server: the managed server's process tree over the measured requests."""

    rss_bytes: int | None
    rss_peak_bytes: int | None
    cpu_s: float | None
    cpu_s_per_request: float | None
    processes: int | None
    absent_reason: str | None


class ScoreFigure(TypedDict):
    """One score over a benchmark."""

    mean: float | None
    n: int
    not_applicable: int
    failed: int
    errors: int  # successful requests whose scorer raised: no score, read_as[scorer]["error"]
    chance: float | None
    unit: str
    higher_is_better: bool
    kind: Literal["accuracy", "error", "length", "value"]
    description: str


class RepeatedGroup(TypedDict):
    """One text given for several different samples."""

    text: str
    samples: list[str]


class TextSummary(TypedDict):
    """The benchmark's texts together: length, diversity, repeats."""

    field: str
    n: int
    chars_mean: float | None
    words_mean: float | None
    distinct_1: float | None
    distinct_2: float | None
    repeated_outputs: int
    repeated_groups: list[RepeatedGroup]


class Histogram(TypedDict):
    """A value score (a 1-10 rating) over a benchmark: how decisive the model is."""

    bins: dict[str, int]
    n: int
    out_of_range: int  # values outside 1..10 once rounded: in n and mean, in no bin
    mean: float | None
    top_share: float | None
    mode_share: float | None


class QualitySummary(TypedDict):
    """``summary.quality``. ``text`` is None when the task has no ``text`` scorer."""

    scorers: list[str]
    scores: dict[str, ScoreFigure]
    text: TextSummary | None
    histograms: dict[str, Histogram]


class AgreementSide(TypedDict):
    """One benchmark of an agreement."""


    benchmark: str
    model: str
    precision: str


class Agreement(TypedDict):
    """Two benchmarks' agreement on one value score."""

    task: str
    dataset: str
    score: str
    a: AgreementSide
    b: AgreementSide
    n: int
    kendall_tau_b: float | None
    kendall_absent_reason: str | None
    top_k: dict[str, float]


class _VideoSeconds(TypedDict):
    """The timed figures a video and a benchmark over videos both report
    (metrics/video.py METHODS["video"])."""

    vlm_s: float | None
    seconds_per_scene: float | None
    real_time_factor: float | None
    detection_s: float | None
    extraction_s: float | None
    prepare_s: float | None
    pipeline_s: float | None
    pipeline_real_time_factor: float | None
    absent_reason: str | None


class VideoFigures(_VideoSeconds):
    """One video of a benchmark over video scenes (summary.video.videos[],
    metrics/video.py METHODS["video"]): its scenes, what was measured, the VLM's seconds
    per scene and real-time factor, and the whole pipeline's (detection, extraction and
    preparation added). The request figures are None, with absent_reason, when the video
    could not be decoded, only some scenes were measured, or a scene was never sent."""

    id: str
    duration_s: float | None
    scenes: int
    scenes_measured: int
    failed_requests: int
    frames_per_scene: float | None


class VideoSummary(_VideoSeconds):
    """summary.video: each video's figures, and the benchmark's over the videos whose
    request figures are complete (`videos_complete` of them; None with absent_reason
    when none is)."""

    videos: list[VideoFigures]
    videos_complete: int
    duration_s: float | None
    scenes: int | None
    scenes_measured: int | None
    failed_requests: int | None
    frames_per_scene: float | None


class Summary(TypedDict):
    """A benchmark's figures, computed from its measured records ($defs/summary)."""

    requests: int
    succeeded: int
    failed: int
    success_rate: float | None
    latency_s: Distribution
    ttft_s: Distribution
    decode_tokens_per_s: float | None
    stream_tokens_per_s_per_request: Distribution
    requests_per_s: float | None
    wall_s: float | None
    parse: dict[str, int]
    parse_rate: float | None
    prompt_tokens_mean: float | None
    completion_tokens_mean: float | None
    output_chars_mean: float | None
    stages_s: dict[str, Distribution]
    peak_rss_bytes: int | None
    load_s: float | None
    decode_source: Literal["engine", "stream"]
    stream_tokens_per_s: float | None
    energy: NotRequired[EnergySummary | None]
    memory: NotRequired[MemorySummary]
    roofline: NotRequired[RooflineSummary]
    prompt_tokens_per_s: NotRequired[float | None]
    latency_failed_s: NotRequired[Distribution]
    metrics: NotRequired[dict[str, MetricFigure]]
    tpot_s: NotRequired[Distribution]
    itl_s: NotRequired[Distribution]
    client_lag_s: NotRequired[Distribution]
    output_tokens_per_s: NotRequired[float | None]
    goodput_rps: NotRequired[float | None]
    goodput_slo: NotRequired[dict[str, float]]
    goodput_absent_reason: NotRequired[str | None]
    cold: NotRequired[ColdSummary]
    server: NotRequired[ServerSummary]
    retries: NotRequired[int]
    rate_limited: NotRequired[int]
    tokens_source: NotRequired[dict[str, int]]
    throughput: NotRequired[ThroughputSummary]
    quality: NotRequired[QualitySummary]
    video: NotRequired[VideoSummary]


class SloResult(TypedDict):
    """One service-level objective checked against a summary ($defs/slo)."""

    metric: str
    op: Literal["<=", ">="]
    limit: float
    measured: float | None
    passed: bool


class SelectionRef(TypedDict):
    """benchmark.dataset.selection: the seed, the limit (None: all) and the ids the
    dataset chose, in the order it yields them."""

    seed: int
    limit: int | None
    ids: list[str]


class DetectorRef(TypedDict):
    """How a video was split into scenes (PySceneDetect): the detector (content or
    adaptive), its threshold, the shortest scene allowed in seconds (and in frames at
    each video's rate, in `VideoInfo.min_scene_frames`), and the library's version."""

    name: Literal["content", "adaptive"]
    threshold: float
    min_scene_s: float
    library: str


class VideoInfo(TypedDict):
    """One video of a video dataset, as the session decoded and split it (once per
    pytest session, cached): what it is, its scenes' starts, and the two stages timed
    on their own, never inside request latency. `error`: why it could not be decoded
    (then it has no scenes and one sample whose request fails with that line)."""

    id: str
    source: str
    sha256: str
    fps: float | None
    frames: int
    duration_s: float | None
    width: int | None
    height: int | None
    scenes: int
    min_scene_frames: int | None
    starts_s: list[float]
    detect_ns: int | None
    extract_ns: int | None
    error: str | None


class VideoRef(TypedDict):
    """benchmark.dataset.video: how scenes were found and shown, and each video."""

    detector: DetectorRef
    frames: str  # the sampling: "start,middle", "4" (evenly spaced), "every:2s"...
    layout: Literal["images", "panorama", "grid", "middle"]
    layout_chosen_by: Literal["user", "model"]  # "auto" resolved from max_images
    videos: list[VideoInfo]


class DatasetRef(TypedDict):
    """benchmark.dataset: which samples, by name and content hash."""

    name: str
    hash: str
    prep: NotRequired[dict[str, Any]]
    selection: NotRequired[SelectionRef]
    video: NotRequired[VideoRef]


class WarmupRef(TypedDict):
    """benchmark.warmup: the requests sent before measuring."""

    requests: int
    latency_s: list[float | None]


class RecordsRef(TypedDict):
    """benchmark.records: where the benchmark's records are and how many."""

    file: str
    measured: int
    warmup: int
    cold: NotRequired[int]


class LoadInfo(TypedDict):
    """benchmark.load: the load level its measured requests were sent under
    (run/load.py LoadLevel.to_json); absent for the default sequential sending."""

    pattern: Literal["sequential", "concurrency", "rate", "batch"]
    label: str
    concurrency: int | None
    rate_rps: float | None
    arrival: Literal["poisson", "gamma", "constant", None]
    burstiness: float | None
    max_concurrency: int | None
    batch_size: NotRequired[int]


class MachineLoad(TypedDict):
    """benchmark.machine: how busy the machine was (run/machine_load.py)."""

    busy: NotRequired[bool | None]
    note: NotRequired[str | None]
    loadavg_1m: NotRequired[float | None]
    other_cpu_fraction: NotRequired[float | None]
    steal_fraction: NotRequired[float | None]
    window_s: NotRequired[float | None]
    method: NotRequired[str]
    cpus: NotRequired[int]


class SweepInfo(TypedDict):
    """benchmark.sweep: the sweep a load level belongs to (plugin/bench.py), and which of
    its levels was the highest to meet every SLO."""

    benchmark: str
    levels: list[str]
    best: str | None
    met_slo: bool


class BenchmarkEntry(TypedDict):
    """One benchmark of the results document (benchmarks[], $defs/benchmark)."""

    id: str
    test: str
    model: str
    backend: str
    precision: str
    device: str
    task: str
    prompt_version: str
    input_mode: InputMode
    dataset: DatasetRef
    samples: int
    warmup: WarmupRef
    status: Status
    error: str | None
    summary: Summary
    slo: list[SloResult]
    slo_passed: NotRequired[bool | None]
    warnings: list[str]
    records: RecordsRef
    settings: dict[str, Any]
    started_at: str
    run_id: NotRequired[str]
    fail_on: NotRequired[list[str]]
    machine: NotRequired[MachineLoad | None]
    load: NotRequired[LoadInfo]
    sweep: NotRequired[SweepInfo]


class Window(TypedDict):
    """A `vlm_power.measure(name)` window (windows[], $defs/window): the energy of a span
    of a test's code on the session's meter; every energy figure is None, with
    absent_reason, when it could not be measured."""

    test: str
    name: str
    seq: int
    run_id: str
    parent: str | None
    t_start_ns: int
    t_end_ns: int
    duration_s: float
    meter: str | None
    absent_reason: str | None
    energy_j: float | None
    avg_power_w: float | None
    peak_power_w: float | None
    idle_power_w: float | None
    above_idle_energy_j: float | None
    rails_j: dict[str, float] | None
    slo: list[SloResult]
    slo_passed: bool | None


LoadFallback = TypedDict("LoadFallback", {"from": str, "reason": str | None})
"""loads[].cpu_fallback: the model ran on the CPU, not on this device's GPU (the
functional form: `from` is a keyword)."""


class LoadEntry(TypedDict):
    """One model load (loads[], $defs/load); artifacts are any objects to the schema."""

    model: str
    precision: str
    backend: str
    device: str
    load_s: NotRequired[float]
    resolve_s: NotRequired[float]
    rss_before_bytes: NotRequired[int | None]
    rss_after_bytes: NotRequired[int | None]
    rss_delta_bytes: NotRequired[int | None]
    rss_peak_bytes: NotRequired[int | None]
    accelerator_memory_delta_bytes: NotRequired[int | None]
    artifacts: NotRequired[list[dict[str, Any]]]
    settings: NotRequired[dict[str, Any]]
    count: int
    error: str | None
    run_id: NotRequired[str]
    cpu_fallback: NotRequired[LoadFallback]
    interrupted: NotRequired[bool]
    skipped: NotRequired[str]


class NvmlInfo(TypedDict):
    """device.nvml: NVML's readings of the GPU the profile is for."""

    index: NotRequired[int]
    name: NotRequired[str]
    memory_total_bytes: NotRequired[int | None]
    max_memory_clock_mhz: NotRequired[int | None]
    memory_bus_width_bits: NotRequired[int | None]
    compute_capability: NotRequired[str | None]
    errors: NotRequired[dict[str, str]]


class _ProfileFields(TypedDict):
    """The optional fields a device profile and the session's device share."""

    description: NotRequired[str]
    memory_gb: NotRequired[float | None]
    bandwidth_gbs: NotRequired[float | None]
    bandwidth_source: NotRequired[str]
    precisions: NotRequired[list[str]]
    power_meter: NotRequired[str]


class DeviceProfile(_ProfileFields):
    """device.cpu_fallback.profile: the profile the fallback backends ran under."""

    name: str
    accelerator: str


class CpuFallback(TypedDict):
    """device.cpu_fallback: backends that ran on the CPU instead, and why."""

    profile: DeviceProfile
    backends: dict[str, str]


class DeviceInfo(_ProfileFields):
    """The document's device: the session's profile, what detection found and why."""

    name: str
    accelerator: NotRequired[str]
    detected: str
    evidence: str
    nvml: NotRequired[NvmlInfo | None]
    cpu_fallback: NotRequired[CpuFallback | None]


class ServerInfo(TypedDict):
    """servers[]: a managed server the session started (servers/manager.py history())."""

    id: str
    kind: str
    pid: int
    base_url: str
    cold_start_s: float
    log: str
    argv: NotRequired[list[str]]
    settings: NotRequired[dict[str, Any]]
    served: NotRequired[list[str]]
    exit_reason: NotRequired[str | None]
    start_error: NotRequired[str | None]
    usage: NotRequired[dict[str, Any] | None]


class PipelineStage(TypedDict):
    """One stage of a two-stage pipeline (document `pipelines[].stages[]`): its name,
    its benchmark entry's id, its model, precision and task."""

    name: str
    benchmark: str
    model: str
    precision: str
    task: str


class PipelineEndToEnd(TypedDict):
    """A pipeline's end-to-end latency over its measured lineages (both stages
    succeeded), how many failed at either stage, and what the latency includes."""

    latency_s: Distribution
    handoff_s: Distribution
    n: int
    failed: int
    definition: str


class PipelineStageFigures(TypedDict):
    """One stage's measured requests in a pipeline: latency, mean tokens, response
    length."""

    latency_s: Distribution
    prompt_tokens_mean: float | None
    completion_tokens_mean: float | None
    response_chars: Distribution


class PipelineVariants(TypedDict):
    """Stage 2's JSON arrays: strings per request, in all, and outputs that were no
    JSON array."""

    per_request: Distribution
    total: int
    not_arrays: int


class Pipeline(TypedDict):
    """A two-stage pipeline run (document `pipelines[]`, plugin/pipeline.py)."""

    id: str
    test: str
    mode: Literal["staged", "together"]
    stages: list[PipelineStage]
    samples: int
    models_held_max: int
    end_to_end: PipelineEndToEnd
    per_stage: dict[str, PipelineStageFigures]
    variants: PipelineVariants | None
    response_chars: Distribution


class FleetWorker(TypedDict):
    """One pytest-xdist worker the controller started (the merged document's `workers`):
    where it ran and what came of it; a `lost` one died or its results never arrived."""

    id: str
    gateway: str
    host: str | None
    device: str | None
    run_id: str | None
    status: WorkerStatus
    benchmarks: int
    records: int
    skipped: int
    error: str | None


class ResultsDocument(TypedDict):
    """The results document's top level; tool, settings, environment, power and the
    merged runs' headers are any objects to the schema; `windows` only when a test
    measured one."""

    kind: Literal["pytest-vlmbench-results"]
    schema_version: Literal[1]
    tool: dict[str, Any]
    run_id: str
    started_at: str
    finished_at: str | None
    status: RunStatus
    command: list[str]
    settings: dict[str, Any]
    environment: dict[str, Any]
    device: DeviceInfo
    methods: dict[str, str]
    loads: list[LoadEntry]
    benchmarks: list[BenchmarkEntry]
    records_file: str
    power: NotRequired[dict[str, Any]]
    runs: NotRequired[list[dict[str, Any]]]
    power_trace_file: NotRequired[str | None]
    windows: NotRequired[list[Window]]
    servers: NotRequired[list[ServerInfo]]
    agreement: NotRequired[list[Agreement]]
    pipelines: NotRequired[list[Pipeline]]
    workers: NotRequired[list[FleetWorker]]
