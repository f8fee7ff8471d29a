"""How much does power metering disturb a benchmark? Prints wall-time ratios.

Runs the default suite's caption benchmark on gemma3-270m alternately without a meter
(`--power-meter=none`) and with one (default: the tegrastats replay from
fixtures/tegrastats/bin on PATH, at 100 ms, which costs what a real tegrastats
subprocess and our sampling threads cost here), and compares the benchmarks' measured
windows (first measured start to last measured end, from the results files) and the
decode rates. It also prints the sampler's own CPU share from the results document.

    .venv/bin/python tools/power_overhead.py --rounds 3 [--meter tegrastats] [--interval-ms 100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(meter: str, interval_ms: int, samples: int, out: Path) -> dict[str, float]:
    env = dict(os.environ)
    env["PATH"] = f"{ROOT / 'fixtures/tegrastats/bin'}{os.pathsep}{env['PATH']}"
    cmd = [
        sys.executable, "-m", "pytest", "benchmarks/", "-q", "-p", "no:cacheprovider",
        "-k", "caption_brief", "--vlm-models=gemma3-270m", f"--vlm-samples={samples}",
        f"--vlm-power-meter={meter}", f"--vlm-power-interval-ms={interval_ms}",
        "--vlm-idle-s=1", f"--vlm-out={out}", "-p", "no:benchmark",
    ]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    doc = json.loads(out.read_text())
    bench = doc["benchmarks"][0]
    cost = (doc.get("power") or {}).get("cost") or {}
    return {
        "wall_s": bench["summary"]["wall_s"],
        "decode": bench["summary"]["decode_tokens_per_s"],
        "p50": bench["summary"]["latency_s"]["median"],
        "cpu_fraction": cost.get("cpu_fraction") or 0.0,
        "energy_j": ((bench["summary"].get("energy") or {}).get("energy_j")) or 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--meter", default="tegrastats")
    parser.add_argument("--interval-ms", type=int, default=100)
    args = parser.parse_args()
    off: list[dict[str, float]] = []
    on: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):  # alternate, so drift hits both sides
            off.append(run("none", args.interval_ms, args.samples, Path(tmp) / f"off{i}.json"))
            on.append(run(args.meter, args.interval_ms, args.samples, Path(tmp) / f"on{i}.json"))
            print(f"round {i + 1}: window without {off[-1]['wall_s']:.3f} s, with "
                  f"{on[-1]['wall_s']:.3f} s; decode {off[-1]['decode']:.1f} vs "
                  f"{on[-1]['decode']:.1f} tok/s; sampler CPU "
                  f"{100 * on[-1]['cpu_fraction']:.2f}% of one core", flush=True)
    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    print(f"median measured window: {med(off, 'wall_s'):.3f} s without a meter, "
          f"{med(on, 'wall_s'):.3f} s with {args.meter} every {args.interval_ms} ms: "
          f"ratio {med(on, 'wall_s') / med(off, 'wall_s'):.3f}")
    print(f"median decode rate: {med(off, 'decode'):.1f} vs {med(on, 'decode'):.1f} tok/s: "
          f"ratio {med(on, 'decode') / med(off, 'decode'):.3f}")
    print(f"median p50 latency ratio: {med(on, 'p50') / med(off, 'p50'):.3f}; sampling CPU "
          f"(threads + meter process) {100 * med(on, 'cpu_fraction'):.2f}% of one core")


if __name__ == "__main__":
    main()
