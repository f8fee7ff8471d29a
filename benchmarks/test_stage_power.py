"""A non-model stage on the power meter: preparing the photo folder, as a pipeline would.

`vlm_power.measure()` gives the stage's energy on the same meter as the benchmarks
(absent, with the reason, on a machine without one), and `perf_counter_ns` beside it
times the same work; both land in the results document (`windows`) under this test's
id. It takes well under a second on a CPU.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pytest_vlmbench.datasets import FolderDataset, ImagePrep, prepare_image

PHOTOS = Path(__file__).resolve().parent.parent / "fixtures" / "images"


def test_prepare_photos(vlm_power: Any) -> None:
    """Decode, orient, resize and re-encode every photo, as a model would receive it."""
    photos = FolderDataset(PHOTOS)
    prep = ImagePrep()
    with vlm_power.measure("prepare_photos") as stage:
        start = time.perf_counter_ns()
        prepared = [prepare_image(sample, prep) for sample in photos.samples()]
        elapsed_ns = time.perf_counter_ns() - start
    assert len(prepared) == len(list(photos.samples())) > 0
    assert all(max(p.width, p.height) <= prep.long_edge for p in prepared)
    assert all(p.jpeg[:2] == b"\xff\xd8" for p in prepared)  # JPEG, as the model gets it
    # The window spans the timed work and little else.
    assert elapsed_ns / 1e9 <= stage.duration_s < elapsed_ns / 1e9 + 0.5
    if stage.energy_j is None:  # no meter here: absent, and why, never zero
        assert stage.absent_reason
    else:
        assert stage.energy_j > 0
        assert stage.avg_power_w == stage.energy_j / stage.duration_s
