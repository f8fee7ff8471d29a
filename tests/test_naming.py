"""The names of a run's files (results/naming.py): what a session writes is what the
merge, `compare latest` and the documents' `*_file` fields look for."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pytest_vlmbench.plugin import parallel
from pytest_vlmbench.results import naming


def test_a_results_path_gives_its_siblings_names() -> None:
    results = Path("out") / "results-r1.json"
    assert naming.records_file(results) == Path("out") / "results-r1.records.jsonl"
    assert naming.records_name(results) == "results-r1.records.jsonl"
    assert naming.power_trace_file(results) == Path("out") / "results-r1.power.jsonl"
    assert naming.backend_log_file(results) == Path("out") / "results-r1.backend.log"
    assert naming.compare_summary_file(results) == Path("out") / "results-r1.compare.md"


def test_a_custom_name_keeps_its_stem_and_only_json_is_dropped() -> None:
    """`--vlm-out=nightly.json` gives nightly.records.jsonl; a name without .json keeps
    all of it (nothing but the one suffix is cut)."""
    assert naming.records_name(Path("nightly.json")) == "nightly.records.jsonl"
    assert naming.records_name(Path("a.json.json")) == "a.json.records.jsonl"
    assert naming.backend_log_file(Path("d/run")) == Path("d/run.backend.log")


def test_the_default_results_file_is_under_the_rootdir() -> None:
    root = Path("/project")
    path = naming.default_results(root, "r1")
    assert path == root / naming.DEFAULT_OUT_DIR / "results-r1.json"
    assert path.match(naming.RESULTS_GLOB)


def test_run_id_is_substituted_in_the_file_name_only() -> None:
    out = Path("{run_id}") / "bench-{run_id}.json"
    assert naming.with_run_id(out, "r7") == Path("{run_id}") / "bench-r7.json"
    assert naming.with_run_id(Path("fixed.json"), "r7") == Path("fixed.json")
    assert naming.with_run_id(Path("a-{run_id}-{run_id}.json"), "r7") == Path("a-r7-r7.json")


def test_run_ids_sort_by_start_and_differ_within_a_second() -> None:
    early = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    late = datetime(2025, 1, 2, 3, 4, 6, tzinfo=UTC)
    a, b = naming.new_run_id(early), naming.new_run_id(early)
    assert a.startswith("20250102T030405Z-")
    assert a != b
    assert naming.new_run_id(late) > a  # names sort by start time
    assert naming.new_run_id(early, prefix="merged-").startswith("merged-20250102T030405Z-")


@pytest.mark.parametrize("workerid", ["gw0", "gw11"])
def test_worker_names_round_trip_with_the_glob(tmp_path: Path, workerid: str) -> None:
    """A worker's partial document is found by the merge's glob in its directory, and
    its directory is no run of its own for `compare latest` (not a results-*.json)."""
    results = tmp_path / "results-r1.json"
    directory = naming.worker_dir(results, "r1")
    assert directory.parent == tmp_path
    assert not directory.match(naming.RESULTS_GLOB)
    partial = naming.worker_results(directory, "r1", workerid)
    assert partial.name == f"results-r1.{workerid}.json"
    directory.mkdir()
    partial.write_text("{}")
    (directory / "results-r1.gw0.records.jsonl").write_text("")  # a sibling, not a run
    (directory / "results-r1.gw0.power.jsonl").write_text("")
    assert parallel.partial_documents(directory) == [partial]
    assert sorted(directory.glob(naming.POWER_TRACE_GLOB)) == [
        naming.power_trace_file(naming.worker_results(directory, "r1", "gw0"))]


def test_a_worker_writes_where_the_controller_said() -> None:
    """The controller's workerinput (parallel.worker_inputs) and the worker's reading of
    it (parallel.worker_results) agree on one place."""
    inputs = parallel.worker_inputs("r1", Path("/out/results-r1.json"), gpu_per_worker=False)
    path = parallel.worker_results({**inputs, "workerid": "gw3"})
    assert path == Path("/out/workers-r1/results-r1.gw3.json")
    assert path.parent == naming.worker_dir(Path("/out/results-r1.json"), "r1")
