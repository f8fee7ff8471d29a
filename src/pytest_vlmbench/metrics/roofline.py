"""The decode roofline: how close a configuration gets to what memory bandwidth allows.

Decoding one token reads every weight the forward pass uses once, so a device with
peak bandwidth B (bytes/s) cannot decode faster than B / bytes_per_token tokens/s at
batch 1. The bound ignores the KV cache (small for short contexts) and compute, so
it is an upper bound: achieved / bound says how much headroom the software leaves.
"""

from __future__ import annotations

from typing import Any


def roofline(
    *, bandwidth_gbs: float | None, bandwidth_source: str, bytes_per_token: int | None,
    bytes_source: str | None, achieved_tokens_per_s: float | None,
) -> dict[str, Any]:
    """The summary's `roofline` block; `absent` says why when it cannot be computed."""
    block: dict[str, Any] = {
        "bandwidth_gbs": bandwidth_gbs, "bandwidth_source": bandwidth_source,
        "bytes_per_token": bytes_per_token, "bytes_source": bytes_source,
        "bound_tokens_per_s": None, "achieved_tokens_per_s": achieved_tokens_per_s,
        "percent_of_bound": None, "absent": None,
    }
    if bandwidth_gbs is None:
        block["absent"] = (
            f"no peak memory bandwidth for this device ({bandwidth_source}); "
            "pass --vlm-bandwidth-gbs"
        )
        return block
    if not bytes_per_token:
        block["absent"] = "the backend does not report the bytes its decode step reads"
        return block
    bound = bandwidth_gbs * 1e9 / bytes_per_token
    block["bound_tokens_per_s"] = bound
    if achieved_tokens_per_s is not None:
        block["percent_of_bound"] = 100.0 * achieved_tokens_per_s / bound
    return block
