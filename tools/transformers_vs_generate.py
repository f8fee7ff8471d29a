"""What does the transformers backend cost per request, beside a bare `model.generate`?

One model, loaded once by the backend (backends/hf_transformers); the same prompts run
- **ours**: `TransformersModel.generate(request)`: JPEG decode, chat template, processor,
  one generate call with our streamer (a timestamp per step) and forward hooks (prefill
  start, vision encoder), tokens counted from the output ids, the Response built;
- **bare**: what a user writes: the same JPEG decode, chat template and processor, then
  `model.generate(**inputs, max_new_tokens=N, do_sample=False)` and
  `tokenizer.decode`, on the same model object, timing nothing inside. Both run under
  torch.inference_mode (ours does), so the difference is our instrumentation.
Interleaved in one process, pair by pair (ABAB, the order swapped every round so a drift
of the machine falls on both), each call timed from outside with perf_counter_ns. Both
must produce the same tokens (greedy): a pair that does not is reported, not hidden.

Printed: per-call wall and CPU time (min, p10, median), split into the time inside
`model.generate` (where our streamer and hooks act) and outside it (template, tokens,
Response), ours' own latency (t_end_ns - t_start_ns), and the ratios ours/bare: the median
of the per-pair ratios, the ratio of the minimums (the least disturbed calls: on a shared
machine the pair-to-pair spread is far wider than the overhead) and of the medians
(target <= 1.02). A performance target, not a test: it prints what it measured, asserts nothing.

    python tools/transformers_vs_generate.py [--model tiny-llama-hf] [--rounds 30]
    python tools/transformers_vs_generate.py --model tiny-llava-hf --images 1
    python tools/transformers_vs_generate.py --batch 4   # generate_batch vs a padded batch
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from pytest_vlmbench.backends import LoadContext, Request, Response  # noqa: E402
from pytest_vlmbench.backends.hf_transformers import TransformersBackend  # noqa: E402
from pytest_vlmbench.backends.hf_transformers.model import TransformersModel  # noqa: E402
from pytest_vlmbench.backends.hf_transformers.request import Engine  # noqa: E402
from pytest_vlmbench.datasets import PreparedImage  # noqa: E402
from pytest_vlmbench.models.catalog import EMBEDDED_CATALOG, load_catalog  # noqa: E402
from pytest_vlmbench.models.devices import PROFILES  # noqa: E402
from pytest_vlmbench.tasks import GenerationParams  # noqa: E402

SYSTEM = "You are a helpful vision assistant. Answer in one sentence."
PROMPTS = (
    "Describe the picture.",
    "What objects are visible, and where are they?",
    "Is there a person in the scene? Say why you think so.",
    "Write a caption for this photo of a cat sitting on a red mat beside a window.",
)


def _jpeg(index: int) -> PreparedImage:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (40 * index % 255, 90, 200 - 30 * index % 200)).save(
        buf, "JPEG", quality=90)
    return PreparedImage(jpeg=buf.getvalue(), sha256="-", width=320, height=240,
                         source=f"synthetic-{index}")


@dataclass
class Bare:
    """The hand-written loop, on the backend's own model, tokenizer and processor."""

    engine: Engine
    max_tokens: int

    def _inputs(self, prompts: list[str], images: list[list[PreparedImage]]) -> Any:
        from PIL import Image

        engine = self.engine
        pictures = [[Image.open(io.BytesIO(p.jpeg)).convert("RGB") for p in row]
                    for row in images]
        texts = []
        for prompt, row in zip(prompts, pictures, strict=True):
            if engine.processor is None:
                messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM},
                                                  {"role": "user", "content": prompt}]
                texts.append(engine.tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False))
            else:
                parts: list[dict[str, Any]] = [{"type": "image"} for _ in row]
                parts.append({"type": "text", "text": prompt})
                messages = [{"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
                            {"role": "user", "content": parts}]
                texts.append(engine.processor.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False))
        if engine.processor is None:
            return engine.tokenizer(texts, return_tensors="pt", padding=len(texts) > 1,
                                    add_special_tokens=False).to(engine.device)
        flat = pictures[0] if len(pictures) == 1 else pictures
        return engine.processor(text=texts, images=flat if any(pictures) else None,
                                return_tensors="pt", padding=len(texts) > 1,
                                add_special_tokens=False).to(engine.device)

    def __call__(self, prompts: list[str], images: list[list[PreparedImage]]) -> list[str]:
        import torch

        engine = self.engine
        inputs = self._inputs(prompts, images)
        with torch.inference_mode():
            out = engine.model.generate(**inputs, max_new_tokens=self.max_tokens,
                                        do_sample=False, pad_token_id=engine.pad_id)
        width = inputs["input_ids"].shape[1]
        return [engine.tokenizer.decode(row[width:], skip_special_tokens=True)
                for row in out.tolist()]


@dataclass(frozen=True)
class Timed:
    wall_ns: int
    cpu_ns: int  # this thread's CPU time (torch runs on the calling thread at 1 thread)
    generate_ns: int  # wall time inside model.generate
    result: Any


