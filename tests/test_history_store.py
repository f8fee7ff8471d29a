"""The results history (history/): every test on SQLite and on a throwaway PostgreSQL.

The runs are schema-valid documents built from the real run in tests/data (and one
real inner session of the tiny models): what the history stores must equal what
`vlmbench compare` computes from the same files, and a baseline from the history must
give compare_runs the same verdicts as the files themselves.
"""

from __future__ import annotations

import io
import math
import subprocess
import sys
from array import array
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pytest_vlmbench.compare.core import compare_runs
from pytest_vlmbench.compare.runs import Run, load_baseline, load_run
from pytest_vlmbench.compare.samples import (
    Columns,
    columns_from_json,
    columns_to_json,
    samples,
)
from pytest_vlmbench.history import (
    Filters,
    History,
    HistoryError,
    parse_url,
    redact,
)
from pytest_vlmbench.history.schema import LATEST
from pytest_vlmbench.history.urls import HistoryURL
from pytest_vlmbench.metrics import noise, registry
from pytest_vlmbench.results.document import load, load_with_records, validate
from pytest_vlmbench.results.merge import merge_loaded
from pytest_vlmbench.results.models import ResultsDocument
from tests import history_db
from tests.history_db import ROOT, PostgresCluster, synthetic_run, write_run

# the fixtures: a history of either kind, and the throwaway PostgreSQL behind it
history_url = history_db.history_url
postgres_cluster = history_db.postgres_cluster

METRICS = ("p50_latency", "p95_latency", "p50_ttft", "success_rate", "tokens_per_s")


def day(i: int) -> str:
    return f"2026-12-{i + 1:02d}T10:00:00+00:00"


def run_files(directory: Path, n: int, **kw: Any) -> list[Path]:
    """n runs a day apart, as results files (validated when written)."""
    return [write_run(directory, *synthetic_run(f"run{i}", day(i), seed=i, **kw))
            for i in range(n)]


def expected(path: Path, metric: str) -> dict[str, float | None]:
    """What compare computes for a metric from a results file, by benchmark id."""
    run = load_run(path)
    m = registry.compared()[metric]
    out: dict[str, float | None] = {}
    for entry in run.doc["benchmarks"]:
        cols = run.columns.get((entry.get("run_id") or run.run_id, entry["id"]))
        values = samples(entry, cols).of(m)
        out[entry["id"]] = noise.statistic(values, m.statistic) if len(values) else None
    return out


def test_round_trip(history_url: str, tmp_path: Path) -> None:
    files = run_files(tmp_path, 3, benchmarks=3, records=12)
    with History.open(history_url) as history:
        for path in files:
            result = history.import_file(path)
            assert result.skipped is None
            assert (result.benchmarks, result.records) == (3, 39)
        rows = history.runs()
        assert [r.run_id for r in rows] == ["run2", "run1", "run0"]
        assert all(r.complete and r.status == "complete" for r in rows)
        assert (rows[0].benchmarks, rows[0].records, rows[0].commit) == (3, 39, "d6d94d61f335")
        assert rows[0].device == "cpu"
        assert rows[0].source == str(files[2])
        for metric in METRICS:
            points = history.trend(metric)
            assert [p.run_id for p in points] == [f"run{i}" for i in range(3) for _ in range(3)]
            for i, path in enumerate(files):
                want = expected(path, metric)
                got = {p.key.id: p.value for p in points if p.run_id == f"run{i}"}
                assert got == want
        # compare_runs on the files: its baseline and current figures are the stored ones
        comparison = compare_runs(load_run(files[0]), load_run(files[1]))
        trend = {(p.run_id, p.key.id, metric): p.value
                 for metric in METRICS for p in history.trend(metric)}
        for pair in comparison.pairs:
            for m in pair.metrics:
                if m.metric in METRICS:
                    assert m.baseline == trend["run0", pair.key.id, m.metric]
                    assert m.current == trend["run1", pair.key.id, m.metric]
        out = io.StringIO()
        assert history.export_csv(out) == 9
        lines = out.getvalue().splitlines()
        head = lines[0].split(",")
        row = dict(zip(head, lines[-1].split(","), strict=True))
        assert row["run_id"] == "run2"
        assert row["complete"] == "true"
        assert float(row["p95_latency"]) == expected(files[2], "p95_latency")[row["benchmark"]]
        _doc, records = load_with_records(files[1], "a test")
        assert history.read_records("run1") == records
        assert history.check() == []


