"""The peer client for tools/peer_agreement.py: guidellm 0.8.1, run and read back.

guidellm runs from a scenario file (`guidellm run -c FILE`): the OpenAI HTTP backend
against the server's root URL on `/v1/completions`, the sampling fields in
`backend.extras.body` (guidellm itself would send `max_completion_tokens`/`ignore_eos`,
which llama-cpp-python's server does not read), the prompts from a JSON-lines file
(`{"prompt": ...}` rows, sent verbatim and in order: no tokenizer is loaded, so no model
hub is needed; HF_HUB_OFFLINE=1 all the same), profile `concurrent` with N streams,
`max_requests` = the number of prompts, and the JSON output, whose
`benchmarks[0].requests.successful` rows carry each request's timestamps (time.time()):
request_start (httpx's trace hook, when the request headers start to be written),
first_token_iteration (the first line with content), last_token_iteration and
request_end (after `[DONE]`), and output_tokens (usage, else content lines counted).
`validate_backend` is off: it probes `/health`, which llama-cpp-python's server lacks.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One request's figures, seconds; tpot None below 2 output tokens."""

    prompt: str
    text: str
    tokens: int
    retries: int
    ttft: float
    e2el: float
    tpot: float | None
    peer_tpot: float | None = None  # guidellm's own "TPOT" column
    peer_itl: float | None = None  # guidellm's own "ITL" column


def tpot(e2el: float, ttft: float, tokens: int) -> float | None:
    """vLLM's time per output token: (E2EL - TTFT) / (output tokens - 1)."""
    return (e2el - ttft) / (tokens - 1) if tokens >= 2 else None


class Guidellm:
    """guidellm run, one invocation per level and run, from a scenario file."""

    def __init__(self, binary: Path, root: str, served: str, body: dict[str, Any],
                 workdir: Path) -> None:
        self.binary, self.root, self.served, self.workdir = binary, root, served, workdir
        self.extras = {"body": body}
        self.calls = 0
        self.seconds: list[float] = []  # wall time of each invocation, start-up included

    def run(self, pairs: list[tuple[str, str]], streams: int, max_tokens: int) -> list[Sample]:
        """Send the rendered prompts (the pairs' second items) with `streams` streams."""
        del max_tokens  # in the extras
        self.calls += 1
        tag = f"{self.calls}-c{streams}"
        data = self.workdir / f"prompts-{tag}.jsonl"
        data.write_text("".join(json.dumps({"prompt": p}) + "\n" for _, p in pairs))
        out = self.workdir / f"guidellm-{tag}.json"
        scenario = {"spec": {
            "backend": {"kind": "openai_http", "target": self.root, "model": self.served,
                        "request_format": "/v1/completions", "validate_backend": False,
                        "extras": self.extras},
            "profile": {"kind": "concurrent", "streams": [streams]},
            "data": [{"kind": "json_file", "path": str(data)}],
            "constraints": [{"kind": "max_requests", "count": len(pairs)}],
            "outputs": [{"kind": "json", "path": str(out)}],
        }}
        path = self.workdir / f"scenario-{tag}.json"
        path.write_text(json.dumps(scenario, indent=1))
        log = self.workdir / f"guidellm-{tag}.log"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        t0 = time.perf_counter()
        with log.open("w") as fh:
            code = subprocess.call([str(self.binary), "run", "-c", str(path),
                                    "--disable-console-interactive"],
                                   stdout=fh, stderr=subprocess.STDOUT, env=env,
                                   cwd=self.workdir)
        self.seconds.append(time.perf_counter() - t0)
        if code != 0 or not out.exists():
            raise SystemExit(f"guidellm exited with {code}; log {log}:\n"
                             f"{log.read_text()[-3000:]}")
        return parse(out, len(pairs))


def parse(out: Path, expected: int) -> list[Sample]:
    """The requests of guidellm's JSON output, in completion order."""
    bench = json.loads(out.read_text())["benchmarks"][0]
    requests = bench["requests"]
    bad = len(requests.get("errored") or []) + len(requests.get("incomplete") or [])
    done = requests["successful"]
    if bad or len(done) != expected:
        raise SystemExit(f"guidellm: {len(done)} of {expected} requests completed, "
                         f"{bad} errored or incomplete ({out})")
    samples = []
    for r in done:
        t = r["info"]["timings"]
        tokens = int(r["output_tokens"])
        prompt = json.loads(r["request_args"])["body"]["prompt"]
        ttft = r["time_to_first_token_ms"] / 1e3
        e2el = float(r["request_latency"])
        own = tpot(t["request_end"] - t["request_start"],
                   t["first_token_iteration"] - t["request_start"], tokens)
        samples.append(Sample(
            prompt, r["output"] or "", tokens, 0, ttft, e2el, own,
            peer_tpot=(r["time_per_output_token_ms"] or 0) / 1e3,
            peer_itl=(r["inter_token_latency_ms"] or 0) / 1e3))
    return samples