class GenerateClock:
    """Wraps the model's `generate` (for both sides alike) to split each call's time into
    inside and outside `model.generate`: our instrumentation lives on both sides of it
    (the streamer and hooks inside, template and Response outside)."""

    def __init__(self, model: Any) -> None:
        self.inside_ns = 0
        self._generate = model.generate
        object.__setattr__(model, "generate", self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter_ns()
        try:
            return self._generate(*args, **kwargs)
        finally:
            self.inside_ns += time.perf_counter_ns() - t0


def _texts(results: list[Response | Exception]) -> list[str]:
    out = []
    for result in results:
        if isinstance(result, Exception):
            raise result
        out.append(result.text)
    return out


def _line(label: str, values: list[int]) -> str:
    ordered = sorted(values)
    return (f"{label} min {ordered[0] / 1e6:8.3f}  p10 {ordered[len(ordered) // 10] / 1e6:8.3f}"
            f"  median {statistics.median(ordered) / 1e6:8.3f} ms")


def _ratio(name: str, ours: list[int], bare: list[int], pairs: list[float]) -> str:
    q = statistics.quantiles(pairs, n=4)
    return (f"  ours/bare {name}: median of pair ratios {statistics.median(pairs):.4f} "
            f"(quartiles {q[0]:.4f}..{q[2]:.4f}), ratio of mins {min(ours) / min(bare):.4f}, "
            f"of medians {statistics.median(ours) / statistics.median(bare):.4f}"
            "  (target <= 1.02)")


def run(model: TransformersModel, rounds: int, max_tokens: int, n_images: int,
        batch: int) -> None:
    engine: Engine = model._engine
    bare = Bare(engine, max_tokens)
    params = GenerationParams(max_tokens=max_tokens)
    images = [_jpeg(i) for i in range(n_images)]
    keys = ("wall", "cpu", "inside", "outside")
    got: dict[str, dict[str, list[int]]] = {who: {k: [] for k in keys} for who in ("ours", "bare")}
    pairs: dict[str, list[float]] = {"wall": [], "cpu": []}
    latency_ns: list[int] = []
    mismatches = 0
    tokens: list[int] = []
    groups = [[PROMPTS[(i + k) % len(PROMPTS)] for k in range(batch)]
              for i in range(len(PROMPTS))]
    clock = GenerateClock(engine.model)

    def ours(prompts: list[str]) -> list[Response | Exception]:
        requests = [Request(system=SYSTEM, user=p, images=images, params=params, seed=0)
                    for p in prompts]
        if batch == 1:
            return [model.generate(requests[0])]
        return model.generate_batch(requests)

    def one(who: str, prompts: list[str]) -> Timed:
        clock.inside_ns = 0
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        result = ours(prompts) if who == "ours" else bare(prompts, [images] * batch)
        wall, cpu = time.perf_counter_ns() - t0, time.thread_time_ns() - c0
        return Timed(wall, cpu, clock.inside_ns, result)

    for warm in groups[:2]:  # first calls pay one-time costs (allocators, lazy imports)
        ours(warm)
        bare(warm, [images] * batch)
    for r in range(rounds + 1):
        for prompts in groups:
            order = ("ours", "bare") if r % 2 == 0 else ("bare", "ours")
            pair = {who: one(who, prompts) for who in order}
            if r == 0:
                continue  # round 0: a second warm-up, in both orders
            for who, timed in pair.items():
                got[who]["wall"].append(timed.wall_ns)
                got[who]["cpu"].append(timed.cpu_ns)
                got[who]["inside"].append(timed.generate_ns)
                got[who]["outside"].append(timed.wall_ns - timed.generate_ns)
            pairs["wall"].append(pair["ours"].wall_ns / pair["bare"].wall_ns)
            pairs["cpu"].append(pair["ours"].cpu_ns / max(1, pair["bare"].cpu_ns))
            responses: list[Response | Exception] = pair["ours"].result
            mismatches += _texts(responses) != pair["bare"].result
            for response in responses:
                assert isinstance(response, Response)
                latency_ns.append(response.t_end_ns - response.t_start_ns)
                tokens.append(response.completion_tokens or 0)
    mode = f"batches of {batch}" if batch > 1 else "one request at a time"
    print(f"{model.spec.id} {model.precision} on {model.settings['device']}, "
          f"{model.settings['threads']} thread(s), {n_images} image(s) per request, {mode}, "
          f"max_tokens {max_tokens}, {len(pairs['wall'])} pairs (ABAB), completion tokens "
          f"mean {statistics.fmean(tokens):.1f}")
    for key, what in (("wall", "per call, wall"), ("cpu", "per call, CPU"),
                      ("inside", "inside model.generate"),
                      ("outside", "outside model.generate")):
        print(f"  {what}:")
        for who in ("bare", "ours"):
            print(_line(f"    {who}", got[who][key]))
    print(_line("  ours' own latency (t_end_ns - t_start_ns)", latency_ns))
    print(_ratio("wall", got["ours"]["wall"], got["bare"]["wall"], pairs["wall"]))
    print(_ratio("CPU ", got["ours"]["cpu"], got["bare"]["cpu"], pairs["cpu"]))
    print(f"  outputs differing between ours and bare: {mismatches} of {len(pairs['wall'])} "
          "pairs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama-hf", help="an embedded catalog id")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--images", type=int, default=0, help="images per request (VLM)")
    parser.add_argument("--batch", type=int, default=1, help="requests per generate call")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="a device profile (cpu, h100...)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where generated models go (default: a temporary directory)")
    args = parser.parse_args()
    spec = load_catalog(EMBEDDED_CATALOG).get(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = LoadContext(device=PROFILES[args.device], cache_dir=args.cache_dir or Path(tmp),
                          threads=args.threads)
        model = TransformersBackend().load(spec, args.precision, ctx)
        try:
            run(model, args.rounds, args.max_tokens, args.images, args.batch)
        finally:
            model.close()


if __name__ == "__main__":
    main()
