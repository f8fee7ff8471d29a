"""Command-line options and ini keys; names are constants that tests import.

Everything we add is spelled `--vlm-...`. The short spellings users type
(`--device`, `--models`, `--precisions`) are registered as aliases only when no other
plugin has taken them, and only after other plugins have registered theirs (the hook
runs last), because two plugins registering the same option crash pytest at start-up.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_vlmbench.models.catalog import EMBEDDED_CATALOG, PROJECT_CATALOG
from pytest_vlmbench.models.devices import CPU_FALLBACK as CPU_FALLBACK_PROFILE
from pytest_vlmbench.models.devices import PROFILES
from pytest_vlmbench.results.naming import backend_log_file, default_results

if TYPE_CHECKING:
    from pytest_vlmbench.datasets import Dataset
    from pytest_vlmbench.datasets.selection import ImageSource

DEVICE = "--vlm-device"
MODELS = "--vlm-models"
PRECISIONS = "--vlm-precisions"
SAMPLES = "--vlm-samples"
WARMUP = "--vlm-warmup"
SEED = "--vlm-seed"
OUT = "--vlm-out"
CATALOG = "--vlm-catalog"
THREADS = "--vlm-threads"
CACHE_DIR = "--vlm-cache-dir"
BACKEND_LOGS = "--vlm-backend-logs"
GPU_PER_WORKER = "--vlm-gpu-per-worker"
CPU_FALLBACK = "--vlm-cpu-fallback"
EXTENDED = "--vlm-extended"
COMPARE = "--vlm-compare"
REPORT = "--vlm-report"
HISTORY = "--vlm-history"
HISTORY_ENV = "VLMBENCH_HISTORY"
"""The history when neither --vlm-history nor vlm_history gives one (CI: a secret)."""
ELECTRICITY_PRICE = "--vlm-electricity-price"
API_PRICE = "--vlm-api-price"
FAIL_ON = "--vlm-fail-on"
BASELINE_RUNS = "--vlm-baseline-runs"
DRIFT_ALLOWANCE = "--vlm-drift-allowance"
IMAGE_SIZE = "--vlm-image-size"
POWER_METER = "--vlm-power-meter"
POWER_INTERVAL = "--vlm-power-interval-ms"
IDLE_S = "--vlm-idle-s"
BANDWIDTH = "--vlm-bandwidth-gbs"
IMAGES = "--vlm-images"
LIMIT = "--vlm-limit"
LOAD = "--vlm-load"
VIDEO = "--vlm-video"
SCENE_DETECTOR = "--vlm-scene-detector"
VIDEO_FRAMES = "--vlm-video-frames"
VIDEO_LAYOUT = "--vlm-video-layout"

MARKERS = (
    "vlm_slo(**limits): service-level objectives checked after vlm_bench.run, e.g. "
    "vlm_slo(max_latency_p95_s=2.0, min_parse_rate=1.0)",
    "vlm_fail_on(*rules): gate rules for --vlm-compare on this benchmark, overriding the "
    "session's for the metrics they name, e.g. vlm_fail_on('p95_latency:+5%')",
    "vlm_one_precision: run this benchmark at one precision per model (the first of the "
    "model's selected precisions), for figures that precision does not change",
    "vlm_extended: part of an extended suite (minutes more): skipped, saying so, unless "
    "--vlm-extended is given",
    "vlm_modality(name): run this benchmark only on models of this modality "
    "('vision' or 'text')",
    "vlm_dataset(name, **kwargs): the vlm_dataset fixture of this test, from the dataset "
    "registry instead of --vlm-images or the synthetic scenes, e.g. "
    "vlm_dataset('folder', path='photos', limit=20) (a relative path is relative to the "
    "test file; seed defaults to --vlm-seed)",
    "vlm_models(*ids): run this benchmark on these catalog models instead of the "
    "catalog's default ones (--vlm-models still chooses for every test), e.g. "
    "vlm_models('gemma3-270m', 'gemma3-270m-llama-server')",
    "vlm_load(concurrency=None, rate=None, arrival='poisson', burstiness=1.0, "
    "max_concurrency=None): the load pattern of this benchmark on a server backend, each "
    "level its own results entry, e.g. vlm_load(concurrency=[1, 4, 8]) (closed loop) or "
    "vlm_load(rate=[2, 4], arrival='gamma', burstiness=0.5) (open loop, requests/s), or "
    "vlm_load(batch=[8]) (offline throughput on an in-process engine: batches of 8 "
    "requests submitted together)",
)
"""The markers a benchmark may carry, as `pytest --markers` lists them."""

ALIASES = {
    DEVICE: "--device", MODELS: "--models", PRECISIONS: "--precisions",
    POWER_METER: "--power-meter",
}

DEFAULT_SAMPLES = 8
_DEFAULT_RESULTS = default_results(Path(), "<run id>")  # for the help: under the rootdir
DEFAULT_WARMUP = 1
DEFAULT_POWER_INTERVAL_MS = 100
DEFAULT_IDLE_S = 3.0
DEFAULT_BASELINE_RUNS = 5  # compare.DEFAULT_BASELINE_RUNS (not imported: numpy)
DEFAULT_DRIFT_ALLOWANCE = 0.25  # compare.DEFAULT_DRIFT_ALLOWANCE


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse `type=` for whole numbers >= minimum, with a message naming the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
        return value

    return parse


_positive_int = int_at_least(1)
_non_negative_int = int_at_least(0)


def float_at_least(minimum: float, *, strict: bool) -> Callable[[str], float]:
    """An argparse `type=` for finite numbers > minimum (strict) or >= minimum."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
            raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text}")
        return value

    return parse


