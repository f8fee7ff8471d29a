"""Image preparation per benchmark: `ImagePrep.max_pixels` (a pixel budget after the
long-edge fit) and `ImagePrep.exif_transpose` (honour the EXIF orientation or not),
validated, hashed into the dataset hash only when not at their defaults (so existing
hashes stay), recorded in the entry, and `vlm_bench.run(prep=...)`."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pytest_vlmbench.datasets import (
    PREP_VERSION,
    DatasetArgumentError,
    FolderDataset,
    ImagePrep,
    Sample,
    SyntheticScenes,
    dataset_hash,
    prep_fields,
    prepare_image,
)
from pytest_vlmbench.datasets.images import fitted_size
from pytest_vlmbench.plugin import options
from pytest_vlmbench.plugin.bench import RunArgumentError, _chosen_prep
from tests.conftest import Project, write_png

ROCKET = Path(__file__).resolve().parent.parent / "fixtures" / "images" / \
    "rocket-exif-orientation-6.jpg"


def _sample(raw: bytes, source: str = "mem") -> Sample:
    return Sample(id="x", source=source, load_image=lambda: raw, description=None, truth={})


def _png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_pixels": 0}, r"^ImagePrep\(max_pixels=0\): max_pixels must be a whole number of at "
                        r"least 1 \(or None for no pixel budget\)$"),
    ({"max_pixels": -5}, r"^ImagePrep\(max_pixels=-5\): "),
    ({"max_pixels": True}, r"^ImagePrep\(max_pixels=True\): "),
    ({"max_pixels": 1.5}, r"^ImagePrep\(max_pixels=1\.5\): "),
    ({"exif_transpose": "no"}, r"^ImagePrep\(exif_transpose='no'\): exif_transpose must be "
                               r"True or False$"),
    ({"exif_transpose": 0}, r"^ImagePrep\(exif_transpose=0\): "),
    ({"long_edge": "448"}, r"^ImagePrep\(long_edge='448'\): long_edge must be a whole"),
])
def test_new_fields_are_checked_in_one_line(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(DatasetArgumentError, match=message) as caught:
        ImagePrep(**kwargs)
    assert "\n" not in str(caught.value)


def test_exif_orientation_is_honoured_or_ignored() -> None:
    raw = ROCKET.read_bytes()
    with Image.open(ROCKET) as stored:
        assert stored.size == (427, 640)
        assert stored.getexif().get(0x0112) == 6  # rotate 90 degrees to show upright
    upright = prepare_image(_sample(raw), ImagePrep(long_edge=448))
    as_stored = prepare_image(_sample(raw), ImagePrep(long_edge=448, exif_transpose=False))
    assert (upright.width, upright.height) == (448, 299)
    assert (as_stored.width, as_stored.height) == (299, 448)
    assert upright.sha256 != as_stored.sha256
    with Image.open(io.BytesIO(as_stored.jpeg)) as sent:
        assert sent.size == (299, 448)
        assert sent.getexif().get(0x0112) is None  # no orientation left to re-apply


def test_max_pixels_downscales_after_the_long_edge_fit() -> None:
    raw = _png((4000, 3000))
    prepared = prepare_image(_sample(raw), ImagePrep(long_edge=1000, max_pixels=200_000))
    assert (prepared.width, prepared.height) == (516, 387)  # 1000x750 x sqrt(0.2667)
    assert prepared.width * prepared.height <= 200_000
    with Image.open(io.BytesIO(prepared.jpeg)) as sent:
        assert sent.size == (516, 387)
    # A budget the long-edge fit already meets changes nothing.
    same = prepare_image(_sample(raw), ImagePrep(long_edge=400, max_pixels=120_000))
    plain = prepare_image(_sample(raw), ImagePrep(long_edge=400))
    assert (same.width, same.height) == (400, 300)
    assert same.sha256 == plain.sha256
    # A small image is never enlarged, but a budget still shrinks it.
    small = prepare_image(_sample(_png((100, 50))), ImagePrep(max_pixels=1250))
    assert (small.width, small.height) == (50, 25)


@settings(max_examples=200, deadline=None)
@given(width=st.integers(1, 9000), height=st.integers(1, 9000),
       long_edge=st.integers(1, 4096),
       max_pixels=st.one_of(st.none(), st.integers(1, 4_000_000)))
def test_fitted_size_keeps_every_limit(width: int, height: int, long_edge: int,
                                       max_pixels: int | None) -> None:
    w, h = fitted_size(width, height, long_edge, max_pixels)
    assert 1 <= w <= width
    assert 1 <= h <= height
    assert max(w, h) <= max(long_edge, 1) or max(width, height) <= long_edge
    if max_pixels is not None:
        assert w * h <= max_pixels or (w, h) == (1, 1) or min(w, h) == 1
    if max_pixels is None and max(width, height) <= long_edge:
        assert (w, h) == (width, height)
    if max_pixels is not None and min(w, h) > 4:
        assert math.isclose(w / h, width / height, rel_tol=0.25)


def _old_style_hash(name: str, fingerprint: str, prep: dict[str, Any]) -> str:
    payload = {"dataset": name, "fingerprint": fingerprint, "prep": prep,
               "prep_version": PREP_VERSION}
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


def test_defaults_keep_the_hash_datasets_had_and_new_values_change_it() -> None:
    dataset = SyntheticScenes(2)
    assert PREP_VERSION == 1  # default outputs did not change
    for prep in (ImagePrep(), ImagePrep(long_edge=224, jpeg_quality=70)):
        before = {"long_edge": prep.long_edge, "jpeg_quality": prep.jpeg_quality}
        assert dataset_hash(dataset, prep) == _old_style_hash(
            dataset.name, dataset.fingerprint(), before)
    base = dataset_hash(dataset, ImagePrep())
    hashes = {base, dataset_hash(dataset, ImagePrep(max_pixels=100_000)),
              dataset_hash(dataset, ImagePrep(max_pixels=50_000)),
              dataset_hash(dataset, ImagePrep(exif_transpose=False))}
    assert len(hashes) == 4
    assert set(prep_fields(ImagePrep())) == {f.name for f in dataclasses.fields(ImagePrep)}
    assert prep_fields(ImagePrep(max_pixels=9, exif_transpose=False)) == {
        "long_edge": 448, "jpeg_quality": 90, "max_pixels": 9, "exif_transpose": False}


def test_run_takes_prep_or_image_size_but_not_two_long_edges() -> None:
    assert _chosen_prep(None, None, 448) == ImagePrep(long_edge=448)
    assert _chosen_prep(None, 224, 448) == ImagePrep(long_edge=224)
    given_prep = ImagePrep(long_edge=320, max_pixels=50_000, exif_transpose=False)
    assert _chosen_prep(given_prep, None, 448) is given_prep
    assert _chosen_prep(given_prep, 320, 448) is given_prep
    with pytest.raises(RunArgumentError, match=(
            r"^vlm_bench.run: image_size=224 and prep=ImagePrep\(long_edge=320\) disagree; "
            r"give the long edge once \(in prep\)$")):
        _chosen_prep(given_prep, 224, 448)
    with pytest.raises(RunArgumentError, match=r"^vlm_bench.run: prep must be a "):
        _chosen_prep({"long_edge": 320}, None, 448)


PREP_TEST = """
from pytest_vlmbench.datasets import FolderDataset, ImagePrep
from tiny_tasks import CAPTION