def test_a_real_inner_run_round_trips(history_url: str, pytester: pytest.Pytester,
                                      project: Any) -> None:
    """A real session of the tiny generated models, appended and read back."""
    from tests.test_plugin_interop import FAST, ONE_CAPTION, run_to, write_tests

    write_tests(project, ONE_CAPTION)
    out = pytester.path / "out" / "results.json"
    outcome = run_to(project, out, *FAST)
    assert outcome.run.ret == pytest.ExitCode.OK, outcome.run.stdout.str()
    with History.open(history_url) as history:
        result = history.import_file(out)
        doc = load(out)
        assert result.benchmarks == len(doc["benchmarks"]) > 0
        for metric in ("p50_latency", "p95_ttft", "success_rate"):
            got = {p.key.id: p.value for p in history.trend(metric)}
            assert got == expected(out, metric)
        assert history.check() == []


def test_same_run_twice_is_skipped(history_url: str, tmp_path: Path) -> None:
    [path] = run_files(tmp_path, 1)
    with History.open(history_url) as history:
        first = history.import_file(path)
        again = history.import_file(path)
        assert first.skipped is None
        assert again.skipped is not None
        assert "run0" in again.skipped
        assert (again.benchmarks, again.records) == (0, 0)
        assert len(history.runs()) == 1
        assert len(history.trend("p50_latency")) == 2
        assert history.check() == []


def test_interrupted_run_is_never_a_baseline(history_url: str) -> None:
    done, done_records = synthetic_run("done", day(0), seed=1)
    cut, cut_records = synthetic_run("cut", day(1), seed=2, status="interrupted")
    validate(cut)
    current, _ = synthetic_run("now", day(2), seed=3)
    with History.open(history_url) as history:
        history.append(cut, cut_records, source="test")
        first = history.baseline(current, 5)  # a first run: nothing to compare, no error
        assert first.runs == []
        assert "no complete run holds any" in first.notes[0]
        history.append(done, done_records, source="test")
        rows = {r.run_id: r for r in history.runs()}
        assert rows["cut"].complete is False
        assert rows["cut"].status == "interrupted"
        assert rows["done"].complete is True
        baseline = history.baseline(current, 5)
        assert [r.run_id for r in baseline.runs] == ["done"]
        assert "found 1" in baseline.notes[0]


def _vary(doc: ResultsDocument, **fields: str) -> ResultsDocument:
    for entry in doc["benchmarks"]:
        entry.update(cast(Any, fields))
    validate(doc)
    return doc


