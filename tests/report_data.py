"""Hand-made results for the report's tests: copies of a real run's first benchmark
entry with chosen figures, written as a results document the schema accepts."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from pytest_vlmbench.report.sources import Config, configs_of, load_sources, newest
from pytest_vlmbench.results.document import write_atomic

DATA = Path(__file__).parent / "data" / "results-20261123T102147Z-ba1e6b.json"
RAPL = "no RAPL energy counters under /sys/class/powercap"


def entry(model: str, *, status: str = "complete", level: str | None = None,
          task: str | None = None, slo: list[dict[str, Any]] | None = None,
          slo_passed: bool | None = None, scores: dict[str, float | None] | None = None,
          **figs: Any) -> dict[str, Any]:
    """A copy of the document's first entry for `model`; `figs` set summary values,
    `__` for a nested key (latency_s__median=0.5)."""
    e: dict[str, Any] = copy.deepcopy(json.loads(DATA.read_text())["benchmarks"][0])
    e["model"] = model
    e["test"] = e["id"] = f"benchmarks/test_x.py::test_x[{model}-{task}-{level}]"
    e["status"] = status
    if task is not None:
        e["task"] = task
    if level is not None:
        e["load"] = {"pattern": "concurrency", "label": level, "concurrency": 4,
                     "rate_rps": None, "arrival": None, "burstiness": None,
                     "max_concurrency": None}
    e["slo"] = slo or []
    e["slo_passed"] = slo_passed
    summary = e["summary"]
    for name, value in figs.items():
        *path, last = name.split("__")
        target = summary
        for key in path:
            target = target[key]
        target[last] = value
    if scores is not None:
        summary["quality"] = {"scorers": ["truth"], "text": None, "histograms": {}, "scores": {
            name: {"mean": mean, "n": 3, "not_applicable": 0, "failed": 0, "errors": 0,
                   "chance": None, "unit": "", "higher_is_better": True, "kind": "accuracy",
                   "description": "share of counts right"}
            for name, mean in scores.items()}}
    return e


def build(tmp_path: Path, *entries: dict[str, Any]) -> list[Config]:
    doc = json.loads(DATA.read_text())
    doc["benchmarks"] = list(entries)
    path = tmp_path / "results-hand.json"
    write_atomic(path, doc)  # the schema accepts the hand-made entries
    return newest(configs_of(load_sources([path])))
