"""machine_load: free CPUs before the first load, thread advice, the busy warning.

The arithmetic is tested on synthetic /proc/stat snapshots (numbers we choose, so the
expected answer is exact); one test reads this machine's real /proc/stat.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_vlmbench.plugin import options
from pytest_vlmbench.run import machine_load
from pytest_vlmbench.run.machine_load import CpuShare, CpuTimes

HZ = 100


def _times(busy: int, steal: int, total: int, *, own_s: float = 0.0, t_s: float = 0.0,
           cpus: int = 2) -> CpuTimes:
    return CpuTimes(busy, steal, total, own_s, int(t_s * 1e9), cpus)


def _window(others_cpu_s: float, wall_s: float, *, cpus: int = 2, own_s: float = 0.0,
            steal_jiffies: int = 0) -> tuple[CpuTimes, CpuTimes]:
    """Two readings `wall_s` apart in which others used `others_cpu_s` CPU seconds and we
    used `own_s` on `cpus` CPUs."""
    busy = round((others_cpu_s + own_s) * HZ)
    total = round(wall_s * cpus * HZ)
    before = _times(10_000, 50, 100_000, cpus=cpus)
    after = _times(10_000 + busy, 50 + steal_jiffies, 100_000 + total, own_s=own_s,
                   t_s=wall_s, cpus=cpus)
    return before, after


def test_share_counts_others_in_cpus() -> None:
    before, after = _window(others_cpu_s=0.65, wall_s=0.5, own_s=0.1)
    s = machine_load.share(before, after, hz=HZ)
    assert s.cpus == 2
    assert s.others == pytest.approx(1.3)  # 0.65 CPU s in 0.5 s: 1.3 CPUs
    assert s.free == pytest.approx(0.7)
    assert s.window_s == pytest.approx(0.5)


def test_share_counts_steal_as_taken() -> None:
    # 20 of the window's 100 jiffies were stolen: 0.2 of 2 CPUs = 0.4 CPU not ours.
    before, after = _window(others_cpu_s=0.0, wall_s=0.5, steal_jiffies=20)
    s = machine_load.share(before, after, hz=HZ)
    assert s.steal == pytest.approx(0.2)
    assert s.taken == pytest.approx(0.4)
    assert s.free == pytest.approx(1.6)


def test_share_never_below_zero_or_above_the_cpus() -> None:
    # Our own time rounded up past the busy jiffies: others 0, not negative.
    before, after = _window(others_cpu_s=0.0, wall_s=0.5, own_s=0.3)
    after = replace(after, own_cpu_s=0.35)
    assert machine_load.share(before, after, hz=HZ).others == 0.0
    # More busy jiffies than the CPUs can hold (tick rounding): capped at the CPUs.
    before, after = _window(others_cpu_s=1.2, wall_s=0.5)
    s = machine_load.share(before, after, hz=HZ)
    assert s.others == 2.0
    assert s.free == 0.0


def test_share_unknown_without_proc_stat(tmp_path: Path) -> None:
    s = machine_load.free_cpus(0.0, path=tmp_path / "none")
    assert s.others is None
    assert s.free is None
    assert s.taken is None
    assert machine_load.fit_threads(replace(s, cpus=4)) == 4  # unknown: every CPU
    assert machine_load.thread_advice(8, s) is None  # nothing said without evidence


def test_free_cpus_reads_the_file_twice(tmp_path: Path) -> None:
    """free_cpus itself over synthetic files: the second read happens after the wait."""
    stat = tmp_path / "stat"
    stat.write_text("cpu  0 0 0 0\ncpu0 100 0 0 900 0 0 0 0\ncpu1 0 0 0 1000 0 0 0 0\n")

    def wait(_seconds: float) -> None:
        stat.write_text("cpu  0 0 0 0\ncpu0 200 0 0 900 0 0 0 0\ncpu1 0 0 0 1100 0 0 0 0\n")

    s = machine_load.free_cpus(0.5, path=stat, cpus=frozenset({0, 1}), sleep=wait)
    assert s.cpus == 2
    assert s.others is not None  # its value depends on the real clock between the reads
    assert s.free is not None
    assert 0.0 <= s.free <= 2.0


@pytest.mark.parametrize(
    ("others", "steal", "cpus", "fit"),
    [
        (0.0, 0.0, 2, 2),
        (0.1, 0.0, 2, 2),  # a daemon's tenth of a CPU leaves both CPUs usable
        (0.8, 0.0, 2, 1),
        (1.3, 0.0, 2, 1),
        (2.0, 0.0, 2, 1),  # never 0 threads
        (0.0, 0.5, 4, 2),
        (3.2, 0.0, 8, 5),
    ],
)
def test_fit_threads(others: float, steal: float, cpus: int, fit: int) -> None:
    assert machine_load.fit_threads(CpuShare(cpus, others, steal, 0.5)) == fit


def test_thread_advice_when_others_hold_cpus() -> None:
    advice = machine_load.thread_advice(2, CpuShare(2, 1.3, 0.0, 0.5))
    assert advice is not None
    assert "other processes are using 1.3 of 2 CPUs" in advice
    assert "2 threads on 0.7 free CPUs" in advice
    assert "--vlm-threads=1" in advice
    assert "--vlm-threads=fit" in advice
    assert "\n" not in advice
    # No slowdown factor is claimed: nothing measured it in this call.
    assert not any(f"{n}x" in advice or f"{n} times" in advice for n in range(2, 100))


def test_thread_advice_names_steal_and_too_many_threads() -> None:
    stolen = machine_load.thread_advice(4, CpuShare(4, 0.0, 0.5, 0.5))
    assert stolen is not None
    assert "hypervisor is taking 2.0 of 4 CPUs" in stolen
    assert "--vlm-threads=2" in stolen
    many = machine_load.thread_advice(8, CpuShare(2, 0.0, 0.0, 0.5))
    assert many is not None
    assert "this process may use 2 CPUs" in many
    assert "8 threads" in many
    assert "--vlm-threads=2" in many


@pytest.mark.parametrize(("requested", "share"), [
    (2, CpuShare(2, 0.1, 0.0, 0.5)),
    (1, CpuShare(2, 1.3, 0.0, 0.5)),  # one thread fits in 0.7 free CPUs' rounding
    (1, CpuShare(1, 1.0, 0.0, 0.5)),  # nothing to advise below one thread
])
def test_no_thread_advice_when_they_fit(requested: int, share: CpuShare) -> None:
    assert machine_load.thread_advice(requested, share) is None


def test_busy_note_and_warning_name_the_cpu_taken() -> None:
    before, after = _window(others_cpu_s=9.0, wall_s=10.0)
    block = machine_load.assess(before, after, hz=HZ)
    assert block["busy"] is True
    assert block["other_cpu_fraction"] == pytest.approx(0.45)
    assert "other processes took 45% of 2 CPUs (0.9 CPU), steal 0%" in block["note"]
    assert block["note"].endswith("these timings describe a shared machine")
    warning = machine_load.busy_warning("test_x[m-q4_k_m-cpu]", block)
    assert warning == ("machine busy during test_x[m-q4_k_m-cpu]: other processes took 45% "
                       "of 2 CPUs (0.9 CPU), steal 0%: these timings describe a shared machine")


def test_busy_warning_from_an_older_document() -> None:
    """Documents written before the note named amounts still give the full warning."""
    old = {"busy": True, "note": "the machine was busy", "other_cpu_fraction": 0.25,
           "steal_fraction": 0.07, "cpus": 4}
    assert machine_load.busy_warning("b", old) == (
        "machine busy during b: other processes took 25% of 4 CPUs (1.0 CPU), steal 7%: "
        "these timings describe a shared machine")


@pytest.mark.parametrize("machine", [
    None, {}, {"busy": False, "other_cpu_fraction": 0.01, "cpus": 2},
    {"busy": None, "other_cpu_fraction": None, "cpus": 1},
])
def test_no_busy_warning_when_quiet_or_unknown(machine: dict[str, object] | None) -> None:
    assert machine_load.busy_warning("b", machine) is None


def test_quiet_window_has_no_note() -> None:
    before, after = _window(others_cpu_s=0.5, wall_s=10.0)  # 2.5% of 2 CPUs
    block = machine_load.assess(before, after, hz=HZ)
    assert block["busy"] is False
    assert block["note"] is None


def test_free_cpus_on_this_machine() -> None:
    """A real reading of this machine's /proc/stat (whatever its load is now)."""
    s = machine_load.free_cpus(0.2)
    assert s.cpus >= 1
    if not Path("/proc/stat").exists():  # pragma: no cover - not Linux
        assert s.others is None
        return
    assert s.window_s >= 0.2
    assert s.others is not None
    assert 0.0 <= s.others <= s.cpus
    assert s.free is not None
    assert 0.0 <= s.free <= s.cpus
    assert 1 <= machine_load.fit_threads(s) <= s.cpus
    doc = s.to_json()
    assert doc["cpus"] == s.cpus
    assert doc["free_cpus"] == s.free


