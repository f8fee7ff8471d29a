"""Tests for the dataset layer: preparation, the folder source, synthetic scenes, the registry."""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from pytest_vlmbench.datasets import (
    ENTRY_POINT_GROUP,
    Dataset,
    DatasetArgumentError,
    DatasetError,
    DatasetNotes,
    FolderDataset,
    ImageError,
    ImagePrep,
    Sample,
    SyntheticScenes,
    UnknownDatasetError,
    available_datasets,
    dataset_hash,
    dataset_notes,
    get_dataset,
    prepare_image,
    register_dataset,
    unregister_dataset,
)
from pytest_vlmbench.datasets.images import DEFAULT_EXTENSIONS
from pytest_vlmbench.datasets.synthetic import COLOURS, POSITIONS, SHAPES
from pytest_vlmbench.plugin import options
from tests.conftest import Project

FIXTURE_IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"
ROCKET = "rocket-exif-orientation-6.jpg"


def _bytes_sample(raw: bytes, source: str = "memory:test") -> Sample:
    return Sample(id="x", source=source, load_image=lambda: raw, description=None, truth={})


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _decode(jpeg: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(jpeg))
    image.load()
    return image


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    shutil.copytree(FIXTURE_IMAGES, folder)
    return folder


# --- prepare_image ---------------------------------------------------------


def test_fixture_folder_prepares_every_photo() -> None:
    dataset = FolderDataset(FIXTURE_IMAGES)
    prep = ImagePrep(long_edge=320, jpeg_quality=80)
    ids = [sample.id for sample in dataset.samples()]
    assert ids == sorted(ids)
    assert len(ids) == 5  # PROVENANCE.md is not an image
    for sample in dataset.samples():
        prepared = prepare_image(sample, prep)
        assert prepared.sha256 == hashlib.sha256(prepared.jpeg).hexdigest()
        assert max(prepared.width, prepared.height) == 320
        decoded = _decode(prepared.jpeg)
        assert decoded.format == "JPEG"
        assert decoded.mode == "RGB"  # including the greyscale coins
        assert decoded.size == (prepared.width, prepared.height)
        assert not decoded.getexif()


def test_exif_orientation_is_applied_before_resizing() -> None:
    raw = (FIXTURE_IMAGES / ROCKET).read_bytes()
    stored = Image.open(io.BytesIO(raw))
    assert stored.getexif()[0x0112] == 6
    assert stored.width < stored.height  # pixels are stored sideways

    prepared = prepare_image(_bytes_sample(raw), ImagePrep(long_edge=64))
    assert (prepared.width, prepared.height) == (64, 43)
    expected = (
        ImageOps.exif_transpose(stored).convert("RGB").resize((64, 43), Image.Resampling.LANCZOS)
    )
    got = _decode(prepared.jpeg)
    # Upright: the night sky at the top is darker than the lit launch pad below.
    top = sum(got.crop((0, 0, 64, 8)).convert("L").tobytes())
    bottom = sum(got.crop((0, 35, 64, 43)).convert("L").tobytes())
    assert top < bottom
    pairs = zip(got.convert("L").tobytes(), expected.convert("L").tobytes(), strict=True)
    diff = [abs(a - b) for a, b in pairs]
    assert sum(diff) / len(diff) < 8


def test_never_upscales_and_keeps_aspect() -> None:
    raw = _png(Image.new("RGB", (40, 10), (10, 20, 30)))
    prepared = prepare_image(_bytes_sample(raw), ImagePrep(long_edge=448))
    assert (prepared.width, prepared.height) == (40, 10)

    tall = prepare_image(
        _bytes_sample(_png(Image.new("RGB", (10, 1000)))), ImagePrep(long_edge=100)
    )
    assert (tall.width, tall.height) == (1, 100)