def test_filters(history_url: str) -> None:
    runs = [
        (_vary(synthetic_run("a", day(0), seed=0, commit="aaaa1111")[0]), "a"),
        (_vary(synthetic_run("b", day(1), seed=1, commit="bbbb2222")[0], model="other",
               device="h100", precision="fp16", task="count"), "b"),
        (synthetic_run("c", day(2), seed=2, commit="aaaa3333", benchmarks=3)[0], "c"),
    ]
    with History.open(history_url) as history:
        for i, (doc, run_id) in enumerate(runs):
            records = synthetic_run(run_id, day(i), seed=i,
                                    benchmarks=len(doc["benchmarks"]))[1]
            history.append(doc, records, source="test")

        def ids(**kw: Any) -> list[str]:
            return [r.run_id for r in history.runs(Filters(**kw))]

        def trend_runs(**kw: Any) -> list[str]:
            return list(dict.fromkeys(p.run_id for p in history.trend("p50_latency",
                                                                      Filters(**kw))))

        assert ids() == ["c", "b", "a"]
        assert ids(model="other") == ["b"]
        assert ids(device="h100") == ["b"]
        assert ids(precision="fp16") == ["b"]
        assert ids(task="count") == ["b"]
        assert ids(commit="aaaa") == ["c", "a"]
        assert ids(commit="bbbb2222") == ["b"]
        assert ids(benchmark="cpu-2]") == ["c"]  # a substring
        assert ids(benchmark="*cpu-[12]]") == ["c", "b", "a"]  # a glob of the whole id
        assert ids(benchmark="*cpu-[!01]]") == ["c"]
        assert ids(benchmark="cpu-?]") == []  # a glob: the whole id must match
        assert ids(benchmark="test_caption_brief[tiny-vlm-q4_k_m-cpu-2]") == ["c"]  # an id
        assert ids(benchmark="*[z-a]") == []  # no glob (a bad range): a substring
        assert ids(last=2) == ["c", "b"]
        assert ids(last=1, model="tiny-vlm") == ["c"]
        assert ids(last=2, commit="aaaa") == ["c", "a"]
        assert trend_runs() == ["a", "b", "c"]
        assert trend_runs(model="tiny-vlm", last=1) == ["c"]
        assert trend_runs(last=2) == ["b", "c"]
        assert trend_runs(benchmark="cpu-2]") == ["c"]
        assert [p.key.id[-3:] for p in history.trend("p50_latency", Filters(
            benchmark="*cpu-0]"))] == ["-0]"] * 3
        out = io.StringIO()
        assert history.export_csv(out, Filters(device="h100")) == 2
        assert history.export_csv(io.StringIO(), Filters(last=1)) == 3
        with pytest.raises(HistoryError, match="p95_latency"):
            history.trend("p95_latenzy")


def _verdicts(comparison: Any) -> list[tuple[Any, ...]]:
    return sorted((p.key.id, m.metric, m.verdict, m.baseline, m.current, m.p_value, m.k)
                  for p in comparison.pairs for m in p.metrics)


def test_baseline_gives_the_verdicts_of_the_files(history_url: str, tmp_path: Path) -> None:
    bases = [write_run(tmp_path, *synthetic_run(f"base{i}", day(i), seed=i, benchmarks=3,
                                                records=15, scale=1.0 + 0.02 * i))
             for i in range(4)]
    cur_doc, cur_records = synthetic_run("cur", day(9), seed=9, benchmarks=4, records=15,
                                         scale=1.3)
    current = load_run(write_run(tmp_path, cur_doc, cur_records))
    with History.open(history_url) as history:
        for path in bases:
            history.import_file(path)
        for n in (1, 3, 10):
            from_files = compare_runs(load_baseline(bases, runs=n), current)
            baseline = history.baseline(current.doc, n, exclude_run_id="cur")
            from_history = compare_runs(baseline, current)
            assert _verdicts(from_history) == _verdicts(from_files)
            assert from_history.exit_status == from_files.exit_status
            assert len(from_history.new) == 1  # the benchmark the history never saw
            assert [r.run_id for r in baseline.runs] == \
                [f"base{i}" for i in reversed(range(4))][:n]
            assert baseline.notes[0].startswith(f"history {history.url.display}: the newest {n}")
        assert any(m.verdict == "regressed" for p in from_history.pairs for m in p.metrics)


