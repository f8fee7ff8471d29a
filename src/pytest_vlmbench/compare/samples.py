"""Per-request values of one benchmark of one run, read once from its records.

A records file of 100,000 requests is read as a stream: each record is reduced to the
few numbers compare needs (its latency, TTFT, TPOT, mean ITL, decode and prompt rates,
parse and error outcome) and dropped, so memory grows with the numbers, not with the JSON. Failed
requests count in `success_rate` only: the runner now times them too (t_start_ns,
t_end_ns), but a request that errored says nothing about how fast a good one is.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import sys
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pytest_vlmbench.metrics import noise, registry, throughput
from pytest_vlmbench.metrics.per_request import engine_decode, per_second, prefill, stream_decode
from pytest_vlmbench.metrics.registry import Metric
from pytest_vlmbench.metrics.video import BLOCK, latency_scale
from pytest_vlmbench.results.document import (
    SAMPLE_EVERY,
    SAMPLE_HEAD,
    check_record,
    explain_record,
    loads,
    record_enum,
    record_fields,
    torn_record,
)

RunBenchmark = tuple[str, str]
"""(run id, benchmark id): the records of one benchmark in one run."""

_PHASES = record_enum("phase")
_OUTCOMES = record_enum("parse")


@dataclass
class Columns:
    """The per-request numbers of one benchmark of one run, in record order."""

    records: int = 0
    """Every record, warm-up included."""
    measured: int = 0
    success: array[float] = field(default_factory=lambda: array("d"))
    latency: array[float] = field(default_factory=lambda: array("d"))
    ttft: array[float] = field(default_factory=lambda: array("d"))
    tpot: array[float] = field(default_factory=lambda: array("d"))
    """per_request.tpot_s: (E2EL - TTFT) / (output tokens - 1), >= 2 output tokens."""
    itl: array[float] = field(default_factory=lambda: array("d"))
    """per_request.mean_itl_s: one value per request (the summary's ITL pools the gaps)."""
    tokens_per_s: array[float] = field(default_factory=lambda: array("d"))
    decode_source: set[str] = field(default_factory=set)
    prompt_tokens_per_s: array[float] = field(default_factory=lambda: array("d"))
    parse: array[float] = field(default_factory=lambda: array("d"))
    """1 valid / 0 not, for successful requests whose output was checked."""
    declared: dict[str, array[float]] = field(default_factory=dict)
    """Values of the metrics declared with a per_request computation, by sample name."""
    declared_errors: dict[str, str] = field(default_factory=dict)
    """Why such a metric has no values: the first error its computation raised."""
    latency_video: list[str | None] = field(default_factory=list)
    """The video of each `latency` value's record (its scene.video), None for a record
    without a scene: the video figures' samples take only the complete videos' scenes."""


def _accumulate(items: Iterable[Any], source: str, groups: dict[RunBenchmark, Columns], *,
                raw: bool) -> None:
    """Add records to their benchmarks' columns: JSON lines of a file (raw) or dicts.

    One loop with everything inlined: at 100,000 records a file, each microsecond spent
    per record is 0.1 s (orjson's parse itself costs about 2.5). A raw line is checked
    as results.check_record_line says. A record that cannot be read raises ResultsError
    naming `source`, its line and the field at fault.
    """
    fields, head, every = record_fields(), SAMPLE_HEAD, SAMPLE_EVERY
    declared = [(m.sample, m.per_request) for m in registry.computed() if m.per_request]
    last: RunBenchmark | None = None
    c = Columns()
    success, latency, ttft = c.success.append, c.latency.append, c.ttft.append
    decode, prompt, parse = c.tokens_per_s.append, c.prompt_tokens_per_s.append, c.parse.append
    tpot, itl = c.tpot.append, c.itl.append
    lineno, r = 0, None
    try:
        for item in items:
            lineno += 1
            if raw:
                try:
                    r = loads(item)
                except ValueError as exc:
                    if not item.strip():
                        continue
                    raise torn_record(source, lineno, exc) from None
                if lineno <= head or not lineno % every or type(r) is not dict \
                        or r.keys() != fields:
                    check_record(r, f"{source}:{lineno}")
            else:
                r = item
            key = (r["run_id"], r["benchmark"])
            if key != last:
                found = groups.get(key)
                c = groups[key] = Columns() if found is None else found
                success, latency, ttft = c.success.append, c.latency.append, c.ttft.append
                decode, prompt = c.tokens_per_s.append, c.prompt_tokens_per_s.append
                parse, tpot, itl = c.parse.append, c.tpot.append, c.itl.append
                last = key
            c.records += 1
            phase = r["phase"]
            if phase != "measure":
                if phase not in _PHASES:
                    raise ValueError(f"phase {phase!r}")
                continue
            c.measured += 1
            error = r["error"]
            if error is not None:
                if type(error) is not dict:
                    raise TypeError(f"error {error!r}")
                success(0.0)
                continue
            success(1.0)
            start, first, end = r["t_start_ns"], r["t_first_token_ns"], r["t_end_ns"]
            if start is not None and end is not None:
                latency((end - start) / 1e9)
                scene = r.get("scene")
                c.latency_video.append(scene["video"] if scene is not None else None)
                if first is not None:
                    ttft((first - start) / 1e9)
                    tokens = r["completion_tokens"]
                    if tokens is not None and tokens >= 2:  # per_request.tpot_s, inlined
                        tpot((end - first) / 1e9 / (tokens - 1))
            chunks = r.get("chunks_ns")
            if chunks is not None and len(chunks) >= 2:  # per_request.mean_itl_s, inlined
                itl((chunks[-1] - chunks[0]) / 1e9 / (len(chunks) - 1))
            window = engine_decode(r)
            if window is not None and window[1]:
                decode(per_second(window))
                c.decode_source.add("engine")
            elif (window := stream_decode(r)) is not None:
                decode(per_second(window))
                c.decode_source.add("stream")
            if (window := prefill(r)) is not None:
                prompt(per_second(window))
            for sample, compute in declared:
                try:
                    value = compute(r)
                except Exception as exc:  # the plugin's bug, not a bad record
                    c.declared_errors.setdefault(
                        sample, f"its per_request raised {type(exc).__name__}: {exc}")
                    continue
                if value is not None and math.isfinite(value):
                    c.declared.setdefault(sample, array("d")).append(value)
            outcome = r["parse"]
            if outcome == "valid":
                parse(1.0)
            elif outcome != "not_checked":
                if outcome not in _OUTCOMES:
                    raise ValueError(f"parse {outcome!r}")
                parse(0.0)
    except (KeyError, TypeError, ValueError, AttributeError, ZeroDivisionError) as exc:
        raise explain_record(r, f"{source}:{lineno}", exc) from None


def columns_of(records: Iterable[Mapping[str, Any]],
               source: str = "records") -> dict[RunBenchmark, Columns]:
    """Columns by (run id, benchmark) from records in memory (the pytest gate's)."""
    groups: dict[RunBenchmark, Columns] = {}
    _accumulate(records, source, groups, raw=False)
    return groups


def read_columns(path: Path) -> dict[RunBenchmark, Columns]:
    """Columns by (run id, benchmark) from a records file, each record read once.

    Raises ResultsError naming the file and line of a torn or invalid record (OSError
    from reading passes through).
    """
    groups: dict[RunBenchmark, Columns] = {}
    with path.open("rb") as fh:
        _accumulate(fh, str(path), groups, raw=True)
    return groups


_EMPTY: NDArray[np.float64] = np.empty(0, dtype=np.float64)


def _array(values: array[float]) -> NDArray[np.float64]:
    """The values as numpy, without a copy; sorted when large (noise.LARGE), since then
    no statistic depends on their order and sorting once spares every metric a sort."""
    out = np.frombuffer(values, dtype=np.float64) if len(values) else _EMPTY
    return np.sort(out) if len(out) > noise.LARGE else out


@dataclass
class Samples:
    """Per-request values of every metric for one benchmark of one run."""

    values: dict[str, NDArray[np.float64]]
    unavailable: dict[str, str]
    decode_source: set[str]
    checks_output: bool
    measured: int

    def of(self, metric: Metric) -> NDArray[np.float64]:
        return self.values.get(metric.sample, _EMPTY)



def samples(entry: Mapping[str, Any], cols: Columns | None) -> Samples:
    """The samples of a benchmark entry from its records' columns (None: no records)."""
    c = cols or Columns()
    values = {
        "latency": _array(c.latency), "ttft": _array(c.ttft),
        "tpot": _array(c.tpot), "itl": _array(c.itl),
        "tokens_per_s": _array(c.tokens_per_s),
        "prompt_tokens_per_s": _array(c.prompt_tokens_per_s),
        "parse_rate": _array(c.parse), "success_rate": _array(c.success),
        **{name: _array(values) for name, values in c.declared.items()},
    }
    values.update({name: np.asarray(batch, dtype=np.float64)  # one value per full batch
                   for name, batch in throughput.batch_samples(entry["summary"]).items()})
    unavailable: dict[str, str] = dict(c.declared_errors)  # sample = metric name
    if 1.0 in c.success and not len(c.itl):  # an in-process or non-streaming backend
        unavailable.update({m.name: "no chunk arrival times (the backend reports none)"
                            for m in registry.compared().values() if m.sample == "itl"})
    video = entry["summary"].get("video")
    if isinstance(video, Mapping):  # a video benchmark: its figures' latency samples
        for metric in registry.compared().values():
            if metric.summary[0] != BLOCK:
                continue
            scale = latency_scale(metric.sample, video)
            if scale is None:
                unavailable[metric.name] = (f"no {metric.name} in the summary: "
                                            f"{video.get('absent_reason') or 'absent'}")
            else:  # the scenes of the videos the figure combines, scaled to it
                complete = {v["id"] for v in video.get("videos") or []
                            if isinstance(v, Mapping) and v.get("vlm_s") is not None}
                chosen = np.fromiter((vid in complete for vid in c.latency_video), bool,
                                     len(c.latency_video))
                raw = np.frombuffer(c.latency, dtype=np.float64) if len(c.latency) \
                    else _EMPTY  # in record order, as latency_video (not _array's sort)
                scaled = raw[chosen] * scale
                values[metric.sample] = np.sort(scaled) if len(scaled) > noise.LARGE \
                    else scaled
    energy = entry["summary"].get("energy")
    per_request = energy.get("per_request") if isinstance(energy, dict) else None
    if per_request:
        n = len(per_request)
        try:  # itemgetter and fromiter: 3x a list comprehension over 25,000 requests
            joules = np.fromiter(map(itemgetter("energy_j"), per_request), np.float64, n)
            tokens = np.fromiter(map(itemgetter("tokens"), per_request), np.float64, n)
        except (KeyError, TypeError):  # a request without a token count
            joules = np.array([p["energy_j"] for p in per_request], dtype=np.float64)
            tokens = np.array([p.get("tokens") or 0 for p in per_request], dtype=np.float64)
        per_token = joules[tokens > 0] / tokens[tokens > 0]
        values["energy_per_token"] = np.sort(per_token) if len(per_token) > noise.LARGE \
            else per_token
    else:
        unavailable["energy_per_token"] = "no per-request energy"
    return Samples(values, unavailable, set(c.decode_source), bool(c.parse), c.measured)


# ----------------------------------------------------------------- stored Columns (history)

_FLOAT_COLUMNS = ("success", "latency", "ttft", "tpot", "itl", "tokens_per_s",
                  "prompt_tokens_per_s", "parse")
COLUMNS_FORMAT = 1
"""The version of columns_to_json's text: a reader refuses another."""


def _pack(values: array[float]) -> str:
    """Float64 values as base64 of their little-endian bytes: exact to the bit (NaN
    payloads and -0.0 included), a third the size of decimal text and read without
    parsing a number, which a history baseline of 1,000 benchmark runs needs."""
    if sys.byteorder == "big":  # pragma: no cover - every platform we run on is little
        values = array("d", values)
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode("ascii")


def _unpack(text: str) -> array[float]:
    out = array("d")
    out.frombytes(base64.b64decode(text.encode("ascii"), validate=True))
    if sys.byteorder == "big":  # pragma: no cover
        out.byteswap()
    return out


def columns_to_json(c: Columns) -> str:
    """The Columns as JSON text (what the history stores per benchmark run);
    columns_from_json gives them back exactly."""
    return json.dumps({
        "format": COLUMNS_FORMAT, "records": c.records, "measured": c.measured,
        "float64le": {name: _pack(getattr(c, name)) for name in _FLOAT_COLUMNS},
        "declared": {name: _pack(values) for name, values in c.declared.items()},
        "declared_errors": dict(c.declared_errors),
        "decode_source": sorted(c.decode_source),
        "latency_video": list(c.latency_video),
    }, separators=(",", ":"), ensure_ascii=False)


def columns_from_json(text: str | bytes) -> Columns:
    """Columns from columns_to_json's text; ValueError when it is not that."""
    try:
        data = json.loads(text)
        if data.get("format") != COLUMNS_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, this reads {COLUMNS_FORMAT}")
        packed = data["float64le"]
        c = Columns(records=int(data["records"]), measured=int(data["measured"]))
        for name in _FLOAT_COLUMNS:
            setattr(c, name, _unpack(packed[name]))
        c.declared = {str(k): _unpack(v) for k, v in data["declared"].items()}
        c.declared_errors = {str(k): str(v) for k, v in data["declared_errors"].items()}
        c.decode_source = {str(s) for s in data["decode_source"]}
        c.latency_video = [None if v is None else str(v) for v in data["latency_video"]]
    except (KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise ValueError(f"not stored compare columns ({type(exc).__name__}: {exc})") from None
    return c