def test_alpha_is_flattened_on_white() -> None:
    image = Image.new("RGBA", (20, 20), (255, 0, 0, 0))  # fully transparent red
    image.paste((0, 0, 255, 255), (0, 0, 10, 20))  # opaque blue left half
    prepared = prepare_image(_bytes_sample(_png(image)), ImagePrep())
    got = _decode(prepared.jpeg)
    right = got.getpixel((15, 10))
    left = got.getpixel((3, 10))
    assert isinstance(right, tuple)
    assert isinstance(left, tuple)
    assert min(right) > 240
    assert left[2] > 200
    assert left[0] < 40


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(Image.new("P", (8, 8), 3), id="palette"),
        pytest.param(Image.new("LA", (8, 8), (100, 0)), id="grey-alpha"),
        pytest.param(Image.new("1", (8, 8), 1), id="bilevel"),
        pytest.param(Image.new("I;16", (8, 8), 65535), id="16-bit"),
    ],
)
def test_any_mode_becomes_rgb(image: Image.Image) -> None:
    got = _decode(prepare_image(_bytes_sample(_png(image)), ImagePrep()).jpeg)
    assert got.mode == "RGB"
    assert got.size == (8, 8)


def test_sixteen_bit_white_stays_white_and_mid_grey_stays_grey() -> None:
    image = Image.new("I;16", (8, 8), 32768)
    pixel = _decode(prepare_image(_bytes_sample(_png(image)), ImagePrep()).jpeg).getpixel((4, 4))
    assert isinstance(pixel, tuple)
    assert all(120 <= channel <= 136 for channel in pixel)


def test_preparation_is_deterministic() -> None:
    sample = next(FolderDataset(FIXTURE_IMAGES).samples())
    first = prepare_image(sample, ImagePrep())
    second = prepare_image(sample, ImagePrep())
    assert first == second
    assert prepare_image(sample, ImagePrep(jpeg_quality=50)).sha256 != first.sha256


def test_data_url_round_trips() -> None:
    prepared = prepare_image(_bytes_sample(_png(Image.new("RGB", (4, 4)))), ImagePrep())
    prefix = "data:image/jpeg;base64,"
    url = prepared.data_url()
    assert url.startswith(prefix)
    assert base64.b64decode(url[len(prefix) :]) == prepared.jpeg
    assert "jpeg=" not in repr(prepared)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(b"", "file is empty (0 bytes)", id="zero-byte"),
        pytest.param(b"not an image at all", "cannot identify image file", id="text"),
        pytest.param(b"\xff\xd8\xff\xe0garbage", "cannot decode image", id="bad-jpeg-header"),
    ],
)
def test_unusable_bytes_raise_image_error_naming_the_source(content: bytes, reason: str) -> None:
    with pytest.raises(ImageError, match=r"^fixtures/images/x\.jpg: ") as caught:
        prepare_image(_bytes_sample(content, "fixtures/images/x.jpg"), ImagePrep())
    assert caught.value.source == "fixtures/images/x.jpg"
    assert reason in str(caught.value)


