"""What pytest-vlmbench adds to every pytest start: a plain session (one trivial test,
no benchmark) with the plugin and with `-p no:vlmbench`, alternated in one run so the
machine's drift hits both alike. Prints the medians, their difference and ratio, of
the wall time and of the child's CPU time (user + system: on a machine shared with
other work it moves less than the wall time).

With `--before SRC_DIR` (an older checkout's src/, e.g. from
`git worktree add /tmp/before <commit>`) a third variant runs with PYTHONPATH=SRC_DIR,
so the plugin as it was and as it is are measured in the same rounds:

    .venv/bin/python tools/startup_cost.py --rounds 10
    .venv/bin/python tools/startup_cost.py --rounds 8 --before /tmp/before/src
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def once(folder: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[float, float]:
    """One plain session: (wall seconds, CPU seconds of the child)."""
    cpu, start = _children_cpu(), time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra],
                   cwd=folder, check=True, capture_output=True, env=env)
    return time.perf_counter() - start, _children_cpu() - cpu


def with_pythonpath(src: Path) -> dict[str, str]:
    """This environment with `src` first on the path, checked to be what is imported
    (an editable install's path comes after PYTHONPATH)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH")) if p)
    where = subprocess.run(
        [sys.executable, "-c", "import pytest_vlmbench; print(pytest_vlmbench.__file__)"],
        env=env, check=True, capture_output=True, text=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(src.resolve()):
        raise SystemExit(f"--before {src}: pytest_vlmbench is imported from {where}")
    return env


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def medians(runs: list[tuple[float, float]]) -> tuple[float, float]:
    """(wall, CPU) medians."""
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--before", type=Path, metavar="SRC_DIR",
                        help="an older checkout's src/ directory, measured in the same rounds")
    args = parser.parse_args()
    before_env = None if args.before is None else with_pythonpath(args.before)
    times: dict[str, list[tuple[float, float]]] = {"after": [], "before": [], "none": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "test_plain.py").write_text("def test_plain():\n    pass\n")
        (folder / "pytest.ini").write_text("[pytest]\n")
        once(folder)  # warm the file cache (and write the bytecode)
        if before_env is not None:
            once(folder, env=before_env)
        for _ in range(args.rounds):
            times["after"].append(once(folder))
            if before_env is not None:
                times["before"].append(once(folder, env=before_env))
            times["none"].append(once(folder, "-p", "no:vlmbench"))
    (after, after_cpu), (none, none_cpu) = medians(times["after"]), medians(times["none"])
    if before_env is None:
        print(f"plain pytest session, {args.rounds} rounds alternating: with pytest-vlmbench "
              f"{ms(after)}, with -p no:vlmbench {ms(none)} (medians); "
              f"the plugin adds {ms(after - none)}, ratio {after / none:.2f}; CPU time "
              f"{ms(after_cpu)} and {ms(none_cpu)}, the plugin adds {ms(after_cpu - none_cpu)}")
        return 0
    before, before_cpu = medians(times["before"])
    print(f"plain pytest session, {args.rounds} rounds alternating (medians): "
          f"before ({args.before}) {ms(before)}, after {ms(after)}, "
          f"-p no:vlmbench {ms(none)}; the plugin adds {ms(before - none)} before, "
          f"{ms(after - none)} after; CPU time {ms(before_cpu)}, {ms(after_cpu)}, "
          f"{ms(none_cpu)}: the plugin adds {ms(before_cpu - none_cpu)} before, "
          f"{ms(after_cpu - none_cpu)} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
