"""Seeded synthetic scenes: coloured shapes on a background, with known answers.

They give quality scorers ground truth (what is where, how many) without a
labelled photo set, and a text-only rendition for models that cannot see.
Every scene comes from its own generator seeded by (seed, index), so scene 3
is the same whether 4 or 400 scenes are asked for.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pytest_vlmbench.datasets import DatasetArgumentError, Sample

# Bump whenever the same (seed, index, size) would draw different pixels.
GENERATOR_VERSION = 1

COLOURS: Mapping[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (30, 80, 220),
    "yellow": (245, 215, 30),
    "purple": (140, 60, 180),
    "orange": (245, 140, 20),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}
SHAPES = ("circle", "square", "triangle")
# Reading order of the 3x3 grid; index = row * 3 + column.
POSITIONS = (
    "top-left",
    "top-centre",
    "top-right",
    "middle-left",
    "centre",
    "middle-right",
    "bottom-left",
    "bottom-centre",
    "bottom-right",
)
MAX_SHAPES = 5
MIN_SIZE = 24

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Shape:
    shape: str
    colour: str
    position: str
    bbox: tuple[int, int, int, int]  # half-open, like Image.crop: x0, y0, x1, y1


@dataclass(frozen=True)
class _Scene:
    size: int
    background: str
    gradient: bool
    shapes: tuple[_Shape, ...]


class _Draws:
    """Random choices built only on ``random.Random.random()``.

    That is the one method whose sequence Python promises to keep across
    versions; ``choice``, ``sample`` and ``randrange`` may change.
    """

    def __init__(self, seed: int, index: int) -> None:
        key = f"pytest-vlmbench/synthetic/v{GENERATOR_VERSION}/{seed}/{index}".encode()
        self._random = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))

    def below(self, n: int) -> int:
        """An integer in ``[0, n)``."""
        return min(int(self._random.random() * n), n - 1)

    def between(self, low: int, high: int) -> int:
        """An integer in ``[low, high]``."""
        return low + self.below(high - low + 1)

    def choice(self, options: Sequence[_T]) -> _T:
        return options[self.below(len(options))]

    def sample(self, options: Sequence[_T], k: int) -> list[_T]:
        """``k`` distinct items (a partial Fisher-Yates shuffle)."""
        pool = list(options)
        for i in range(k):
            j = i + self.below(len(pool) - i)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]


def make_scene(seed: int, index: int, size: int) -> _Scene:
    """Decide everything about scene ``index``; rendering only follows this plan."""
    draws = _Draws(seed, index)
    background = draws.choice(tuple(COLOURS))
    gradient = draws.below(2) == 1
    shape_colours = tuple(name for name in COLOURS if name != background)
    cells = sorted(draws.sample(range(len(POSITIONS)), draws.between(1, MAX_SHAPES)))
    cell = size // 3
    margin = max(1, cell // 16)  # shapes never touch, so none overlaps another
    shapes = []
    for cell_index in cells:
        row, column = divmod(cell_index, 3)
        side = max(4, (cell - 2 * margin) * draws.between(45, 85) // 100)
        slack = cell - 2 * margin - side
        x0 = column * cell + margin + draws.between(0, slack)
        y0 = row * cell + margin + draws.between(0, slack)
        shapes.append(
            _Shape(
                shape=draws.choice(SHAPES),
                colour=draws.choice(shape_colours),
                position=POSITIONS[cell_index],
                bbox=(x0, y0, x0 + side, y0 + side),
            )
        )
    return _Scene(size=size, background=background, gradient=gradient, shapes=tuple(shapes))


def render_png(scene: _Scene) -> bytes:
    """Draw the scene with Pillow; same pixels for the same plan and Pillow version."""
    from PIL import Image, ImageDraw

    size = (scene.size, scene.size)
    top = COLOURS[scene.background]
    if scene.gradient:
        # Fade towards grey so the colour name stays true across the whole image.
        toward = 0 if sum(top) > 384 else 255
        bottom = tuple(round(c + (toward - c) * 0.35) for c in top)
        mask = Image.linear_gradient("L").resize(size, Image.Resampling.BILINEAR)
        image = Image.composite(Image.new("RGB", size, bottom), Image.new("RGB", size, top), mask)
    else:
        image = Image.new("RGB", size, top)
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        x0, y0, x1, y1 = shape.bbox
        fill = COLOURS[shape.colour]
        # Pillow's drawing boxes are inclusive, our bboxes half-open.
        if shape.shape == "circle":
            draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
        elif shape.shape == "square":
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
        else:
            draw.polygon([(x0, y1 - 1), (x1 - 1, y1 - 1), ((x0 + x1 - 1) // 2, y0)], fill=fill)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def scene_truth(scene: _Scene) -> dict[str, Any]:
    """Ground truth as plain JSON-ready data, for scorers and the fingerprint."""
    return {
        "background": scene.background,
        "gradient": scene.gradient,
        "size": [scene.size, scene.size],
        "shapes": [
            {"shape": s.shape, "colour": s.colour, "position": s.position, "bbox": list(s.bbox)}
            for s in scene.shapes
        ],
        "counts": {name: sum(s.shape == name for s in scene.shapes) for name in SHAPES},
    }


def describe(scene: _Scene) -> str:
    """A plain-English rendition of the scene for text-only models."""
    parts = []
    for s in scene.shapes:
        where = "in the centre" if s.position == "centre" else f"at the {s.position}"
        parts.append(f"{_article(s.colour)} {s.colour} {s.shape} {where}")
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    noun = "shape" if len(parts) == 1 else "shapes"
    kind = " gradient" if scene.gradient else ""
    opening = _article(scene.background).capitalize()
    return f"{opening} {scene.background}{kind} background with {len(parts)} {noun}: {listed}."


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class SyntheticScenes:
    """``n`` generated scenes with known shapes, colours, counts and positions.

    Example::

        SyntheticScenes(16, seed=7, size=448)
    """

    name: str = "synthetic"

    def __init__(self, n: int = 8, *, seed: int = 0, size: int = 448) -> None:
        # Checked here, before any model loads; the message starts with the call.
        for field_name, value, least, unit in (("n", n, 1, ""), ("size", size, MIN_SIZE, " px")):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise DatasetArgumentError(
                    f"SyntheticScenes({field_name}={value!r}): {field_name} must be a whole "
                    f"number of at least {least}{unit}"
                )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise DatasetArgumentError(
                f"SyntheticScenes(seed={seed!r}): seed must be a whole number"
            )
        self.n = n
        self.seed = seed
        self.size = size

    def __repr__(self) -> str:
        return f"SyntheticScenes({self.n}, seed={self.seed}, size={self.size})"

    def __len__(self) -> int:
        return self.n

    def sample(self, index: int) -> Sample:
        """Scene ``index``; PNG bytes are drawn only when ``load_image`` is called."""
        scene = make_scene(self.seed, index, self.size)
        return Sample(
            id=f"scene-{index:04d}",
            source=f"synthetic:seed={self.seed}/index={index}",
            load_image=functools.partial(render_png, scene),
            description=describe(scene),
            truth=scene_truth(scene),
        )

    def samples(self) -> Iterator[Sample]:
        """Yield scenes 0..n-1."""
        for index in range(self.n):
            yield self.sample(index)

    def fingerprint(self) -> str:
        """Hash the generation parameters and every scene's plan, not the PNG bytes.

        PNG bytes depend on the zlib that Pillow was built with (zlib-ng in
        recent wheels), so the same scene compresses differently across machines.
        """
        payload = {
            "generator": f"synthetic/v{GENERATOR_VERSION}",
            "n": self.n,
            "seed": self.seed,
            "size": self.size,
            "scenes": [scene_truth(make_scene(self.seed, i, self.size)) for i in range(self.n)],
        }
        encoded = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(encoded).hexdigest()