PREP = ImagePrep(long_edge=64, jpeg_quality=80, max_pixels=2000, exif_transpose=False)

def test_prep(vlm_bench):
    vlm_bench.run(CAPTION, FolderDataset("imgs"), samples=2, prep=PREP)

def test_both(vlm_bench):
    vlm_bench.run(CAPTION, FolderDataset("imgs"), samples=1, image_size=32, prep=PREP)
"""


def test_a_benchmark_records_its_own_preparation(project: Project) -> None:
    images = project.pytester.path / "imgs"
    write_png(images / "a.png")
    write_png(images / "b.png", (10, 200, 10))
    project.pytester.makepyfile(test_bench=PREP_TEST)
    out = project.run(f"{options.WARMUP}=0", f"{options.THREADS}=1",
                      f"{options.MODELS}=tiny-vision")
    out.run.assert_outcomes(passed=1, failed=1)
    out.run.stdout.fnmatch_lines(["*vlm_bench.run: image_size=32 and prep=ImagePrep("
                                  "long_edge=64) disagree*"])
    (entry,) = out.doc()["benchmarks"]
    prep = ImagePrep(long_edge=64, jpeg_quality=80, max_pixels=2000, exif_transpose=False)
    assert entry["dataset"]["prep"] == {"long_edge": 64, "jpeg_quality": 80,
                                        "max_pixels": 2000, "exif_transpose": False}
    assert entry["dataset"]["hash"] == dataset_hash(FolderDataset(images), prep)
    assert entry["dataset"]["hash"] != dataset_hash(FolderDataset(images),
                                                    ImagePrep(long_edge=64, jpeg_quality=80))
