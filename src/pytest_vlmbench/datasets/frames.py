"""How a video scene's sampled frames reach a model: the layouts.

Each frame is fitted like a photo (`images.fitted_size`: the long edge, then the pixel
budget) and encoded like one (JPEG at the preparation's quality, no optimize pass, no
progressive scan, no metadata), so a frame and a photo of the same pixels cost a model
the same. Then:

- ``images``: one image per frame, in time order (models that take several images);
- ``panorama``: the frames side by side, left to right in time order, as one image
  (models that take one image see the whole scene);
- ``grid``: ``ceil(sqrt(n))`` columns, as many rows as needed, filled row by row in
  time order, empty cells black;
- ``middle``: the scene's middle frame alone (the cheapest view of a scene).

A composite (panorama, grid) is built from frames fitted to the long edge, then shrunk
as a whole to the pixel budget (``ImagePrep.max_pixels``) if it exceeds it, as a
pipeline with a budget would shrink any image. Pure Pillow, imported inside the
functions.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pytest_vlmbench.datasets import ImagePrep, PreparedImage
from pytest_vlmbench.datasets.images import _fit, fitted_size

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["LAYOUTS", "Layout", "composite_size", "fitted_frame_size", "grid", "grid_shape",
           "lay_out", "panorama"]

Layout = Literal["images", "panorama", "grid", "middle"]
LAYOUTS: tuple[Layout, ...] = ("images", "panorama", "grid", "middle")

_EMPTY_CELL = (0, 0, 0)


def grid_shape(count: int) -> tuple[int, int]:
    """(columns, rows) of a grid of ``count`` frames: ``ceil(sqrt(count))`` columns."""
    if count < 1:
        raise ValueError("a grid needs at least one frame")
    columns = math.isqrt(count - 1) + 1
    return columns, -(-count // columns)


def composite_size(layout: Layout, count: int, width: int, height: int) -> tuple[int, int]:
    """The size of ``count`` frames of ``width`` x ``height`` side by side (panorama) or
    in a grid, before any pixel budget."""
    if layout == "panorama":
        return count * width, height
    if layout == "grid":
        columns, rows = grid_shape(count)
        return columns * width, rows * height
    raise ValueError(f"{layout!r} is not a composite layout")


def _open(png: bytes) -> Image.Image:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as opened:
        return opened.convert("RGB")


def panorama(frames: Sequence[Image.Image]) -> Image.Image:
    """The frames side by side, left to right, top-aligned (one video's frames share a
    size, so nothing is padded in practice)."""
    from PIL import Image

    canvas = Image.new("RGB", (sum(f.width for f in frames), max(f.height for f in frames)),
                       _EMPTY_CELL)
    x = 0
    for frame in frames:
        canvas.paste(frame, (x, 0))
        x += frame.width
    return canvas


def grid(frames: Sequence[Image.Image]) -> Image.Image:
    """The frames in `grid_shape` cells of the largest frame's size, row by row, empty
    cells black."""
    from PIL import Image

    columns, rows = grid_shape(len(frames))
    cell_w, cell_h = max(f.width for f in frames), max(f.height for f in frames)
    canvas = Image.new("RGB", (columns * cell_w, rows * cell_h), _EMPTY_CELL)
    for i, frame in enumerate(frames):
        canvas.paste(frame, ((i % columns) * cell_w, (i // columns) * cell_h))
    return canvas


def _encode(image: Image.Image, prep: ImagePrep, source: str) -> PreparedImage:
    """JPEG-encode as `prepare_image` does, so frames and photos are comparable."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=prep.jpeg_quality, optimize=False,
               progressive=False)
    jpeg = buffer.getvalue()
    return PreparedImage(jpeg=jpeg, sha256=hashlib.sha256(jpeg).hexdigest(),
                         width=image.width, height=image.height, source=source)


def lay_out(frames: Sequence[bytes], times_s: Sequence[float], layout: Layout,
            prep: ImagePrep, *, video: str, scene: int) -> list[PreparedImage]:
    """The images a model is sent for one scene: ``frames`` (lossless PNG bytes at the
    source resolution, in time order, shown at ``times_s``) laid out as ``layout``.

    ``middle`` sends the middle one of the frames given (index ``len // 2``; the video
    dataset gives it just the scene's middle frame). Sources name the video and the
    frame's time (``clip.mp4@3.250s``) or the scene (``clip.mp4#scene 2 panorama of 2
    frames``), so a failed request points at what it showed.

    Example::

        lay_out([png_a, png_b], [0.0, 1.0], "panorama", ImagePrep(), video="clip.mp4",
                scene=0)
    """
    if not frames or len(frames) != len(times_s):
        raise ValueError("lay_out needs one time per frame, and at least one frame")
    if layout == "middle":
        middle = len(frames) // 2
        frames, times_s = [frames[middle]], [times_s[middle]]
    if layout in ("images", "middle"):
        return [
            _encode(_fit(_open(png), prep.long_edge, prep.max_pixels), prep,
                    f"{video}@{time_s:.3f}s")
            for png, time_s in zip(frames, times_s, strict=True)
        ]
    if layout not in ("panorama", "grid"):
        raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    fitted = [_fit(_open(png), prep.long_edge, None) for png in frames]
    combined = panorama(fitted) if layout == "panorama" else grid(fitted)
    if prep.max_pixels is not None:
        # The budget applies to the image sent: fit the composite as a whole, never
        # shrinking its long edge further than the frames already were.
        combined = _fit(combined, max(combined.size), prep.max_pixels)
    count = len(frames)
    noun = "frame" if count == 1 else "frames"
    return [_encode(combined, prep, f"{video}#scene {scene} {layout} of {count} {noun}")]


def fitted_frame_size(width: int, height: int, prep: ImagePrep) -> tuple[int, int]:
    """The size each frame of a composite is fitted to (the long edge only; the pixel
    budget applies to the composite)."""
    return fitted_size(width, height, prep.long_edge)
