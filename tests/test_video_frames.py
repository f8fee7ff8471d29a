"""The layouts a video scene's frames are sent in (datasets/frames.py): pure Pillow, so
these tests build their frames as PNGs of distinct colours and read the pixels back."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from pytest_vlmbench.datasets import ImagePrep
from pytest_vlmbench.datasets.frames import (
    composite_size,
    fitted_frame_size,
    grid_shape,
    lay_out,
)
from pytest_vlmbench.datasets.images import fitted_size

COLOURS = [(230, 20, 20), (20, 200, 20), (20, 20, 230), (240, 230, 20), (20, 220, 230)]
TIMES = [0.0, 0.5, 1.0, 1.5, 2.0]


def png(colour: tuple[int, int, int], size: tuple[int, int] = (160, 90)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def decoded(jpeg: bytes) -> Image.Image:
    with Image.open(io.BytesIO(jpeg)) as image:
        assert image.format == "JPEG"
        return image.convert("RGB")


def near(pixel: object, colour: tuple[int, int, int], tolerance: int = 12) -> bool:
    """JPEG moves a flat colour by a few levels."""
    assert isinstance(pixel, tuple)
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True))


FRAMES = [png(c) for c in COLOURS]


def test_images_are_one_fitted_jpeg_per_frame_in_time_order() -> None:
    prep = ImagePrep(long_edge=80)
    images = lay_out(FRAMES[:3], TIMES[:3], "images", prep, video="clip.mp4", scene=1)
    assert [i.source for i in images] == ["clip.mp4@0.000s", "clip.mp4@0.500s",
                                         "clip.mp4@1.000s"]
    for image, colour in zip(images, COLOURS, strict=False):
        assert (image.width, image.height) == fitted_size(160, 90, 80) == (80, 45)
        picture = decoded(image.jpeg)
        assert picture.size == (80, 45)
        assert near(picture.getpixel((40, 22)), colour)


def test_images_honour_the_pixel_budget_like_a_photo() -> None:
    prep = ImagePrep(long_edge=160, max_pixels=2000)
    (image,) = lay_out(FRAMES[:1], TIMES[:1], "images", prep, video="v", scene=0)
    assert (image.width, image.height) == fitted_size(160, 90, 160, 2000)
    assert image.width * image.height <= 2000


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_panorama_is_the_frames_side_by_side_in_time_order(count: int) -> None:
    prep = ImagePrep(long_edge=64)
    (image,) = lay_out(FRAMES[:count], TIMES[:count], "panorama", prep, video="clip.mp4",
                       scene=2)
    width, height = fitted_frame_size(160, 90, prep)
    assert (width, height) == (64, 36)
    assert (image.width, image.height) == (count * width, height)
    assert (image.width, image.height) == composite_size("panorama", count, width, height)
    noun = "frame" if count == 1 else "frames"
    assert image.source == f"clip.mp4#scene 2 panorama of {count} {noun}"
    picture = decoded(image.jpeg)
    for cell in range(count):  # the left cell is the first frame, and so on
        assert near(picture.getpixel((cell * width + width // 2, height // 2)), COLOURS[cell])


def test_panorama_shrinks_as_a_whole_to_the_pixel_budget() -> None:
    prep = ImagePrep(long_edge=64, max_pixels=3000)
    (image,) = lay_out(FRAMES[:3], TIMES[:3], "panorama", prep, video="v", scene=0)
    assert (image.width, image.height) == fitted_size(192, 36, 192, 3000)
    assert image.width * image.height <= 3000
    assert image.width > 2 * image.height  # still a strip, not three squashed frames
    picture = decoded(image.jpeg)
    assert near(picture.getpixel((image.width // 6, image.height // 2)), COLOURS[0])
    assert near(picture.getpixel((5 * image.width // 6, image.height // 2)), COLOURS[2])


@pytest.mark.parametrize(("count", "shape"), [(1, (1, 1)), (2, (2, 1)), (3, (2, 2)),
                                              (4, (2, 2)), (5, (3, 2)), (9, (3, 3)),
                                              (10, (4, 3))])
def test_grid_shape(count: int, shape: tuple[int, int]) -> None:
    assert grid_shape(count) == shape


@given(st.integers(min_value=1, max_value=10_000))
def test_grid_shape_holds_every_frame_in_the_fewest_rows(count: int) -> None:
    columns, rows = grid_shape(count)
    assert (columns - 1) ** 2 < count <= columns ** 2
    assert (rows - 1) * columns < count <= rows * columns


def test_grid_is_row_major_in_time_order_with_black_empty_cells() -> None:
    prep = ImagePrep(long_edge=64)
    (image,) = lay_out(FRAMES[:3], TIMES[:3], "grid", prep, video="clip.mp4", scene=0)
    width, height = 64, 36
    assert (image.width, image.height) == (2 * width, 2 * height)
    assert image.source == "clip.mp4#scene 0 grid of 3 frames"
    picture = decoded(image.jpeg)
    cells = {(0, 0): COLOURS[0], (1, 0): COLOURS[1], (0, 1): COLOURS[2],
             (1, 1): (0, 0, 0)}
    for (column, row), colour in cells.items():
        centre = (column * width + width // 2, row * height + height // 2)
        assert near(picture.getpixel(centre), colour)


def test_middle_sends_the_middle_frame_alone() -> None:
    prep = ImagePrep(long_edge=80)
    (image,) = lay_out(FRAMES[:3], TIMES[:3], "middle", prep, video="clip.mp4", scene=0)
    assert image.source == "clip.mp4@0.500s"
    assert near(decoded(image.jpeg).getpixel((40, 22)), COLOURS[1])
    (alone,) = lay_out(FRAMES[2:3], TIMES[2:3], "middle", prep, video="clip.mp4", scene=0)
    assert alone.source == "clip.mp4@1.000s"


def test_the_same_frames_give_the_same_bytes() -> None:
    prep = ImagePrep(long_edge=64)
    first = lay_out(FRAMES, TIMES, "grid", prep, video="v", scene=0)
    assert first == lay_out(FRAMES, TIMES, "grid", prep, video="v", scene=0)
    other = lay_out(FRAMES, TIMES, "grid", ImagePrep(long_edge=64, jpeg_quality=50),
                    video="v", scene=0)
    assert first[0].sha256 != other[0].sha256


def test_frames_are_never_upscaled() -> None:
    (image,) = lay_out([png(COLOURS[0], (40, 30))], [0.0], "images", ImagePrep(), video="v",
                       scene=0)
    assert (image.width, image.height) == (40, 30)


def test_mismatched_times_or_an_unknown_layout_are_refused() -> None:
    with pytest.raises(ValueError, match="one time per frame"):
        lay_out(FRAMES[:2], TIMES[:1], "images", ImagePrep(), video="v", scene=0)
    with pytest.raises(ValueError, match="one time per frame"):
        lay_out([], [], "images", ImagePrep(), video="v", scene=0)
    with pytest.raises(ValueError, match="unknown layout 'mosaic'"):
        lay_out(FRAMES[:1], TIMES[:1], "mosaic", ImagePrep(), video="v",  # type: ignore[arg-type]
                scene=0)
