"""The read models (results/models.py) agree with the schema, the authority on disk.

Every TypedDict that mirrors a schema object has the object's keys and required keys;
every property's type (nullable, enum, array items, map values) matches; and a real
run's document and records fit both the schema and the models. A schema edit that the
models do not follow (or the reverse) fails here.
"""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict

import pytest

from pytest_vlmbench.plugin import options
from pytest_vlmbench.results import models
from pytest_vlmbench.results.document import schema, validate_record
from tests.conftest import Project

_QUALITY = "/$defs/summary/properties/quality"
_VIDEO = "/$defs/benchmark/properties/dataset/properties/video"
MIRRORS: dict[Any, str] = {
    models.ResultsDocument: "",
    models.QualitySummary: _QUALITY,
    models.ScoreFigure: f"{_QUALITY}/properties/scores/additionalProperties",
    models.TextSummary: f"{_QUALITY}/properties/text",
    models.RepeatedGroup: f"{_QUALITY}/properties/text/properties/repeated_groups/items",
    models.Histogram: f"{_QUALITY}/properties/histograms/additionalProperties",
    models.Agreement: "/properties/agreement/items",
    models.AgreementSide: "/$defs/agreement_side",
    models.DeviceInfo: "/properties/device",
    models.NvmlInfo: "/properties/device/properties/nvml",
    models.CpuFallback: "/properties/device/properties/cpu_fallback",
    models.DeviceProfile: "/properties/device/properties/cpu_fallback/properties/profile",
    models.LoadEntry: "/$defs/load",
    models.LoadFallback: "/$defs/load/properties/cpu_fallback",
    models.BenchmarkEntry: "/$defs/benchmark",
    models.DatasetRef: "/$defs/benchmark/properties/dataset",
    models.SelectionRef: "/$defs/benchmark/properties/dataset/properties/selection",
    models.WarmupRef: "/$defs/benchmark/properties/warmup",
    models.RecordsRef: "/$defs/benchmark/properties/records",
    models.MachineLoad: "/$defs/benchmark/properties/machine",
    models.Summary: "/$defs/summary",
    models.MetricFigure: "/$defs/summary/properties/metrics/additionalProperties",
    models.Distribution: "/$defs/distribution",
    models.SloResult: "/$defs/slo",
    models.Record: "/$defs/record",
    models.ImageRef: "/$defs/record/properties/images/items",
    models.RecordError: "/$defs/record/properties/error/oneOf/1",
    models.Window: "/$defs/window",
    models.ColdSummary: "/$defs/summary/properties/cold",
    models.ServerSummary: "/$defs/summary/properties/server",
    models.LoadInfo: "/$defs/benchmark/properties/load",
    models.SweepInfo: "/$defs/benchmark/properties/sweep",
    models.ServerInfo: "/properties/servers/items",
    models.FleetWorker: "/properties/workers/items",
    models.ThroughputSummary: "/$defs/summary/properties/throughput",
    models.BatchFigure: "/$defs/summary/properties/throughput/properties/per_batch/items",
    models.Lineage: "/$defs/record/properties/lineage",
    models.LineageSource: "/$defs/record/properties/lineage/properties/from/oneOf/1",
    models.Pipeline: "/$defs/pipeline",
    models.PipelineStage: "/$defs/pipeline/properties/stages/items",
    models.PipelineEndToEnd: "/$defs/pipeline/properties/end_to_end",
    models.PipelineStageFigures: "/$defs/pipeline/properties/per_stage/additionalProperties",
    models.PipelineVariants: "/$defs/pipeline/properties/variants/oneOf/1",
    models.SceneRef: "/$defs/record/properties/scene",
    models.VideoRef: _VIDEO,
    models.DetectorRef: f"{_VIDEO}/properties/detector",
    models.VideoInfo: f"{_VIDEO}/properties/videos/items",
    models.VideoSummary: "/$defs/summary/properties/video",
    models.VideoFigures: "/$defs/summary/properties/video/properties/videos/items",
}
"""Each model and the JSON pointer of the schema object it mirrors."""