# --- --vlm-threads=fit ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [("fit", "fit"), ("FIT", "fit"), (" fit ", "fit"),
                                             ("1", 1), ("16", 16)])
def test_threads_value_accepts_a_number_or_fit(text: str, value: int | str) -> None:
    assert options.threads_value(text) == value


@pytest.mark.parametrize("text", ["0", "-2", "fitt", "half", "1.5", ""])
def test_threads_value_refuses_the_rest(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="whole number >= 1 or 'fit'"):
        options.threads_value(text)


def test_options_say_fit(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfig(f"{options.THREADS}=fit")
    opts = options.Options.from_config(config)
    assert opts.threads_fit is True
    assert opts.threads is None
    numbered = options.Options.from_config(pytester.parseconfig(f"{options.THREADS}=3"))
    assert (numbered.threads, numbered.threads_fit) == (3, False)
    pytester.makeini("[pytest]\nvlm_threads = fit\n")
    from_ini = options.Options.from_config(pytester.parseconfig())
    assert (from_ini.threads, from_ini.threads_fit) == (None, True)
    assert (options.Options.from_config(pytester.parseconfig(f"{options.THREADS}=2")).threads
            == 2)  # the command line wins over the ini


def test_bad_threads_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(f"{options.THREADS}=some")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--vlm-threads*whole number >= 1 or 'fit'*"])
