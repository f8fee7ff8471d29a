"""Helpers for the history's tests and tools/history_scale.py: a throwaway PostgreSQL
cluster, and runs built from a real one.

`PostgresCluster` runs initdb into a temporary directory (as root, through
`runuser -u postgres --`: PostgreSQL refuses to run as root), with scram-sha-256 and a
random password, and starts it on a free 127.0.0.1 port with its socket in that
directory and fsync off (a throwaway). Each test gets a database of its own.

`synthetic_run` builds a schema-valid results document and its records from the real
run in tests/data (its header, entries and first record as templates), with lognormal
latencies from a seeded generator, so every figure the history stores is computed
from records as a real run's would be.

Run as a module, it is the writer the kill test kills:
    python -m tests.history_db write URL RUN_ID BENCHMARKS RECORDS
prints "records ready", then the append's progress lines ("begin", "benchmark <id>",
..., "commit"), flushed one by one.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from pytest_vlmbench.metrics.summary import summarize
from pytest_vlmbench.results.models import Record, ResultsDocument

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "results-20261123T102147Z-ba1e6b.json"
PG_BIN = Path(os.environ.get("VLMBENCH_PG_BIN", "/usr/lib/postgresql/15/bin"))
USER = "vlmbench"


class NoPostgres(RuntimeError):
    """No PostgreSQL to start here (no initdb, no psycopg): the tests skip."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresCluster:
    """A running throwaway cluster; `url(db)` names one of its databases."""

    directory: Path
    port: int
    password: str
    as_postgres: bool

    def _cmd(self, *argv: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if self.as_postgres else list(argv)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A fresh database; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    @classmethod
    def start(cls, base: Path) -> PostgresCluster:
        initdb, pg_ctl = PG_BIN / "initdb", PG_BIN / "pg_ctl"
        if not initdb.exists() or not pg_ctl.exists():
            raise NoPostgres(f"no PostgreSQL server binaries in {PG_BIN} "
                             "(set VLMBENCH_PG_BIN)")
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise NoPostgres("psycopg is not installed") from None
        as_postgres = os.geteuid() == 0
        if as_postgres and shutil.which("runuser") is None:
            raise NoPostgres("running as root without runuser to start PostgreSQL as postgres")
        directory = Path(tempfile.mkdtemp(prefix="vlm-pg-", dir=base))
        password = secrets.token_urlsafe(18)
        (directory / "pwfile").write_text(password + "\n")
        if as_postgres:
            shutil.chown(directory, "postgres")
            shutil.chown(directory / "pwfile", "postgres")
        cluster = cls(directory, _free_port(), password, as_postgres)
        data = directory / "data"
        cluster._run(str(initdb), "-D", str(data), "-U", USER, "--auth=scram-sha-256",
                     f"--pwfile={directory / 'pwfile'}", "-E", "UTF8", "--no-sync")
        opts = (f"-c listen_addresses=127.0.0.1 -p {cluster.port} "
                f"-c unix_socket_directories={directory} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
        cluster._run(str(pg_ctl), "-D", str(data), "-l", str(directory / "log"), "-o", opts,
                     "-w", "-t", "60", "start")
        return cluster

    def _run(self, *argv: str) -> None:
        done = subprocess.run(self._cmd(*argv), capture_output=True, text=True, check=False,
                              cwd=self.directory)
        if done.returncode:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): "
                               f"{(done.stderr or done.stdout).strip()[-2000:]}")

    def stop(self) -> None:
        try:
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "data"), "-m",
                      "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


@contextmanager
def postgres(base: Path | None = None) -> Iterator[PostgresCluster]:
    """A throwaway cluster for the duration of the block."""
    cluster = PostgresCluster.start(base or Path(tempfile.gettempdir()))
    try:
        yield cluster
    finally:
        cluster.stop()


# ----------------------------------------------------------------------- runs


def template() -> tuple[dict[str, Any], dict[str, Any]]:
    """The real run's document and its first measured record."""
    doc = json.loads(DATA.read_text(encoding="utf-8"))
    lines = DATA.with_name(DATA.stem + ".records.jsonl").read_text(encoding="utf-8")
    record = next(r for r in map(json.loads, lines.splitlines()) if r["phase"] == "measure")
    return doc, record


def bench_id(i: int) -> str:
    return f"benchmarks/test_default_suite.py::test_caption_brief[tiny-vlm-q4_k_m-cpu-{i}]"


