"""A writer killed in the middle of an append leaves the history as it was.

A child process (tests/history_db.py's writer) appends a run of 50 benchmarks x 2,000
records; after it reports its first benchmark written, the test SIGKILLs it: no
rollback code of ours runs. The history must then hold no trace of the run and pass
check(), and a second writer must append the same run whole.
"""

from __future__ import annotations

import signal
import subprocess
import sys

from pytest_vlmbench.history import History
from tests import history_db
from tests.history_db import ROOT

# the fixtures: a history of either kind, and the throwaway PostgreSQL behind it
history_url = history_db.history_url
postgres_cluster = history_db.postgres_cluster

BENCHMARKS, RECORDS = 50, 2000


def _writer(url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.history_db", "write", url, "big", str(BENCHMARKS),
         str(RECORDS)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_writer_leaves_nothing(history_url: str) -> None:
    with History.open(history_url) as history:  # the tables exist before the writer runs
        assert history.runs() == []
    seen: list[str] = []
    with _writer(history_url) as child:
        assert child.stdout is not None
        assert child.stderr is not None
        for line in child.stdout:
            seen.append(line.strip())
            if line.startswith("benchmark "):
                child.send_signal(signal.SIGKILL)
                break
        child.wait(timeout=60)
        assert child.returncode == -signal.SIGKILL, (seen, child.stderr.read())
    assert "commit" not in seen
    assert seen[-2:] == ["begin", seen[-1]]

    with History.open(history_url) as history:
        assert history.check() == []
        assert history.runs() == []
        for table in ("vlm_run", "vlm_benchmark", "vlm_metric", "vlm_records"):
            assert history._db.one(f"SELECT COUNT(*) FROM {table}") == (0,), table

    with _writer(history_url) as again:
        out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert out.splitlines()[-2:] == ["commit", "done 100050 skipped=None"]
    with History.open(history_url) as history:
        [run] = history.runs()
        assert (run.run_id, run.complete, run.benchmarks, run.records) == \
            ("big", True, BENCHMARKS, BENCHMARKS * (RECORDS + 1))
        assert history.check() == []
        assert len(history.trend("p95_latency")) == BENCHMARKS