def allowance(text: str) -> float:
    """An argparse `type=` for a relative allowance: `0.25` or `25%`, finite, >= 0."""
    number = text.strip()
    scale = 100.0 if number.endswith("%") else 1.0
    try:
        value = float(number.removesuffix("%")) / scale
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a fraction like 0.25 or a percentage like 25%, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a fraction >= 0, got {text}")
    return value


THREADS_FIT = "fit"


def threads_value(text: str) -> int | str:
    """An argparse `type=` for --vlm-threads: a whole number >= 1, or `fit` (the CPUs
    other processes leave free when the first model loads)."""
    if text.strip().lower() == THREADS_FIT:
        return THREADS_FIT
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number >= 1 or 'fit', got {text!r}") from None


def _comma_list(text: str) -> list[str]:
    items = [item.strip().lower() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list, got nothing")
    return items


_SEED_HELP = ("seed for datasets and sampling, and for which --vlm-limit images are chosen "
              "(default 0)")
_IMAGES_HELP = ("vlm_dataset's images instead of the synthetic scenes: a folder, a glob such as "
                "'album/**/*.jpg', a manifest (.jsonl, .csv) or one image file; measured "
                "requests default to one per chosen image")
_LIMIT_HELP = ("with --vlm-images: at most N of its images, chosen by --vlm-seed (the same N "
               "on every machine)")

# option -> (dest, type, ini type, help)
_SPEC: dict[str, tuple[str, object, str, str]] = {
    DEVICE: ("vlm_device", str, "string",
             f"device profile: auto (default: detect this machine), {', '.join(PROFILES)}; "
             "cpu is allowed on any machine (a deliberate CPU run, GPUs hidden)"),
    MODELS: ("vlm_models", _comma_list, "string",
             "comma-separated model ids from the catalog (default: its default entries)"),
    PRECISIONS: ("vlm_precisions", _comma_list, "string",
                 "comma-separated precisions (default: every precision a model lists)"),
    SAMPLES: ("vlm_samples", _positive_int, "string",
              f"measured requests per benchmark (default {DEFAULT_SAMPLES})"),
    WARMUP: ("vlm_warmup", _non_negative_int, "string",
             f"warm-up requests per benchmark, not in the statistics (default {DEFAULT_WARMUP})"),
    SEED: ("vlm_seed", _non_negative_int, "string", _SEED_HELP),
    IMAGES: ("vlm_images", str, "string", _IMAGES_HELP),
    LIMIT: ("vlm_limit", _positive_int, "string", _LIMIT_HELP),
    VIDEO: ("vlm_video", str, "string",
            "vlm_video's videos instead of the generated demo video: a video file, a folder "
            "of videos or a glob; each is split into scenes once per session, and a video "
            "benchmark measures one request per scene unless --vlm-samples says otherwise"),
    SCENE_DETECTOR: ("vlm_scene_detector", str, "string",
                     "vlm_video's scene detector (PySceneDetect): content or adaptive, with "
                     "an optional threshold and shortest scene in seconds, e.g. content:27:0.5 "
                     "(default content:27:0.5; adaptive's threshold defaults to 3)"),
    VIDEO_FRAMES: ("vlm_video_frames", str, "string",
                   "vlm_video's frames per scene: start, middle, end or a comma list of them "
                   "(default start,middle), N evenly spaced, or every:2s"),
    VIDEO_LAYOUT: ("vlm_video_layout", str, "string",
                   "how vlm_video's frames reach a model: auto (default: several images where "
                   "the model takes them, else a panorama), images, panorama, grid, middle"),
    LOAD: ("vlm_load", str, "string",
           "load pattern for server backends, overriding vlm_load markers: sequential "
           "(default), concurrency:1,4,8 (closed loop, a level per value), rate:2,4 "
           "(open loop, Poisson arrivals, requests/s), rate:2,4:gamma:0.5 (gamma arrivals, "
           "burstiness 0.5), rate:8:poisson:1:max=16 (at most 16 in flight); batch:8,32 "
           "(offline throughput on engines that batch: vllm, transformers)"),
    OUT: ("vlm_out", str, "string",
          f"results file (default {_DEFAULT_RESULTS}; {{run_id}} in the name is replaced "
          "by the run id)"),
    CATALOG: ("vlm_catalog", str, "string",
              "model catalog TOML (default: benchmarks/models.toml under the rootdir if it "
              "exists, else the catalog the package ships)"),
    THREADS: ("vlm_threads", threads_value, "string",
              "CPU threads for in-process backends (default: every core this process may "
              "use), or 'fit': as many as other processes leave free, measured over half a "
              "second before the first model loads (at least 1; recorded in the results)"),
    CACHE_DIR: ("vlm_cache_dir", str, "string",
                "where generated and assembled model files are kept "
                "(default ~/.cache/pytest-vlmbench)"),
    IMAGE_SIZE: ("vlm_image_size", _positive_int, "string",
                 "long edge, in pixels, images are resized to before a request (default 448)"),
    POWER_METER: ("vlm_power_meter", str, "string",
                  "power meter: auto (the device profile's, if it works here), none, nvml, "
                  "tegrastats, ina3221, rapl, or a registered third-party meter"),
    POWER_INTERVAL: ("vlm_power_interval_ms", _positive_int, "string",
                     f"power and memory sampling interval in ms (default "
                     f"{DEFAULT_POWER_INTERVAL_MS}; tegrastats' --interval)"),
    IDLE_S: ("vlm_idle_s", float_at_least(0.0, strict=False), "string",
             f"seconds of idle power measured before the first benchmark (default "
             f"{DEFAULT_IDLE_S:g}; 0 turns the idle baseline off)"),
    BASELINE_RUNS: ("vlm_baseline_runs", _positive_int, "string",
                    "with --vlm-compare of a directory or 'latest': compare each benchmark "
                    f"with the newest N finished runs there (default {DEFAULT_BASELINE_RUNS}); "
                    "with 2 or more, timing metrics are judged against their measured drift "
                    "between runs"),
    DRIFT_ALLOWANCE: ("vlm_drift_allowance", allowance, "string",
                      "with ONE baseline run, timing metrics gate only beyond their limit plus "
                      f"this relative allowance, e.g. 0.25 (a fraction; default "
                      f"{DEFAULT_DRIFT_ALLOWANCE:g}: the drift measured between runs here)"),
    REPORT: ("vlm_report", str, "string",
             "after the run, write a report of its results into this directory: report.md, "
             "a self-contained report.html, CSV summaries and records, plots (with the "
             "report extra); `vlmbench report` makes one from any results files"),
    HISTORY: ("vlm_history", str, "string",
              "append every run (environment, benchmarks, summaries, records) to this results "
              "history: a SQLite file (a path or sqlite:///path) or postgresql://... (the "
              "history extra); --vlm-compare=history:N compares with its last N runs, and "
              f"`vlmbench history` lists runs and trends (${HISTORY_ENV} wins over the ini)"),
    ELECTRICITY_PRICE: ("vlm_electricity_price", float_at_least(0.0, strict=False), "string",
                        "electricity price per kWh for the report's cost section (default "
                        "0.30, stated as a default in the report)"),
    BANDWIDTH: ("vlm_bandwidth_gbs", float_at_least(0.0, strict=True), "string",
                "peak memory bandwidth in GB/s for the decode roofline (default: the device "
                "profile's; CPUs have none)"),
}


def register(parser: pytest.Parser) -> None:
    group = parser.getgroup("vlmbench", "pytest-vlmbench: benchmark vision-language models")
    for option, (dest, typ, _ini_type, help_text) in _SPEC.items():
        group.addoption(option, dest=dest, type=typ, default=None, help=help_text)
        parser.addini(dest, help=help_text, type="string", default=None)
    group.addoption(
        BACKEND_LOGS, dest="vlm_backend_logs", action="store_true", default=None,
        help="show native backend output (llama.cpp) instead of writing it to the run's "
        f"log beside its results file ({backend_log_file(_DEFAULT_RESULTS)})",
    )
    parser.addini("vlm_backend_logs", help="see --vlm-backend-logs", type="bool", default=False)
    group.addoption(
        GPU_PER_WORKER, dest="vlm_gpu_per_worker", action="store_true", default=None,
        help="under pytest-xdist, give worker gwN the N-th visible GPU (sets "
        "CUDA_VISIBLE_DEVICES in the worker)",
    )
    group.addoption(
        COMPARE, dest="vlm_compare", default=None,
        help="compare with a baseline: a results file, a directory of saved runs (the newest "
        "finished one), 'latest' (the newest in the output directory), or history:N (the "
        "last N complete runs of each benchmark on its device in --vlm-history); a gated "
        "regression fails its test",
    )
    parser.addini("vlm_compare", help="see --vlm-compare", type="string", default=None)
    group.addoption(
        FAIL_ON, dest="vlm_fail_on", action="append", default=None,
        help="a gate rule for --vlm-compare, e.g. p95_latency:+10%%, tokens_per_s:-5%%, "
        "parse_rate:-0.01 (repeatable or comma-separated). Each overrides the default rule of "
        "the metric it names and keeps the others; METRIC:off drops one, 'none' drops all "
        "(the defaults and vlm_fail_on's) before the rules after it",
    )
    parser.addini("vlm_fail_on", help="see --vlm-fail-on", type="linelist", default=[])
    group.addoption(
        API_PRICE, dest="vlm_api_price", action="append", default=None,
        help="a hosted API's price for the report's cost section: NAME=IN/OUT in currency "
        "per million input and output tokens, e.g. provider-x=2.5/10 (repeatable; adds to "
        "the ini's vlm_api_prices lines)",
    )
    parser.addini("vlm_api_prices", help="see --vlm-api-price", type="linelist", default=[])
    parser.addini("vlm_gpu_per_worker", help="see --vlm-gpu-per-worker", type="bool",
                  default=False)
    group.addoption(
        CPU_FALLBACK, dest="vlm_cpu_fallback", action="store_true", default=None,
        help="when a backend, as built here, cannot use the device's GPU (e.g. llama-cpp-"
        "python built without CUDA), run its models on the CPU, labelled device "
        f"{CPU_FALLBACK_PROFILE}, instead of failing their tests",
    )
    parser.addini("vlm_cpu_fallback", help="see --vlm-cpu-fallback", type="bool",
                  default=False)
    group.addoption(
        EXTENDED, dest="vlm_extended", action="store_true", default=None,
        help="also run the benchmarks marked vlm_extended (the shipped quality suites: "
        "make bench-quality), which are skipped otherwise",
    )
    parser.addini("vlm_extended", help="see --vlm-extended", type="bool", default=False)


def register_aliases(parser: pytest.Parser) -> list[str]:
    """Add the short spellings that are still free; return the ones that were taken."""
    group = parser.getgroup("vlmbench")
    taken = []
    for option, alias in ALIASES.items():
        dest, typ, _ini, _help = _SPEC[option]
        try:
            group.addoption(alias, dest=dest, type=typ, default=None,
                            help=f"alias of {option}")
        except (ValueError, argparse.ArgumentError):
            taken.append(alias)
    return taken


def _default_catalog(root: Path) -> Path:
    """A project's own benchmarks/models.toml when it has one, else the package's."""
    project = root / PROJECT_CATALOG
    return project if project.exists() else EMBEDDED_CATALOG


@dataclass(frozen=True)
class Options:
    """The resolved settings of a session: command line first, then ini, then default."""

    device: str
    models: list[str] | None
    precisions: list[str] | None
    samples: int
    warmup: int
    seed: int
    out: Path | None
    catalog: Path
    threads: int | None
    """A number of threads asked for; None for the backend's default, or with threads_fit."""
    cache_dir: Path
    image_size: int
    backend_logs: bool
    power_meter: str = "auto"
    power_interval_s: float = DEFAULT_POWER_INTERVAL_MS / 1000
    idle_s: float = DEFAULT_IDLE_S
    bandwidth_gbs: float | None = None
    gpu_per_worker: bool = False
    cpu_fallback: bool = False
    extended: bool = False
    compare: str | None = None
    fail_on: tuple[str, ...] = ()
    """Edits of the default rules: the ini's vlm_fail_on lines, then --vlm-fail-on's."""
    baseline_runs: int = DEFAULT_BASELINE_RUNS
    drift_allowance: float = DEFAULT_DRIFT_ALLOWANCE
    threads_fit: bool = False
    """--vlm-threads=fit: the session resolves the threads at the first model load
    (machine_load.fit_threads of machine_load.free_cpus)."""
    images: ImageSource | None = None
    """--vlm-images (with --vlm-limit and --vlm-seed): vlm_dataset's dataset; None for
    the synthetic scenes."""
    load: str | None = None
    """--vlm-load as given (run/load.py parses it, at the first benchmark that runs)."""
    samples_given: bool = False
    """--vlm-samples (or its ini) was given: a video benchmark then measures that many
    requests instead of one per scene."""
    video: VideoChoice | None = None
    """--vlm-video and the scene options: what the vlm_video fixture builds."""
    report: Path | None = None
    """--vlm-report: the directory the session's report is written to."""
    electricity_price: float | None = None
    api_prices: tuple[str, ...] = ()
    """NAME=IN/OUT entries (checked at start-up: report/cost.py parse_api_price)."""
    history: str | None = field(default=None, repr=False)
    """--vlm-history: the results history's URL or file, as given (it may hold a password:
    print history/urls.py's display form only)."""
    history_base: Path | None = None
    """What a relative SQLite path in `history` is relative to: where pytest started
    (command line) or the ini file's directory (ini)."""

    @classmethod
    def from_config(cls, config: pytest.Config) -> Options:
        def get(option: str) -> object:
            dest, typ, _ini, _help = _SPEC[option]
            value = config.getoption(dest)
            if value is not None:
                return value
            ini = config.getini(dest)
            if ini in (None, ""):
                return None
            try:
                return typ(ini) if callable(typ) else ini
            except argparse.ArgumentTypeError as exc:
                raise pytest.UsageError(f"ini option {dest} = {ini!r}: {exc}") from None

        def path(option: str) -> Path | None:
            """Command-line paths are relative to where pytest was started, ini paths to
            the ini file's directory."""
            value = get(option)
            if value is None:
                return None
            if config.getoption(_SPEC[option][0]) is not None:
                return config.invocation_params.dir / Path(str(value)).expanduser()
            base = config.inipath.parent if config.inipath else config.rootpath
            return base / Path(str(value)).expanduser()

        def named(option: str, value: object) -> str:
            """How a message names a setting: ``--vlm-limit=3``, or ``vlm_limit = 3
            (pytest.ini)`` where the ini gave it."""
            dest = _SPEC[option][0]
            if config.getoption(dest) is not None:
                return f"{option}={value}"
            return f"{dest} = {value} ({config.inipath.name if config.inipath else 'ini'})"

        root = config.rootpath
        seed = get(SEED) or 0
        images = _image_source(config, get(IMAGES), get(LIMIT), seed,  # type: ignore[arg-type]
                               named)
        samples = get(SAMPLES) or (len(images.dataset) if images else DEFAULT_SAMPLES)
        catalog = path(CATALOG)
        out = path(OUT)
        cache = get(CACHE_DIR)
        if cache is not None and not str(cache).startswith("~"):
            cache = path(CACHE_DIR)
        logs = config.getoption("vlm_backend_logs")
        threads = get(THREADS)
        return cls(
            device=str(get(DEVICE) or "auto").lower(),
            models=get(MODELS),  # type: ignore[arg-type]
            precisions=get(PRECISIONS),  # type: ignore[arg-type]
            samples=samples,  # type: ignore[arg-type]
            warmup=DEFAULT_WARMUP if get(WARMUP) is None else get(WARMUP),  # type: ignore[arg-type]
            seed=seed,  # type: ignore[arg-type]
            out=out,
            catalog=catalog or _default_catalog(root),
            threads=threads if isinstance(threads, int) else None,
            cache_dir=Path(str(cache)).expanduser() if cache
            else Path("~/.cache/pytest-vlmbench").expanduser(),
            image_size=get(IMAGE_SIZE) or 448,  # type: ignore[arg-type]
            backend_logs=bool(logs) if logs is not None
            else bool(config.getini("vlm_backend_logs")),
            power_meter=str(get(POWER_METER) or "auto").lower(),
            power_interval_s=(get(POWER_INTERVAL) or DEFAULT_POWER_INTERVAL_MS) / 1000,  # type: ignore[operator]
            idle_s=DEFAULT_IDLE_S if get(IDLE_S) is None else get(IDLE_S),  # type: ignore[arg-type]
            bandwidth_gbs=get(BANDWIDTH),  # type: ignore[arg-type]
            gpu_per_worker=bool(config.getoption("vlm_gpu_per_worker")
                                or config.getini("vlm_gpu_per_worker")),
            cpu_fallback=bool(config.getoption("vlm_cpu_fallback")
                              or config.getini("vlm_cpu_fallback")),
            extended=bool(config.getoption("vlm_extended") or config.getini("vlm_extended")),
            compare=config.getoption("vlm_compare") or config.getini("vlm_compare") or None,
            fail_on=tuple(
                rule.strip()
                for item in [*config.getini("vlm_fail_on"), *(config.getoption("vlm_fail_on")
                                                             or [])]
                for rule in str(item).split(",") if rule.strip()
            ),
            baseline_runs=get(BASELINE_RUNS) or DEFAULT_BASELINE_RUNS,  # type: ignore[arg-type]
            drift_allowance=DEFAULT_DRIFT_ALLOWANCE if get(DRIFT_ALLOWANCE) is None
            else get(DRIFT_ALLOWANCE),  # type: ignore[arg-type]
            threads_fit=threads == THREADS_FIT,
            images=images,
            load=get(LOAD),  # type: ignore[arg-type]
            samples_given=get(SAMPLES) is not None,
            video=_video_choice(config, get(VIDEO), get(SCENE_DETECTOR), get(VIDEO_FRAMES),
                                get(VIDEO_LAYOUT), named),
            report=path(REPORT),
            electricity_price=get(ELECTRICITY_PRICE),  # type: ignore[arg-type]
            api_prices=_api_prices(config),
            history=_history(config),
            history_base=config.invocation_params.dir
            if config.getoption(_SPEC[HISTORY][0]) or os.environ.get(HISTORY_ENV)
            or not config.getini(_SPEC[HISTORY][0])
            else (config.inipath.parent if config.inipath else config.rootpath),
        )


def _history(config: pytest.Config) -> str | None:
    """--vlm-history, else $VLMBENCH_HISTORY (a machine's or a CI job's), else the ini's
    vlm_history (the project's): `vlmbench history` and `compare` read them in this order
    too."""
    given = config.getoption(_SPEC[HISTORY][0]) or os.environ.get(HISTORY_ENV) \
        or config.getini(_SPEC[HISTORY][0])
    return str(given) if given else None


def _api_prices(config: pytest.Config) -> tuple[str, ...]:
    """The ini's vlm_api_prices lines and --vlm-api-price, each checked now: a bad price
    is a usage error before any model loads, not a report that fails after the run."""
    items = tuple(str(i).strip() for i in [*config.getini("vlm_api_prices"),
                                           *(config.getoption("vlm_api_price") or [])]
                  if str(i).strip())
    if not items:
        return ()
    from pytest_vlmbench.report.cost import parse_api_price  # only when prices are given

    for item in items:
        try:
            parse_api_price(item)
        except ValueError as exc:
            raise pytest.UsageError(f"pytest-vlmbench: {API_PRICE}={item}: {exc}") from None
    return items


def _image_source(config: pytest.Config, text: str | None, limit: int | None, seed: int,
                  named: Callable[[str, object], str]) -> ImageSource | None:
    """--vlm-images resolved and its dataset built now, so that a missing folder, a glob
    that matches nothing or a bad manifest is a usage error (exit 4) before any model
    loads. --vlm-limit alone is refused: the synthetic scenes are counted by
    --vlm-samples, and a limit that silently did nothing would mislead."""
    if text is None:
        if limit is not None:
            raise pytest.UsageError(
                f"pytest-vlmbench: {named(LIMIT, limit)} needs --vlm-images (it chooses that "
                f"many of its images); the synthetic scenes number --vlm-samples")
        return None
    from pytest_vlmbench.datasets import DatasetArgumentError
    from pytest_vlmbench.datasets.selection import ImageSource

    if config.getoption(_SPEC[IMAGES][0]) is not None:
        base = config.invocation_params.dir
    else:
        base = config.inipath.parent if config.inipath else config.rootpath
    source = ImageSource(str(text), base, limit, seed, where=named(IMAGES, text))
    try:
        source.dataset  # noqa: B018  (built now: its mistakes are usage errors)
    except DatasetArgumentError as exc:
        raise pytest.UsageError(f"pytest-vlmbench: {exc}") from None
    return source


@dataclass(frozen=True)
class VideoChoice:
    """--vlm-video and the scene options, checked at start-up (a bad detector or layout is a
    usage error before any model loads); `path` None: the generated demo video."""

    path: Path | None
    detector: str = "content"
    threshold: float | None = None
    min_scene_s: float = 0.5
    frames: str = "start,middle"
    layout: str = "auto"

    def dataset(self, demo_dir: Path | None = None) -> Dataset:
        """The `VideoScenes` these options describe (listing files only: videos are
        decoded when the first benchmark asks); `demo_dir`: where the demo video is
        generated when no --vlm-video is given."""
        from pytest_vlmbench.datasets.video import VideoScenes
        from pytest_vlmbench.datasets.video_synth import demo_video

        if self.path is None and demo_dir is None:
            raise ValueError("VideoChoice.dataset: no --vlm-video and no demo directory")
        path = self.path if self.path is not None else demo_video(demo_dir or Path())
        return VideoScenes(path, detector=self.detector, threshold=self.threshold,
                           min_scene_s=self.min_scene_s, frames=self.frames,
                           layout=self.layout)


_DETECTORS = ("content", "adaptive")
_LAYOUTS = ("auto", "images", "panorama", "grid", "middle")


def _video_choice(config: pytest.Config, video: object, detector: object, frames: object,
                  layout: object, named: Callable[[str, object], str]) -> VideoChoice | None:
    """The video options resolved; None when none is given (the demo video, defaults)."""
    if video is None and detector is None and frames is None and layout is None:
        return None
    path: Path | None = None
    if video is not None:
        if config.getoption(_SPEC[VIDEO][0]) is not None:
            base = config.invocation_params.dir
        else:
            base = config.inipath.parent if config.inipath else config.rootpath
        path = base / Path(str(video)).expanduser()
    name, threshold, min_scene_s = "content", None, 0.5
    if detector is not None:
        parts = str(detector).split(":")
        name = parts[0].strip().lower()
        try:
            if name not in _DETECTORS or len(parts) > 3:
                raise ValueError
            if len(parts) > 1 and parts[1].strip():
                threshold = float(parts[1])
            if len(parts) > 2:
                min_scene_s = float(parts[2])
            if (threshold is not None and not (math.isfinite(threshold) and threshold > 0)) \
                    or not (math.isfinite(min_scene_s) and min_scene_s >= 0):
                raise ValueError
        except ValueError:
            raise pytest.UsageError(
                f"pytest-vlmbench: {named(SCENE_DETECTOR, detector)}: expected content or "
                f"adaptive, optionally :THRESHOLD (> 0) and :MIN_SCENE_SECONDS (>= 0), e.g. "
                f"content:27:0.5") from None
    chosen_layout = str(layout or "auto").strip().lower()
    if chosen_layout not in _LAYOUTS:
        raise pytest.UsageError(
            f"pytest-vlmbench: {named(VIDEO_LAYOUT, layout)}: expected one of "
            f"{', '.join(_LAYOUTS)}")
    from pytest_vlmbench.datasets import DatasetArgumentError
    from pytest_vlmbench.datasets.video import frame_positions

    sampling = str(frames or "start,middle")
    try:
        frame_positions(sampling, 0, 1, 1.0)
    except DatasetArgumentError as exc:
        raise pytest.UsageError(f"pytest-vlmbench: {named(VIDEO_FRAMES, frames)}: "
                                f"{str(exc).removeprefix(f'frames={sampling!r}: ')}") from None
    if chosen_layout == "middle" and frames is not None \
            and sampling.strip().lower() not in ("middle", "start,middle"):
        raise pytest.UsageError(
            f"pytest-vlmbench: {named(VIDEO_FRAMES, frames)} with "
            f"{named(VIDEO_LAYOUT, layout)}: the middle layout sends the scene's middle "
            f"frame alone; leave the frames out")
    choice = VideoChoice(path, name, threshold, min_scene_s, sampling, chosen_layout)
    if path is not None:
        try:  # built now, as --vlm-images is: a missing file is a usage error (exit 4)
            choice.dataset()
        except DatasetArgumentError as exc:
            raise pytest.UsageError(f"pytest-vlmbench: {named(VIDEO, video)}: {exc}") from None
    return choice
