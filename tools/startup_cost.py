"""What pytest-vlmbench adds to every pytest start: a plain session (one trivial test,
no benchmark) with the plugin and with `-p no:vlmbench`, alternated in one run so the
machine's drift hits both alike. Prints the medians, their difference and ratio.

    .venv/bin/python tools/startup_cost.py --rounds 10
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def once(folder: Path, *extra: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra],
                   cwd=folder, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "test_plain.py").write_text("def test_plain():\n    pass\n")
        (folder / "pytest.ini").write_text("[pytest]\n")
        once(folder)  # warm the file cache
        with_plugin, without = [], []
        for _ in range(args.rounds):
            with_plugin.append(once(folder))
            without.append(once(folder, "-p", "no:vlmbench"))
    a, b = statistics.median(with_plugin), statistics.median(without)
    print(f"plain pytest session, {args.rounds} rounds alternating: with pytest-vlmbench "
          f"{a * 1000:.0f} ms, with -p no:vlmbench {b * 1000:.0f} ms (medians); "
          f"the plugin adds {(a - b) * 1000:.0f} ms, ratio {a / b:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