@settings(max_examples=25, deadline=None)
@given(fraction=st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_truncated_jpeg_is_detected_wherever_it_is_cut(fraction: float) -> None:
    raw = (FIXTURE_IMAGES / "chelsea.jpg").read_bytes()
    kept = raw[: int(len(raw) * fraction)]  # at least the last byte is missing
    with pytest.raises(ImageError, match=r"^cut: "):
        prepare_image(_bytes_sample(kept, "cut"), ImagePrep())


def test_text_only_sample_has_no_image() -> None:
    sample = Sample(id="t", source="text:1", load_image=None, description="words", truth={})
    with pytest.raises(ImageError, match="text-only"):
        prepare_image(sample, ImagePrep())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"long_edge": 0}, "long_edge"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
        ({"jpeg_quality": 101}, "jpeg_quality"),
    ],
)
def test_image_prep_rejects_nonsense(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(DatasetArgumentError, match=message):
        ImagePrep(**kwargs)


# --- FolderDataset ---------------------------------------------------------


def test_corrupt_files_are_samples_that_fail_one_by_one(photo_folder: Path) -> None:
    (photo_folder / "empty.jpg").write_bytes(b"")
    (photo_folder / "notes.png").write_text("hello")
    good = (photo_folder / "chelsea.jpg").read_bytes()
    (photo_folder / "half.jpg").write_bytes(good[: len(good) // 2])
    dataset = FolderDataset(photo_folder)
    outcomes: dict[str, str] = {}
    messages: dict[str, str] = {}
    for sample in dataset.samples():
        try:
            prepare_image(sample, ImagePrep(long_edge=32))
            outcomes[sample.id] = "ok"
        except ImageError as error:
            outcomes[sample.id] = error.reason
            messages[sample.id] = str(error)
    for image_id, message in messages.items():
        assert message.startswith(f"{photo_folder / image_id}: ")
    assert outcomes["empty.jpg"] == "file is empty (0 bytes)"
    assert "cannot identify image file" in outcomes["notes.png"]
    assert "truncated" in outcomes["half.jpg"]
    assert outcomes["chelsea.jpg"] == "ok"
    assert sum(outcome == "ok" for outcome in outcomes.values()) == 5


def test_file_removed_after_listing_is_an_image_error(photo_folder: Path) -> None:
    dataset = FolderDataset(photo_folder)
    (photo_folder / "coffee.jpg").unlink()
    sample = next(s for s in dataset.samples() if s.id == "coffee.jpg")
    with pytest.raises(ImageError, match=r"coffee\.jpg: file not found"):
        prepare_image(sample, ImagePrep())
    assert len(dataset.fingerprint()) == 64  # still computable


def test_listing_is_recursive_case_insensitive_and_skips_hidden(photo_folder: Path) -> None:
    (photo_folder / "sub").mkdir()
    (photo_folder / "sub" / "LOUD.JPG").write_bytes(b"x")
    (photo_folder / "._chelsea.jpg").write_bytes(b"resource fork")
    (photo_folder / ".cache").mkdir()
    (photo_folder / ".cache" / "thumb.jpg").write_bytes(b"x")
    ids = [s.id for s in FolderDataset(photo_folder).samples()]
    assert "sub/LOUD.JPG" in ids
    assert not any(part.startswith(".") for i in ids for part in i.split("/"))
    assert "sub/LOUD.JPG" not in [
        s.id for s in FolderDataset(photo_folder, recursive=False).samples()
    ]
    with pytest.raises(
        DatasetArgumentError,
        match=r"\): no images found \(no \.jpeg files; found 7 other files, e\.g\. "
        r"PROVENANCE\.md\)",
    ):
        FolderDataset(photo_folder, extensions=(".JPEG",))


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetArgumentError, match=r"nowhere'\): folder not found$"):
        FolderDataset(missing)


def test_file_instead_of_folder_is_a_clear_error(tmp_path: Path) -> None:
    file = tmp_path / "a.jpg"
    file.write_bytes(b"x")
    with pytest.raises(DatasetArgumentError, match=r"a\.jpg'\): is a file, not a folder"):
        FolderDataset(file)


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no photos here")
    with pytest.raises(
        DatasetArgumentError,
        match=r"no images found \(no \.bmp \.gif \.jpeg \.jpg \.pbm \.pgm \.png "
        r"\.pnm \.ppm \.tif \.tiff \.webp files; found 1 other file, e\.g\. readme\.txt\)",
    ):
        FolderDataset(tmp_path)


def test_limit_is_a_seeded_sorted_subset() -> None:
    every = [s.id for s in FolderDataset(FIXTURE_IMAGES).samples()]
    picks = {
        seed: [s.id for s in FolderDataset(FIXTURE_IMAGES, limit=3, seed=seed).samples()]
        for seed in range(6)
    }
    for ids in picks.values():
        assert len(ids) == 3
        assert ids == sorted(ids)
        assert set(ids) <= set(every)
    assert picks[0] == [s.id for s in FolderDataset(FIXTURE_IMAGES, limit=3, seed=0).samples()]
    assert len({tuple(ids) for ids in picks.values()}) > 1
    assert [s.id for s in FolderDataset(FIXTURE_IMAGES, limit=50).samples()] == every
    with pytest.raises(DatasetArgumentError, match="limit"):
        FolderDataset(FIXTURE_IMAGES, limit=0)


def test_folder_fingerprint_follows_content_not_location(
    photo_folder: Path, tmp_path: Path
) -> None:
    original = FolderDataset(FIXTURE_IMAGES).fingerprint()
    assert FolderDataset(photo_folder).fingerprint() == original
    assert FolderDataset(photo_folder, limit=2).fingerprint() != original
    (photo_folder / "chelsea.jpg").write_bytes(b"changed")
    assert FolderDataset(photo_folder).fingerprint() != original
    renamed = tmp_path / "renamed"
    shutil.copytree(FIXTURE_IMAGES, renamed)
    (renamed / "coffee.jpg").rename(renamed / "coffee2.jpg")
    assert FolderDataset(renamed).fingerprint() != original


# Every format of DEFAULT_EXTENSIONS, written by Pillow itself: (file name, Pillow
# format, mode). The GIF is animated; its first frame is red, its second blue.
FORMATS = [
    ("a.bmp", "BMP", "RGB"),
    ("b.gif", "GIF", "P"),
    ("c.jpeg", "JPEG", "RGB"),
    ("d.jpg", "JPEG", "L"),
    ("e.pbm", "PPM", "1"),
    ("f.pgm", "PPM", "L"),
    ("g.png", "PNG", "RGBA"),
    ("h.pnm", "PPM", "RGB"),
    ("i.ppm", "PPM", "RGB"),
    ("j.tif", "TIFF", "CMYK"),
    ("k.tiff", "TIFF", "I;16"),
    ("l.webp", "WEBP", "RGBA"),
]
RED, BLUE = (255, 0, 0), (0, 0, 255)


def _write_every_format(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, fmt, mode in FORMATS:
        if fmt == "GIF":
            frames = [Image.new("RGB", (24, 16), colour).convert("P") for colour in (RED, BLUE)]
            frames[0].save(folder / name, format="GIF", save_all=True,
                           append_images=frames[1:], duration=100, loop=0)
        else:
            Image.new("RGB", (24, 16), RED).convert(mode).save(folder / name, format=fmt)


def test_every_default_extension_is_a_format_pillow_opens() -> None:
    Image.init()
    registered = Image.registered_extensions()
    assert sorted({name.rsplit(".", 1)[1] for name, _, _ in FORMATS}) == sorted(
        ext.lstrip(".") for ext in DEFAULT_EXTENSIONS
    )
    for ext in DEFAULT_EXTENSIONS:
        assert registered.get(ext) in Image.OPEN, ext


def test_folder_reads_every_pillow_format_and_a_gif_as_its_first_frame(tmp_path: Path) -> None:
    folder = tmp_path / "formats"
    _write_every_format(folder)
    with Image.open(folder / "b.gif") as gif:
        assert getattr(gif, "n_frames", 1) == 2  # really animated
    dataset = FolderDataset(folder)
    assert [s.id for s in dataset.samples()] == [name for name, _, _ in FORMATS]
    assert dataset.skipped == ()
    assert dataset.notes() == []
    for sample in dataset.samples():
        prepared = prepare_image(sample, ImagePrep())
        decoded = _decode(prepared.jpeg)
        assert (decoded.mode, decoded.size) == ("RGB", (24, 16)), sample.id
    gif = next(s for s in dataset.samples() if s.id == "b.gif")
    pixel = _decode(prepare_image(gif, ImagePrep()).jpeg).getpixel((12, 8))
    assert isinstance(pixel, tuple)
    assert pixel[0] > 200
    assert pixel[2] < 60  # red: the first frame, not the blue second one


def test_files_of_other_extensions_are_skipped_with_one_note(photo_folder: Path) -> None:
    (photo_folder / "notes.txt").write_text("x")
    (photo_folder / "sub").mkdir()
    (photo_folder / "sub" / "clip.mp4").write_bytes(b"x")
    (photo_folder / ".DS_Store").write_bytes(b"x")  # hidden: skipped without a word
    dataset = FolderDataset(photo_folder)
    assert dataset.skipped == ("PROVENANCE.md", "notes.txt", "sub/clip.mp4")
    assert dataset.notes() == [
        f"folder {photo_folder}: skipped 3 files whose extension is not an image one: "
        "PROVENANCE.md, notes.txt, sub/clip.mp4"
    ]
    assert dataset_notes(dataset) == dataset.notes()
    assert isinstance(dataset, DatasetNotes)
    (photo_folder / "z.csv").write_text("x")
    (note,) = FolderDataset(photo_folder).notes()
    assert note.endswith(": PROVENANCE.md, notes.txt, sub/clip.mp4 and 1 more")
    assert FolderDataset(photo_folder, recursive=False).skipped == (
        "PROVENANCE.md", "notes.txt", "z.csv"
    )
    # A dataset without notes (the Protocol is optional) has none.
    assert dataset_notes(SyntheticScenes(1)) == []
    assert not isinstance(SyntheticScenes(1), DatasetNotes)


def test_folder_fingerprint_ignores_extensions_that_choose_the_same_files(
    photo_folder: Path,
) -> None:
    default = FolderDataset(photo_folder)
    jpeg_only = FolderDataset(photo_folder, extensions=(".jpg",))
    assert [s.id for s in jpeg_only.samples()] == [s.id for s in default.samples()]
    assert jpeg_only.fingerprint() == default.fingerprint()
    Image.new("RGB", (8, 8)).save(photo_folder / "new.gif")
    assert FolderDataset(photo_folder).fingerprint() != default.fingerprint()
    assert FolderDataset(photo_folder, extensions=(".jpg",)).fingerprint() == default.fingerprint()


def test_skipped_files_become_a_warning_of_the_benchmark(project: Project) -> None:
    """The whole path: a real inner session on a folder of every format (and a stray
    text file) prepares every image, and the note reaches the results and the terminal."""
    images = project.pytester.path / "imgs"
    _write_every_format(images)
    (images / "README.txt").write_text("where these came from")
    project.pytester.makepyfile(
        test_bench=f"""
from pytest_vlmbench.datasets.images import FolderDataset
from tiny_tasks import CAPTION

def test_folder(vlm_bench):
    vlm_bench.run(CAPTION, FolderDataset({str(images)!r}))
"""
    )
    out = project.run(f"{options.SAMPLES}={len(FORMATS)}", f"{options.WARMUP}=0",
                      f"{options.THREADS}=1", f"{options.MODELS}=tiny-vision")
    out.run.assert_outcomes(passed=1)
    records = out.records()
    assert sorted(r["sample_id"] for r in records) == [name for name, _, _ in FORMATS]
    assert all(r["error"] is None for r in records), [r["error"] for r in records]
    (entry,) = out.doc()["benchmarks"]
    note = f"folder {images}: skipped 1 file whose extension is not an image one: README.txt"
    assert entry["warnings"][0] == note  # first: it is known before the first request
    out.run.stdout.fnmatch_lines([f"warning: *test_folder*: {note}"])


# --- SyntheticScenes -------------------------------------------------------


def _png_of(sample: Sample) -> bytes:
    assert sample.load_image is not None
    return sample.load_image()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**64), index=st.integers(min_value=0, max_value=3))
def test_synthetic_is_deterministic_for_any_seed(seed: int, index: int) -> None:
    first = list(SyntheticScenes(index + 1, seed=seed, size=48).samples())[index]
    again = SyntheticScenes(index + 1, seed=seed, size=48).sample(index)
    assert (first.id, first.source, first.description, first.truth) == (
        again.id,
        again.source,
        again.description,
        again.truth,
    )
    assert _png_of(first) == _png_of(again)
    assert (
        SyntheticScenes(index + 1, seed=seed, size=48).fingerprint()
        == SyntheticScenes(index + 1, seed=seed, size=48).fingerprint()
    )


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(min_value=-(2**63), max_value=2**63),
    size=st.integers(min_value=24, max_value=600),
)
def test_synthetic_truth_is_consistent(seed: int, size: int) -> None:
    sample = SyntheticScenes(1, seed=seed, size=size).sample(0)
    truth = sample.truth
    shapes = truth["shapes"]
    assert 1 <= len(shapes) <= 5
    assert truth["background"] in COLOURS
    assert set(truth["counts"]) == set(SHAPES)
    assert sum(truth["counts"].values()) == len(shapes)
    for name in SHAPES:
        assert truth["counts"][name] == sum(s["shape"] == name for s in shapes)
    positions = [s["position"] for s in shapes]
    assert len(set(positions)) == len(positions)
    assert positions == sorted(positions, key=POSITIONS.index)
    cell = size // 3
    for shape in shapes:
        assert shape["colour"] in COLOURS
        assert shape["colour"] != truth["background"]
        x0, y0, x1, y1 = shape["bbox"]
        assert 0 <= x0 < x1 <= size
        assert 0 <= y0 < y1 <= size
        row, column = divmod(POSITIONS.index(shape["position"]), 3)
        assert column * cell <= x0
        assert x1 <= (column + 1) * cell
        assert row * cell <= y0
        assert y1 <= (row + 1) * cell
        assert shape["colour"] in (sample.description or "")