def synthetic_run(run_id: str, started_at: str, *, benchmarks: int = 2, records: int = 8,
                  seed: int = 0, scale: float = 1.0, commit: str = "d6d94d61f335",
                  status: str = "complete", summaries: bool = True,
                  base: tuple[dict[str, Any], dict[str, Any]] | None = None,
                  ) -> tuple[ResultsDocument, list[Record]]:
    """A results document of `benchmarks` entries with `records` measured records each
    (plus one warm-up), latencies lognormal around `scale` x the real ones; the summary
    by summary.summarize (or, with summaries=False, the real entry's: fast, for runs of
    thousands of records, whose summary the history never reads)."""
    real, rec = base or template()
    rng = np.random.default_rng(seed)
    entries: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    first = real["benchmarks"][1]
    lat0 = rec["t_end_ns"] - rec["t_start_ns"]
    ttft0 = rec["t_first_token_ns"] - rec["t_start_ns"]
    for b in range(benchmarks):
        bid = bench_id(b)
        factors = scale * rng.lognormal(0.0, 0.07, records + 1)
        t = 10**12
        recs = []
        for seq in range(records + 1):
            lat = int(lat0 * factors[seq])
            ttft = int(ttft0 * factors[seq])
            r = dict(rec)
            r.update(run_id=run_id, benchmark=bid, seq=seq, model=first["model"],
                     phase="warmup" if seq == 0 else "measure", sample_id=f"s-{seq % 50:04d}",
                     t_start_ns=t, t_first_token_ns=t + ttft, t_end_ns=t + lat,
                     stages_ns={"prefill": ttft, "decode": lat - ttft})
            recs.append(r)
            t += lat + 1000
        entry = copy.deepcopy(first)
        entry.update(id=bid, test=bid, run_id=run_id, samples=records, started_at=started_at,
                     status="complete" if status == "complete" else entry["status"],
                     records={"file": f"results-{run_id}.records.jsonl", "measured": records,
                              "warmup": 1})
        if summaries:
            entry["summary"] = summarize(cast(list[Record], recs), checks_output=False,
                                         load_s=0.5, peak_rss=10**8)
        entries.append(entry)
        out += recs
    env = copy.deepcopy(real["environment"])
    env["git"] = {"commit": commit, "dirty": False}
    doc = {**copy.deepcopy(real), "run_id": run_id, "started_at": started_at,
           "finished_at": None if status == "running" else started_at, "status": status,
           "environment": env, "benchmarks": entries,
           "records_file": f"results-{run_id}.records.jsonl"}
    return cast(ResultsDocument, doc), cast(list[Record], out)


def write_run(directory: Path, doc: ResultsDocument, records: list[Record]) -> Path:
    """The run as a results file and its records file (validated on write)."""
    from pytest_vlmbench.results.document import write_atomic

    path = directory / f"results-{doc['run_id']}.json"
    write_atomic(path, doc)
    (directory / doc["records_file"]).write_text(
        "".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _write_main(url: str, run_id: str, benchmarks: int, records: int) -> int:
    from pytest_vlmbench.history import History

    doc, recs = synthetic_run(run_id, "2026-12-01T10:00:00+00:00", benchmarks=benchmarks,
                              records=records, summaries=False)

    def say(line: str) -> None:
        print(line, flush=True)

    say("records ready")
    with History.open(url) as history:
        result = history.append(doc, recs, source="kill-test", progress=say)
    say(f"done {result.records} skipped={result.skipped}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "write":
        sys.exit(_write_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
    sys.exit("usage: python -m tests.history_db write URL RUN_ID BENCHMARKS RECORDS")


# ----------------------------------------------------------------------- fixtures

_CLUSTER = pytest.StashKey["PostgresCluster | str"]()


@pytest.fixture(scope="session")
def postgres_cluster(request: pytest.FixtureRequest) -> PostgresCluster:
    """One throwaway cluster per test session, shared by every module that imports this
    fixture (kept in config.stash: each importing module has a fixture of its own)."""
    stash = request.config.stash
    if _CLUSTER not in stash:
        try:
            # not under pytest's basetemp: its 0700 directories keep the postgres user out
            cluster = PostgresCluster.start(Path(tempfile.gettempdir()))
        except NoPostgres as exc:
            stash[_CLUSTER] = str(exc)
        else:
            stash[_CLUSTER] = cluster
            request.config.add_cleanup(cluster.stop)
    found = stash[_CLUSTER]
    if isinstance(found, str):
        if os.environ.get("VLMBENCH_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"VLMBENCH_REQUIRE_POSTGRES=1 but {found}")
        pytest.skip(found)
    return found


@pytest.fixture(params=["sqlite", "postgresql"])
def history_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty history of either kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return cluster.create_database(f"t_{secrets.token_hex(6)}")