def at(pointer: str) -> dict[str, Any]:
    node: Any = schema()
    for part in pointer.split("/")[1:]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    assert isinstance(node, dict)
    return node


def resolve(sub: dict[str, Any]) -> dict[str, Any]:
    return at(sub["$ref"][1:]) if "$ref" in sub else sub


@pytest.mark.parametrize("model", list(MIRRORS), ids=lambda m: m.__name__)
def test_model_keys_and_required_keys_are_the_schemas(model: Any) -> None:
    sub = at(MIRRORS[model])
    assert set(get_type_hints(model)) == set(sub["properties"])
    assert model.__required_keys__ == frozenset(sub.get("required", ()))


def test_every_public_model_mirrors_a_schema_object() -> None:
    public = {v for k, v in vars(models).items() if is_typeddict(v) and not k.startswith("_")}
    assert public == set(MIRRORS)


def _model_branches(tp: Any) -> dict[str, Any]:
    """The JSON kinds a model type allows, each with what to check below it."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        out: dict[str, Any] = {}
        for member in get_args(tp):
            out.update(_model_branches(member))
        return out
    if origin is Literal:
        return {"enum": frozenset(get_args(tp))}
    if origin is list:
        return {"array": get_args(tp)[0]}
    if origin is dict or is_typeddict(tp):
        return {"object": tp}
    kinds = {type(None): "null", str: "string", bool: "boolean", int: "integer",
             float: "number"}
    return {"any": None} if tp is Any else {kinds[tp]: None}


def _schema_branches(sub: dict[str, Any]) -> dict[str, Any]:
    """The JSON kinds a schema object allows, each with the schema below it."""
    sub = resolve(sub)
    if "oneOf" in sub:
        out: dict[str, Any] = {}
        for branch in sub["oneOf"]:
            out.update(_schema_branches(branch))
        return out
    if "enum" in sub or "const" in sub:
        return {"enum": frozenset(sub["enum"] if "enum" in sub else [sub["const"]])}
    kinds = sub.get("type", "any")
    return {kind: sub for kind in ([kinds] if isinstance(kinds, str) else kinds)}


def disagreements(tp: Any, sub: dict[str, Any], where: str) -> list[str]:
    """Where a model type and a schema object differ, recursively."""
    mine, theirs = _model_branches(tp), _schema_branches(sub)
    if set(mine) != set(theirs):
        return [f"{where}: model {sorted(mine)} vs schema {sorted(theirs)}"]
    problems = []
    if "enum" in mine and mine["enum"] != theirs["enum"]:
        problems.append(f"{where}: enum {sorted(mine['enum'])} vs {sorted(theirs['enum'])}")
    if "array" in mine:
        items = theirs["array"].get("items")
        if items is None:
            problems += [] if mine["array"] is Any else [f"{where}[]: schema allows any"]
        else:
            problems += disagreements(mine["array"], items, f"{where}[]")
    if "object" in mine:
        problems += _object_disagreements(mine["object"], theirs["object"], where)
    return problems


def _object_disagreements(tp: Any, sub: dict[str, Any], where: str) -> list[str]:
    if is_typeddict(tp):
        props = sub.get("properties", {})
        hints = get_type_hints(tp)
        if set(hints) != set(props):
            return [f"{where}: keys {sorted(hints)} vs {sorted(props)}"]
        return [p for key in hints for p in disagreements(hints[key], props[key],
                                                          f"{where}/{key}")]
    value = get_args(tp)[1]
    if "properties" in sub:
        return [f"{where}: schema names its keys, model is a plain dict"]
    extra = sub.get("additionalProperties")
    if isinstance(extra, dict):
        return disagreements(value, extra, f"{where}/*")
    return [] if value is Any else [f"{where}/*: schema allows any value"]


@pytest.mark.parametrize(("model", "pointer"), [(models.ResultsDocument, ""),
                                                (models.Record, "/$defs/record")],
                         ids=["document", "record"])
def test_every_field_type_is_the_schemas(model: Any, pointer: str) -> None:
    assert disagreements(model, at(pointer) if pointer else schema(), "") == []


def test_a_type_drift_is_found() -> None:
    """The checker above is not blind: a nullable the model leaves out is reported."""
    summary = at("/$defs/summary")
    assert disagreements(int, summary["properties"]["peak_rss_bytes"], "x") == [
        "x: model ['integer'] vs schema ['integer', 'null']"
    ]


def misfits(value: Any, tp: Any, where: str = "") -> list[str]:
    """Where a parsed JSON value does not fit a model type, recursively. Keys a model
    does not declare are a misfit only where its schema object is closed
    (additionalProperties false), as for the schema."""
    origin = get_origin(tp)
    if tp is Any:
        return []
    if origin in (Union, types.UnionType):
        fits = [misfits(value, member, where) for member in get_args(tp)]
        return [] if [] in fits else [f"{where}: {value!r:.60} fits no arm of {tp}"]
    if origin is Literal:
        return [] if value in get_args(tp) else [f"{where}: {value!r} not in {tp}"]
    if is_typeddict(tp):
        if not isinstance(value, dict):
            return [f"{where}: not an object"]
        hints = get_type_hints(tp)
        closed = at(MIRRORS[tp]).get("additionalProperties", True) is False
        problems = [f"{where}: undeclared key {k!r}" for k in value
                    if k not in hints and closed]
        problems += [f"{where}: no {k!r}" for k in tp.__required_keys__ if k not in value]
        return problems + [p for k in value if k in hints
                           for p in misfits(value[k], hints[k], f"{where}/{k}")]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: not an array"]
        return [p for i, v in enumerate(value) for p in misfits(v, get_args(tp)[0],
                                                                f"{where}/{i}")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: not an object"]
        return [p for k, v in value.items() for p in misfits(v, get_args(tp)[1],
                                                             f"{where}/{k}")]
    accepted = {float: (int, float), type(None): (type(None),)}.get(tp, (tp,))
    if isinstance(value, bool) and tp is not bool:
        return [f"{where}: a boolean where {tp.__name__} belongs"]
    return [] if isinstance(value, accepted) else [f"{where}: {value!r:.60} is not {tp}"]


def test_misfits_names_the_field() -> None:
    good = {"metric": "p95_latency", "op": "<=", "limit": 2, "measured": None, "passed": True}
    assert misfits(good, models.SloResult) == []
    assert misfits({**good, "op": "<"}, models.SloResult) == [
        f"/op: '<' not in {get_type_hints(models.SloResult)['op']}"
    ]
    assert misfits({**good, "passed": 1}, models.SloResult) == ["/passed: 1 is not <class 'bool'>"]
    assert misfits({**good, "limit": True}, models.SloResult) == [
        "/limit: a boolean where float belongs"
    ]
    assert misfits({**good, "extra": 1}, models.SloResult) == [": undeclared key 'extra'"]
    # the schema leaves a load entry open: keys it does not name are allowed, as there
    load = {"model": "m", "precision": "fp32", "backend": "b", "device": "cpu", "count": 1,
            "error": None}
    assert misfits({**load, "extra": 1}, models.LoadEntry) == []
    assert misfits({k: v for k, v in load.items() if k != "count"}, models.LoadEntry) == [
        ": no 'count'"
    ]


BENCH = """
from tiny_tasks import CAPTION

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION)
"""


def test_a_real_runs_document_and_records_fit_the_schema_and_the_models(
    project: Project,
) -> None:
    project.pytester.makepyfile(test_bench=BENCH)
    out = project.run(f"{options.SAMPLES}=2", f"{options.WARMUP}=1",
                      f"{options.MODELS}=tiny-text")
    out.run.assert_outcomes(passed=1)
    doc = out.doc()  # validated against the schema on load
    assert misfits(doc, models.ResultsDocument) == []
    assert [b["summary"]["requests"] for b in doc["benchmarks"]] == [2]
    records = out.records()
    assert [r["phase"] for r in records] == ["warmup", "measure", "measure"]
    for i, record in enumerate(records):
        validate_record(record, f"record {i}")
        assert misfits(record, models.Record, f"record {i}") == []