def test_synthetic_pixels_match_truth() -> None:
    for sample in SyntheticScenes(6, seed=11, size=96).samples():
        image = Image.open(io.BytesIO(_png_of(sample)))
        assert image.format == "PNG"
        assert image.size == (96, 96)
        rgb = image.convert("RGB")
        for shape in sample.truth["shapes"]:
            x0, y0, x1, y1 = shape["bbox"]
            # Lower middle: inside every kind of shape, including an upward triangle.
            centre = ((x0 + x1) // 2, (y0 + 2 * y1) // 3)
            assert rgb.getpixel(centre) == COLOURS[shape["colour"]], (sample.id, shape)
        if not sample.truth["gradient"]:
            occupied = {s["position"] for s in sample.truth["shapes"]}
            free = next((i for i, p in enumerate(POSITIONS) if p not in occupied), None)
            if free is not None:
                row, column = divmod(free, 3)
                corner = (column * 32 + 16, row * 32 + 16)
                assert rgb.getpixel(corner) == COLOURS[sample.truth["background"]]


def test_synthetic_description_reads_well() -> None:
    sample = SyntheticScenes(1, seed=3, size=48).sample(0)
    description = sample.description or ""
    assert description.endswith(".")
    assert f"{len(sample.truth['shapes'])} shape" in description
    for shape in sample.truth["shapes"]:
        where = "in the centre" if shape["position"] == "centre" else f"at the {shape['position']}"
        assert f"{shape['colour']} {shape['shape']} {where}" in description
    assert " a orange" not in description
    assert not description.startswith("A orange")


def test_synthetic_ids_sources_and_stability() -> None:
    few = list(SyntheticScenes(3, seed=7).samples())
    many = list(SyntheticScenes(10, seed=7).samples())
    assert [s.id for s in few] == ["scene-0000", "scene-0001", "scene-0002"]
    assert few[2].source == "synthetic:seed=7/index=2"
    assert [s.truth for s in few] == [s.truth for s in many[:3]]
    assert SyntheticScenes(3, seed=7).fingerprint() != SyntheticScenes(3, seed=8).fingerprint()
    assert SyntheticScenes(3, seed=7).fingerprint() != SyntheticScenes(4, seed=7).fingerprint()
    assert (
        SyntheticScenes(3, seed=7).fingerprint()
        != SyntheticScenes(3, seed=7, size=224).fingerprint()
    )


def test_synthetic_known_fingerprint() -> None:
    # Pinned: changing this means every stored result's dataset hash changes;
    # bump GENERATOR_VERSION when it is on purpose.
    assert SyntheticScenes(4, seed=0, size=448).fingerprint() == PINNED_SYNTHETIC_FINGERPRINT


def test_synthetic_scenes_prepare_like_photos() -> None:
    sample = SyntheticScenes(1, seed=1, size=64).sample(0)
    prepared = prepare_image(sample, ImagePrep(long_edge=32))
    assert (prepared.width, prepared.height) == (32, 32)
    assert prepared.source == "synthetic:seed=1/index=0"


@pytest.mark.parametrize(("kwargs", "message"), [({"n": 0}, "n must"), ({"size": 10}, "size must")])
def test_synthetic_rejects_nonsense(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(DatasetArgumentError, match=message):
        SyntheticScenes(**kwargs)


# --- registry --------------------------------------------------------------


def test_builtins_are_registered() -> None:
    assert {"folder", "synthetic"} <= set(available_datasets())
    synthetic = get_dataset("synthetic", n=2, seed=5)
    assert isinstance(synthetic, SyntheticScenes)
    assert isinstance(synthetic, Dataset)
    folder = get_dataset("folder", path=FIXTURE_IMAGES, limit=2)
    assert isinstance(folder, FolderDataset)


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(KeyError) as caught:
        get_dataset("cocoo")
    assert isinstance(caught.value, UnknownDatasetError)
    assert str(caught.value).startswith("unknown dataset 'cocoo'; known datasets: ")
    assert "folder" in str(caught.value)
    assert "synthetic" in str(caught.value)


class _Tiny:
    name = "tiny"

    def samples(self) -> Iterator[Sample]:
        yield Sample(id="only", source="tiny:0", load_image=None, description="nothing", truth={})

    def fingerprint(self) -> str:
        return "0" * 64


@pytest.fixture
def tiny_registered() -> Iterator[None]:
    register_dataset("tiny", _Tiny)
    yield
    unregister_dataset("tiny")


@pytest.mark.usefixtures("tiny_registered")
def test_register_and_shadowing() -> None:
    assert isinstance(get_dataset("tiny"), _Tiny)
    assert "tiny" in available_datasets()
    register_dataset("tiny", _Tiny)  # same factory again is harmless
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("tiny", SyntheticScenes)
    register_dataset("tiny", SyntheticScenes, replace=True)
    assert isinstance(get_dataset("tiny"), SyntheticScenes)


def test_factory_returning_junk_is_a_type_error() -> None:
    register_dataset("junk", lambda: object())  # type: ignore[arg-type,return-value]
    try:
        with pytest.raises(TypeError, match="'junk' returned object"):
            get_dataset("junk")
    finally:
        unregister_dataset("junk")


def _fake_entry_points(*entries: metadata.EntryPoint) -> object:
    def entry_points(*, group: str) -> list[metadata.EntryPoint]:
        return [entry for entry in entries if entry.group == group]

    return entry_points


def test_entry_points_feed_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = metadata.EntryPoint(
        name="plugin-scenes",
        value="pytest_vlmbench.datasets.synthetic:SyntheticScenes",
        group=ENTRY_POINT_GROUP,
    )
    hijack = metadata.EntryPoint(name="folder", value="nowhere:Nothing", group=ENTRY_POINT_GROUP)
    other = metadata.EntryPoint(name="elsewhere", value="nowhere:Nothing", group="other.group")
    monkeypatch.setattr(metadata, "entry_points", _fake_entry_points(plugin, hijack, other))
    assert "plugin-scenes" in available_datasets()
    assert "elsewhere" not in available_datasets()
    assert isinstance(get_dataset("plugin-scenes", n=1), SyntheticScenes)
    assert isinstance(get_dataset("folder", path=FIXTURE_IMAGES), FolderDataset)


def test_broken_entry_point_names_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = metadata.EntryPoint(
        name="broken", value="no_such_module_xyz:Factory", group=ENTRY_POINT_GROUP
    )
    monkeypatch.setattr(metadata, "entry_points", _fake_entry_points(broken))
    with pytest.raises(
        DatasetError,
        match=r"dataset 'broken': cannot load entry point 'no_such_module_xyz:Factory'",
    ):
        get_dataset("broken")


def test_dataset_hash_covers_preparation() -> None:
    dataset = SyntheticScenes(2)
    base = dataset_hash(dataset, ImagePrep())
    assert base == dataset_hash(SyntheticScenes(2), ImagePrep())
    assert base != dataset_hash(dataset, ImagePrep(long_edge=224))
    assert base != dataset_hash(dataset, ImagePrep(jpeg_quality=80))
    assert base != dataset_hash(SyntheticScenes(2, seed=1), ImagePrep())


PINNED_SYNTHETIC_FINGERPRINT = "2556fffce7b87de3e1a49ffa1e5c1d63f62fde93904d60d0d03c77511d22e79e"


# --- arguments: one line naming the call, before any request -----------------------------


def test_dataset_argument_errors_are_usage_mistakes() -> None:
    from pytest_vlmbench.errors import UsageMistake

    assert issubclass(DatasetArgumentError, DatasetError)
    assert issubclass(DatasetArgumentError, UsageMistake)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda root: FolderDataset(str(root / "photos") + "/"),
         r"^FolderDataset\('.*/photos/'\): folder is empty \(no \.bmp \.gif .* \.webp files\)$"),
        (lambda root: FolderDataset(root / "photos", extensions=("jpg",)),
         r"^FolderDataset\('.*photos', extensions=\('jpg',\)\): folder is empty \(no \.jpg "
         r"files\)$"),
        (lambda root: FolderDataset(root / "photos", extensions=".jpg"),
         r"extensions must be a tuple of suffixes such as \('\.jpg', '\.png'\), not the "
         r"string '\.jpg'$"),
        (lambda root: FolderDataset(root / "photos", extensions=()),
         r"extensions=\(\)\): extensions is empty"),
        (lambda root: FolderDataset(root / "photos", extensions=("",)),
         r"each extension must be a suffix such as '\.jpg', got ''$"),
        (lambda root: FolderDataset(root / "photos", limit=0),
         r"^FolderDataset\('.*photos', limit=0\): limit must be a whole number of at least 1 "
         r"\(or None for every image\), got 0$"),
        (lambda root: FolderDataset(root / "photos", limit=-3), r"limit=-3\): limit must"),
        (lambda root: FolderDataset(root / "photos", limit=2.5), r"limit=2\.5\): limit must"),
        (lambda root: FolderDataset(None), r"^FolderDataset\(None\): path must be a folder"),
        (lambda root: SyntheticScenes(n=0),
         r"^SyntheticScenes\(n=0\): n must be a whole number of at least 1$"),
        (lambda root: SyntheticScenes(-2), r"^SyntheticScenes\(n=-2\): n must"),
        (lambda root: SyntheticScenes(size=0),
         r"^SyntheticScenes\(size=0\): size must be a whole number of at least 24 px$"),
        (lambda root: SyntheticScenes(n=2.0), r"^SyntheticScenes\(n=2\.0\): n must"),
        (lambda root: ImagePrep(long_edge=-1), r"^ImagePrep\(long_edge=-1\): long_edge"),
    ],
    ids=["empty-folder", "empty-for-extensions", "bare-string-extensions", "no-extensions",
         "blank-extension", "limit-0", "limit-negative", "limit-float", "path-none", "n-0",
         "n-negative", "size-0", "n-float", "prep-negative"],
)
def test_bad_arguments_fail_at_construction_naming_the_call(
    tmp_path: Path, build: Any, message: str
) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / ".DS_Store").write_bytes(b"hidden files do not count")
    with pytest.raises(DatasetArgumentError, match=message) as caught:
        build(tmp_path)
    assert "\n" not in str(caught.value)


def test_missing_relative_folder_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetArgumentError) as caught:
        FolderDataset("photos/")
    assert str(caught.value) == f"FolderDataset('photos/'): folder not found (looked in " \
                                f"{tmp_path / 'photos'})"


def test_extensions_are_normalised(photo_folder: Path) -> None:
    """"JPG" and ".jpg" choose the same files; so does a list."""
    by_suffix = [s.id for s in FolderDataset(photo_folder, extensions=(".jpg",)).samples()]
    assert by_suffix
    assert [s.id for s in FolderDataset(photo_folder, extensions=("JPG",)).samples()] == by_suffix
    assert [s.id for s in FolderDataset(photo_folder, extensions=[".Jpg"]).samples()] == by_suffix


def test_a_folder_dataset_is_labelled_by_its_path() -> None:
    from pytest_vlmbench.datasets import dataset_label

    assert dataset_label(FolderDataset(FIXTURE_IMAGES)) == f"folder:{FIXTURE_IMAGES}"
    assert dataset_label(SyntheticScenes(2)) == "synthetic"