def test_changed_prompt_is_not_comparable_not_new(history_url: str) -> None:
    doc, records = synthetic_run("old", day(0), seed=0)
    current, _ = synthetic_run("now", day(1), seed=1)
    for entry in current["benchmarks"]:
        entry["prompt_version"] = "another"
    with History.open(history_url) as history:
        history.append(doc, records, source="test")
        baseline = history.baseline(current, 5)
        assert "none for 2 benchmarks" in baseline.notes[0]
        now = Run.from_records(Path("now.json"), current, synthetic_run("now", day(1))[1])
        comparison = compare_runs(baseline, now)
        assert not comparison.new
        assert len(comparison.not_comparable) == 2
        assert "prompt_version changed" in str(comparison.not_comparable[0].reason)


def test_merged_document_is_one_run(history_url: str, tmp_path: Path) -> None:
    a = write_run(tmp_path, *synthetic_run("wa", day(0), seed=0))
    b = write_run(tmp_path, *synthetic_run("wb", day(0), seed=1))
    inputs = [(p, *load_with_records(p, "a test")) for p in (a, b)]
    merged = merge_loaded(inputs, records_file="merged.records.jsonl", run_id="merged-1")
    validate(merged.document)
    doc = cast(ResultsDocument, merged.document)
    current, cur_records = synthetic_run("now", day(1), seed=2, scale=1.2)
    with History.open(history_url) as history:
        result = history.append(doc, merged.records, source="merge")
        assert (result.run_id, result.benchmarks) == ("merged-1", 4)
        [row] = history.runs()
        assert (row.run_id, row.benchmarks, row.records) == ("merged-1", 4, 36)
        baseline = history.baseline(current, 5)
        [run] = baseline.runs
        assert sorted(run.columns) == sorted((e["run_id"], e["id"])
                                             for e in doc["benchmarks"])
        comparison = compare_runs(baseline, Run.from_records(Path("now.json"), current,
                                                             cur_records))
        assert all(p.k == 2 for p in comparison.pairs)
        assert len(comparison.pairs) == 2
        assert history.check() == []


def _set_version(url: HistoryURL, version: int) -> None:
    sql = "INSERT INTO vlm_schema_version (version, name, applied_at) VALUES ({0}, {0}, {0})"
    if url.dialect == "sqlite":
        import sqlite3

        with sqlite3.connect(url.target) as conn:
            conn.execute(sql.format("?"), (version, "future", "now"))
    else:
        import psycopg

        with psycopg.connect(url.target, autocommit=True) as pg:
            pg.execute(sql.format("%s"), (version, "future", "now"))


def test_newer_schema_is_refused(history_url: str) -> None:
    with History.open(history_url) as history:
        assert history.schema_version == LATEST
        url = history.url
    _set_version(url, LATEST + 1)
    with pytest.raises(HistoryError) as info:
        History.open(history_url)
    assert f"schema version {LATEST + 1}" in str(info.value)
    assert f"up to version {LATEST}" in str(info.value)


