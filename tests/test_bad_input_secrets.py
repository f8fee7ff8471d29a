"""Secrets a user passes by accident never reach the files a run leaves behind.

Each case runs a real inner session (tiny models) with a canary token in one place a
user could put a credential: an ordinary option, an ini override, the ini file, the
environment, a test id. The run must succeed, and the canary must appear in none of
the files under the output directory (results, records, backend.log, power trace) nor
on the terminal.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.bad_input import OK, Case, check_case

# Realistic shapes and lengths (an OpenAI-style key is sk- and 48 characters).
CMDLINE = "sk-canary-cmdline-555aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
INI_OVERRIDE = "sk-canary-inioverride-556aBcDeFgHiJkLmNoPqRsTuVwXyZ01234"
INI_FILE = "sk-canary-inifile-557aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
ENV = "sk-canary-environ-558aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
HF_ENV = "hf_CanaryEnvironQ9wE8rT7yU6iO5pA4sD3fG2"
TEST_ID = "sk-canary-testid-559aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"

TAGGED_BENCH = f"""
import pytest
from tiny_tasks import CAPTION

@pytest.mark.parametrize("tag", ["{TEST_ID}"])
def test_tag(vlm_bench, tag):
    vlm_bench.run(CAPTION, samples=1, warmup=0)
"""

ONE_MODEL = ("--vlm-models=tiny-text",)

CASES: list[Case] = [
    Case(id="canary-in-an-ordinary-option", args=(*ONE_MODEL, f"--junit-prefix={CMDLINE}"),
         exit=OK, absent=(CMDLINE,)),
    Case(id="canary-in-an-ini-override",
         args=(*ONE_MODEL, "-o", f"junit_suite_name={INI_OVERRIDE}"),
         exit=OK, absent=(INI_OVERRIDE,)),
    Case(id="canary-in-the-ini-file", args=ONE_MODEL, ini=f"junit_suite_name = {INI_FILE}",
         exit=OK, absent=(INI_FILE,)),
    Case(id="canary-in-the-environment", args=ONE_MODEL,
         env={"OPENAI_API_KEY": ENV, "HF_TOKEN": HF_ENV, "VLMBENCH_NOTE": ENV},
         exit=OK, absent=(ENV, HF_ENV)),
    Case(id="canary-in-a-test-id",
         args=(*ONE_MODEL, f"test_bench.py::test_tag[tiny-text-fp32-cpu-{TEST_ID}]"),
         files={"test_bench.py": TAGGED_BENCH}, exit=OK, absent=(TEST_ID,)),
]


def _canaries(case: Case) -> list[str]:
    """Every canary the case carries: the ones in its absent words, and a test id's."""
    found = [c for c in (CMDLINE, INI_OVERRIDE, INI_FILE, ENV, HF_ENV, TEST_ID)
             if c in " ".join([*case.args, case.ini, *case.env.values(), *case.files.values()])]
    assert found, f"case {case.id} carries no canary"
    return found


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_canary_absent(case: Case, tmp_path: Path, model_cache: Path) -> None:
    check_case(tmp_path, model_cache, case)
    out = tmp_path / "out"
    written = sorted(p for p in out.rglob("*") if p.is_file())
    names = {p.name for p in written}
    # The run really wrote its files, so their absence cannot pass the test.
    assert {"results.json", "results.records.jsonl"} <= names, names
    for canary in _canaries(case):
        for path in written:
            text = path.read_text(encoding="utf-8", errors="replace")
            assert canary not in text, f"{canary!r} written to {path.name}"
            assert canary[-20:] not in text, f"the end of {canary!r} written to {path.name}"
    results = (out / "results.json").read_text(encoding="utf-8")
    if CMDLINE in " ".join(case.args):
        assert "--junit-prefix=sk-***" in results  # masked, and the user can tell what was there


def test_files_share_one_mode(tmp_path: Path, model_cache: Path) -> None:
    """Results, records and power trace get 0666 less the umask, like open() gives: the
    results file was 0600 (tempfile's) beside 0644 records."""
    case = Case(id="modes", args=ONE_MODEL, exit=OK)
    old = os.umask(0o002)  # the inner run inherits it
    try:
        check_case(tmp_path, model_cache, case)
    finally:
        os.umask(old)
    out = tmp_path / "out"
    ours = [out / "results.json", out / "results.records.jsonl",
            *sorted(out.glob("*.power.jsonl"))]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in ours}
    assert modes == dict.fromkeys(modes, 0o664), {k: oct(v) for k, v in modes.items()}