def test_fresh_store_opened_by_two_processes_at_once(history_url: str) -> None:
    code = ("import sys; from pytest_vlmbench.history import History; "
            "h = History.open(sys.argv[1]); print(h.schema_version); h.close()")
    procs = [subprocess.Popen([sys.executable, "-c", code, history_url], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outs]
    assert [out.strip() for out, _ in outs] == [str(LATEST)] * 3
    with History.open(history_url) as history:
        rows = history._db.rows("SELECT version FROM vlm_schema_version")
        assert sorted(r[0] for r in rows) == list(range(1, LATEST + 1))


def test_no_password_in_any_error(postgres_cluster: PostgresCluster) -> None:
    password = postgres_cluster.password
    good = postgres_cluster.url()
    port = str(postgres_cluster.port)
    wrong_port = good.replace(f":{port}/", ":1/")
    wrong_password = good.replace(password, "Wr0ngPassw0rdXyz")
    no_database = good.rsplit("/", 1)[0] + "/no_such_db"
    for url, secret, why in ((wrong_port, password, "Connection refused|failed"),
                             (wrong_password, "Wr0ngPassw0rdXyz", "password authentication"),
                             (no_database, password, "no_such_db")):
        with pytest.raises(HistoryError, match=why) as info:
            History.open(url)
        message = str(info.value)
        assert secret not in message
        assert secret not in repr(info.value)
        assert "\n" not in message
        assert "***" in message
    parsed = parse_url(good)
    assert password not in repr(parsed)
    assert password not in parsed.display
    # an error from an open store: a statement the database rejects
    with History.open(good) as history, pytest.raises(HistoryError) as info, \
            history._guard("testing"):
        history._db.run(f"SELECT '{password}'::int")
    assert password not in str(info.value)
    assert "***" in str(info.value)


def test_import_errors_name_the_file(history_url: str, tmp_path: Path) -> None:
    [path] = run_files(tmp_path, 1)
    load(path)
    (tmp_path / "results-run0.records.jsonl").unlink()
    with History.open(history_url) as history, pytest.raises(HistoryError,
                                                             match="records file"):
        history.import_file(path)


# ------------------------------------------------------------------- properties


floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
columns = st.builds(
    Columns,
    records=st.integers(0, 10**9), measured=st.integers(0, 10**9),
    success=st.lists(floats).map(lambda v: array("d", v)),
    latency=st.lists(floats).map(lambda v: array("d", v)),
    ttft=st.lists(floats).map(lambda v: array("d", v)),
    tpot=st.lists(floats).map(lambda v: array("d", v)),
    itl=st.lists(floats).map(lambda v: array("d", v)),
    tokens_per_s=st.lists(floats).map(lambda v: array("d", v)),
    decode_source=st.sets(st.sampled_from(["engine", "stream"])),
    prompt_tokens_per_s=st.lists(floats).map(lambda v: array("d", v)),
    parse=st.lists(floats).map(lambda v: array("d", v)),
    declared=st.dictionaries(st.text(), st.lists(floats).map(lambda v: array("d", v))),
    declared_errors=st.dictionaries(st.text(), st.text()),
    latency_video=st.lists(st.none() | st.text()),
)


def _same(a: Columns, b: Columns) -> bool:
    def bits(c: Columns) -> tuple[Any, ...]:
        return (c.records, c.measured, *(getattr(c, n).tobytes() for n in (
            "success", "latency", "ttft", "tpot", "itl", "tokens_per_s",
            "prompt_tokens_per_s", "parse")),
            {k: v.tobytes() for k, v in c.declared.items()}, c.declared_errors,
            c.decode_source, c.latency_video)
    return bits(a) == bits(b)


@given(columns)
def test_columns_round_trip_exactly(c: Columns) -> None:
    assert _same(columns_from_json(columns_to_json(c)), c)


def test_columns_of_a_real_run_round_trip() -> None:
    doc, records = load_with_records(
        next((ROOT / "tests" / "data").glob("results-*[0-9a-f].json")), "a test")
    run = Run.from_records(Path("x"), doc, records)
    assert run.columns
    for c in run.columns.values():
        assert _same(columns_from_json(columns_to_json(c)), c)
        assert not math.isnan(c.latency[0])
    with pytest.raises(ValueError, match="format"):
        columns_from_json('{"format": 99}')


secret_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl",
                                                                  "Zp")),
                      min_size=6, max_size=30).filter(lambda s: s.strip() == s)
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12)


@settings(max_examples=200)
@given(user=names, password=secret_text, host=names, db=names,
       scheme=st.sampled_from(["postgresql", "postgres"]))
def test_parse_url_and_redact_hide_the_password(user: str, password: str, host: str, db: str,
                                                scheme: str) -> None:
    encoded = quote(password, safe="")
    url = f"{scheme}://{user}:{encoded}@{host}:5432/{db}"
    parsed = parse_url(url)
    assert parsed.dialect == "postgresql"
    assert parsed.target == url
    assert parsed.display == f"{scheme}://{user}:***@{host}:5432/{db}"
    message = f"could not connect to {url}: failed (password={encoded}); dsn 'password={encoded}'"
    words = f"could not connect to {scheme}://{user}:***@{host}:5432/{db}: failed dsn raw"
    assume(encoded not in words and password not in words)
    for text in (redact(message), parsed.scrub(message + " raw " + password)):
        assert encoded not in text
    assert password not in parsed.scrub(message + " raw " + password)


@given(path=st.text(alphabet="abcdefghij_-./", min_size=1, max_size=20).filter(
    lambda p: "://" not in p and not p.startswith("//") and p.strip("./")))
def test_parse_url_of_paths(path: str) -> None:
    base = Path("/tmp/base")
    for text in (path, f"sqlite:{path}"):
        parsed = parse_url(text, base)
        assert parsed.dialect == "sqlite"
        assert parsed.target == str((base / path).resolve())
        assert parsed.display == f"sqlite://{parsed.target}"
    assert parse_url(f"sqlite:///abs/{path}").target == str(Path(f"/abs/{path}").resolve())


def test_parse_url_refuses_what_it_cannot_read() -> None:
    for bad in ("", "mysql://u:secretpw@h/db", "sqlite://relative.db", "postgresql:db"):
        with pytest.raises(HistoryError) as info:
            parse_url(bad)
        assert "secretpw" not in str(info.value)


def test_an_older_store_is_migrated(history_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store written by a version that knew only the first migration is brought up to
    date when opened, its runs kept."""
    from pytest_vlmbench.history import schema, store

    run, records = synthetic_run("old", day(0), seed=1)
    with monkeypatch.context() as patch:
        patch.setattr(store, "MIGRATIONS", schema.MIGRATIONS[:1])
        patch.setattr(store, "LATEST", 1)
        with History.open(history_url) as history:
            assert history.schema_version == 1
            history.append(run, records, source="test")
    with History.open(history_url) as history:
        assert history.schema_version == LATEST == 2
        assert [r.run_id for r in history.runs()] == ["old"]
        assert history.check() == []


def test_measurements_already_stored_are_not_appended_again(history_url: str) -> None:
    """The same entries under another document run id (merged again by a re-run CI job)
    are skipped, and a document never takes its own entries as its baseline."""
    run, records = synthetic_run("device-a", day(0), seed=1)
    merged = {**run, "run_id": "merged-1",
              "benchmarks": [{**e, "run_id": "device-a"} for e in run["benchmarks"]]}
    with History.open(history_url) as history:
        assert history.append(run, records, source="test").skipped is None
        again = history.append(merged, records, source="test")  # type: ignore[arg-type]
        assert again.skipped is not None
        assert "run device-a in history run device-a" in again.skipped
        assert [r.run_id for r in history.runs()] == ["device-a"]
        assert history.baseline(merged, 5).runs == []  # type: ignore[arg-type]


def test_a_document_overlapping_the_history_adds_only_what_is_new(history_url: str) -> None:
    """One device's run appended by itself, then the merged document of two devices:
    only the other device's entries and records are added, and the append says so."""
    a, a_records = synthetic_run("device-a", day(0), seed=1)
    b, b_records = synthetic_run("device-b", day(0), seed=2)
    merged = {**a, "run_id": "merged-2",
              "benchmarks": [*({**e, "run_id": "device-a"} for e in a["benchmarks"]),
                             *({**e, "run_id": "device-b"} for e in b["benchmarks"])]}
    with History.open(history_url) as history:
        history.append(a, a_records, source="test")
        result = history.append(merged, [*a_records, *b_records],  # type: ignore[arg-type]
                                source="test")
        assert result.skipped is None
        assert result.left_out is not None
        assert "in history run device-a" in result.left_out
        assert (result.benchmarks, result.records) == (len(b["benchmarks"]), len(b_records))
        rows = {r.run_id: r for r in history.runs()}
        assert rows["merged-2"].benchmarks == len(b["benchmarks"])
        assert rows["merged-2"].records == len(b_records)
        assert history.check() == []
