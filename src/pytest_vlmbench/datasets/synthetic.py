"""Seeded synthetic scenes: coloured shapes on a background, with known answers.

They give quality scorers ground truth (what is where, how many) without a
labelled photo set, and a text-only rendition for models that cannot see.
Every scene comes from its own generator seeded by (seed, index, difficulty), so
scene 3 is the same whether 4 or 400 scenes are asked for.

Difficulty levels (`LEVELS`; ``"mixed"`` cycles easy, medium, hard by index):

- easy: 1-5 large shapes, one per cell of the 3x3 grid, none touching.
- medium: 2-7 shapes, at least one of them small, and one distractor: a thin stripe
  along an edge of the image, in a colour no shape has.
- hard: 4-9 shapes, at least one small; two neighbours in a close pair of colours
  (`CLOSE_PAIRS`: red/orange, blue/purple, orange/yellow) side by side, the later one
  drawn partly over the earlier one; two distractor stripes.

The limits the answer key rests on, at every level:

- A small shape's side is at least `SMALL_MIN_SHARE` of the image side: 25 px at the
  default 448 px (and at the default prepared long edge, 448 px, the same; at a long
  edge of 224 px, 12 px). Large shapes are at least 45% of their cell.
- An overlap never hides more than `MAX_HIDDEN_SHARE` (20%) of the covered shape's
  pixels, counted on the plan's own masks (pixel centres inside the shape), so the
  shape stays visibly there and is counted in the truth; the rendered check in the
  tests allows 2 points for the difference between those masks and Pillow's.
- Every shape's centre lies in the middle 60% of its cell (`CENTRE_ZONE`), also when
  it reaches over a neighbour, so its position (the cell) is never a close call.
- Overlapping shapes never share a colour, so they never merge into one blob.
- Stripes are at most `size // 56` px thick (8 px at 448) and at least 40% of the
  image side long (a band, not a square), flush with an edge, in a border that shapes
  never enter at medium and hard, and away from the corners, so two never meet.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

from pytest_vlmbench.datasets import DatasetArgumentError, Sample, Selection

# Bump whenever the same (seed, index, size, difficulty) would draw different pixels.
GENERATOR_VERSION = 2

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
Level = Literal["easy", "medium", "hard"]
LEVELS: tuple[Level, ...] = ("easy", "medium", "hard")
DIFFICULTIES = (*LEVELS, "mixed")
CLOSE_PAIRS = (("red", "orange"), ("blue", "purple"), ("orange", "yellow"))
EDGES = ("top", "bottom", "left", "right")
MAX_SHAPES = 5  # easy
MIN_SIZE = 24  # easy; the other levels need room for small shapes and stripes
MIN_SIZE_HARDER = 96
SMALL_MIN_SHARE = 0.055
SMALL_MAX_SHARE = 0.08
MAX_HIDDEN_SHARE = 0.20
CENTRE_ZONE = 0.2  # a shape's centre is at least this share of a cell from its edges


@dataclass(frozen=True)
class _Rule:
    shapes: tuple[int, int]  # fewest, most
    small_in_6: int  # chance, in sixths, that a shape other than the forced one is small
    distractors: int
    overlap: bool  # a close pair of colours side by side, one drawn over the other


RULES: Mapping[Level, _Rule] = {
    "easy": _Rule((1, MAX_SHAPES), 0, 0, False),
    "medium": _Rule((2, 7), 2, 1, False),
    "hard": _Rule((4, 9), 3, 2, True),
}

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Shape:
    shape: str
    colour: str
    position: str
    bbox: tuple[int, int, int, int]  # half-open, like Image.crop: x0, y0, x1, y1
    small: bool = False


@dataclass(frozen=True)
class _Stripe:
    colour: str
    edge: str
    bbox: tuple[int, int, int, int]


@dataclass(frozen=True)
class _Scene:
    size: int
    background: str
    gradient: bool
    shapes: tuple[_Shape, ...]
    difficulty: Level = "easy"
    stripes: tuple[_Stripe, ...] = ()


class _Draws:
    """Random choices built only on ``random.Random.random()``.

    That is the one method whose sequence Python promises to keep across
    versions; ``choice``, ``sample`` and ``randrange`` may change.
    """

    def __init__(self, seed: int, index: int, level: Level = "easy") -> None:
        key = f"pytest-vlmbench/synthetic/v{GENERATOR_VERSION}/{level}/{seed}/{index}".encode()
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


def level_of(difficulty: str, index: int) -> Level:
    """The level of scene ``index``: ``"mixed"`` cycles easy, medium, hard."""
    return LEVELS[index % 3] if difficulty == "mixed" else difficulty  # type: ignore[return-value]


def make_scene(seed: int, index: int, size: int, difficulty: str = "easy") -> _Scene:
    """Decide everything about scene ``index``; rendering only follows this plan."""
    level = level_of(difficulty, index)
    rule = RULES[level]
    draws = _Draws(seed, index, level)
    background = draws.choice(tuple(COLOURS))
    gradient = draws.below(2) == 1
    pair: tuple[str, str] | None = None
    if rule.overlap:
        pairs = [p for p in CLOSE_PAIRS if background not in p]
        first, second = draws.choice(pairs)
        pair = (first, second) if draws.below(2) else (second, first)
    spare = [c for c in COLOURS if c != background and c not in (pair or ())]
    stripe_colours = draws.sample(spare, rule.distractors)
    shape_colours = tuple(c for c in COLOURS if c != background and c not in stripe_colours)
    count = draws.between(*rule.shapes)
    if pair is None:
        cells = sorted(draws.sample(range(len(POSITIONS)), count))
        anchors: tuple[int, int] | None = None
    else:
        a = draws.below(len(POSITIONS))
        b = draws.choice(_neighbours(a))
        rest = draws.sample([c for c in range(len(POSITIONS)) if c not in (a, b)], count - 2)
        cells = sorted([a, b, *rest])
        anchors = (min(a, b), max(a, b))
    forced_small = -1
    if rule.small_in_6:
        candidates = [c for c in cells if anchors is None or c not in anchors]
        forced_small = draws.choice(candidates)
    cell = size // 3
    margin = max(1, cell // 16)  # shapes in their own cells never touch
    thickness = max(2, size // 56)
    border = thickness + max(2, size // 64) if rule.distractors else 0
    shapes = []
    for cell_index in cells:
        row, column = divmod(cell_index, 3)
        lo_x, hi_x = _interior(column, cell, margin, border, size)
        lo_y, hi_y = _interior(row, cell, margin, border, size)
        small = cell_index == forced_small or (
            rule.small_in_6 > 0 and (anchors is None or cell_index not in anchors)
            and draws.below(6) < rule.small_in_6)
        span = min(hi_x - lo_x, hi_y - lo_y)
        if small:
            side = draws.between(math.ceil(size * SMALL_MIN_SHARE),
                                 max(math.ceil(size * SMALL_MIN_SHARE),
                                     int(size * SMALL_MAX_SHARE)))
        elif anchors is not None and cell_index in anchors:
            side = max(4, span * draws.between(70, 90) // 100)  # room to reach over
        else:
            side = max(4, span * draws.between(45, 85) // 100)
        x0 = draws.between(*_starts(column, lo_x, hi_x, side, cell))
        y0 = draws.between(*_starts(row, lo_y, hi_y, side, cell))
        if pair is not None and anchors is not None and cell_index in anchors:
            colour = pair[anchors.index(cell_index)]
        else:
            colour = draws.choice(shape_colours)
        shapes.append(_Shape(shape=draws.choice(SHAPES), colour=colour,
                             position=POSITIONS[cell_index], bbox=(x0, y0, x0 + side, y0 + side),
                             small=small))
    if anchors is not None:
        _overlap(shapes, cells, anchors, draws, cell=cell, margin=margin, border=border,
                 size=size)
    stripes = _stripes(draws, stripe_colours, size, thickness, border)
    return _Scene(size=size, background=background, gradient=gradient, shapes=tuple(shapes),
                  difficulty=level, stripes=stripes)


def _neighbours(cell_index: int) -> list[int]:
    """The cells that share a side with ``cell_index``, in reading order."""
    row, column = divmod(cell_index, 3)
    found = [(row - 1, column), (row, column - 1), (row, column + 1), (row + 1, column)]
    return [r * 3 + c for r, c in found if 0 <= r < 3 and 0 <= c < 3]


def _interior(k: int, cell: int, margin: int, border: int, size: int) -> tuple[int, int]:
    """Where a shape of grid column (or row) ``k`` may lie: its cell less the margin, and
    out of the border band the stripes use."""
    return max(k * cell + margin, border), min((k + 1) * cell - margin, size - border)


def _starts(k: int, lo: int, hi: int, side: int, cell: int) -> tuple[int, int]:
    """The first and last start of a shape of ``side`` in the interior ``lo..hi`` whose
    centre stays in the middle of its cell (`CENTRE_ZONE`), so its position is clear."""
    zone = int(cell * CENTRE_ZONE)
    first = max(lo, k * cell + zone - side // 2)
    last = min(hi - side, (k + 1) * cell - zone - (side + 1) // 2)
    return (first, last) if first <= last else (lo, max(lo, hi - side))


def _overlap(shapes: list[_Shape], cells: list[int], anchors: tuple[int, int], draws: _Draws,
             *, cell: int, margin: int, border: int, size: int) -> None:
    """Bring the two anchor shapes together across their shared side, centred on each
    other, until the later one (drawn on top) covers the earlier: each reaches past the
    side as far as keeps its centre in the middle of its own cell (`CENTRE_ZONE`), and
    the overlap is only as deep as hides at most `MAX_HIDDEN_SHARE` of the earlier's
    pixels (drawn: 10-30% of its side; less where that would hide too much)."""
    first, later = cells.index(anchors[0]), cells.index(anchors[1])
    horizontal = anchors[1] - anchors[0] == 1  # side by side; else one above the other
    axis, cross = (0, 1) if horizontal else (1, 0)
    boundary = (anchors[1] % 3 if horizontal else anchors[1] // 3) * cell
    k = (anchors[0] // 3) if horizontal else (anchors[0] % 3)
    lo, hi = _interior(k, cell, margin, border, size)
    under = shapes[first]
    middle = (under.bbox[cross] + under.bbox[cross + 2]) // 2
    for index in (first, later):  # centred across the shared side, in the shared row
        shape = shapes[index]
        side = shape.bbox[2] - shape.bbox[0]
        start = min(max(middle - side // 2, lo), hi - side)
        shapes[index] = _moved(shape, cross, start - shape.bbox[cross])
    under, over = shapes[first], shapes[later]
    under_side, over_side = under.bbox[2] - under.bbox[0], over.bbox[2] - over.bbox[0]
    zone = int(cell * CENTRE_ZONE)
    # How far past the shared side each may reach with its centre still in its zone.
    reach_under = max(0, under_side // 2 - zone)
    reach_over = max(0, over_side // 2 - zone - 1)
    depth = min(under_side * draws.between(10, 30) // 100, reach_under + reach_over)
    while depth >= 0:
        by_over = min(depth, reach_over)
        by_under = depth - by_over
        moved_under = _moved(under, axis, boundary + by_under - under.bbox[axis + 2])
        moved_over = _moved(over, axis, boundary - by_over - over.bbox[axis])
        if depth == 0 or _hidden_share(moved_under, [moved_over]) <= MAX_HIDDEN_SHARE:
            shapes[first], shapes[later] = moved_under, moved_over
            return
        depth -= max(1, depth // 4)


def _moved(shape: _Shape, axis: int, by: int) -> _Shape:
    box = list(shape.bbox)
    box[axis] += by
    box[axis + 2] += by
    return replace(shape, bbox=(box[0], box[1], box[2], box[3]))


def _row_span(shape: _Shape, py: int) -> tuple[int, int] | None:
    """The pixels of row ``py`` whose centres lie inside the shape: (first, last)."""
    x0, y0, x1, y1 = shape.bbox
    if not y0 <= py < y1:
        return None
    y = py + 0.5
    if shape.shape == "square":
        return x0, x1 - 1
    if shape.shape == "circle":
        r = (x1 - x0) / 2
        dy = y - (y0 + y1) / 2
        if abs(dy) > r:
            return None
        half = math.sqrt(r * r - dy * dy)
        left, right = (x0 + x1) / 2 - half, (x0 + x1) / 2 + half
    else:  # triangle: apex at the top middle, base along the bottom
        half = (x1 - x0) / 2 * (y - y0) / (y1 - y0)
        left, right = (x0 + x1) / 2 - half, (x0 + x1) / 2 + half
    first, last = math.ceil(left - 0.5), math.floor(right - 0.5)
    return (first, last) if first <= last else None


def _hidden_share(shape: _Shape, above: Sequence[_Shape]) -> float:
    """The share of ``shape``'s pixels that the shapes drawn over it cover."""
    total = hidden = 0
    for py in range(shape.bbox[1], shape.bbox[3]):
        span = _row_span(shape, py)
        if span is None:
            continue
        total += span[1] - span[0] + 1
        covers = sorted(s for s in (_row_span(o, py) for o in above) if s is not None)
        end = span[0] - 1  # the last pixel already counted
        for first, last in covers:
            first, last = max(first, end + 1, span[0]), min(last, span[1])
            if first <= last:
                hidden += last - first + 1
                end = last
    return hidden / total if total else 0.0


def hidden_shares(scene: _Scene) -> list[float]:
    """Each shape's share of pixels hidden by the shapes drawn after it (the plan's masks)."""
    return [_hidden_share(s, scene.shapes[i + 1:]) for i, s in enumerate(scene.shapes)]


def _stripes(draws: _Draws, colours: Sequence[str], size: int, thickness: int,
             border: int) -> tuple[_Stripe, ...]:
    stripes = []
    for colour, edge in zip(colours, draws.sample(EDGES, len(colours)), strict=True):
        length = size * draws.between(40, 70) // 100
        start = draws.between(border, max(border, size - border - length))
        end = start + length
        bbox = {"top": (start, 0, end, thickness),
                "bottom": (start, size - thickness, end, size),
                "left": (0, start, thickness, end),
                "right": (size - thickness, start, size, end)}[edge]
        stripes.append(_Stripe(colour=colour, edge=edge, bbox=bbox))
    return tuple(stripes)


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
    for stripe in scene.stripes:
        x0, y0, x1, y1 = stripe.bbox
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=COLOURS[stripe.colour])
    for shape in scene.shapes:
        draw_shape(draw, shape, COLOURS[shape.colour])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def draw_shape(draw: Any, shape: _Shape, fill: Any) -> None:
    """Draw one shape on a Pillow ``ImageDraw`` (also used for masks in the tests)."""
    x0, y0, x1, y1 = shape.bbox
    # Pillow's drawing boxes are inclusive, our bboxes half-open.
    if shape.shape == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif shape.shape == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    else:
        draw.polygon([(x0, y1 - 1), (x1 - 1, y1 - 1), ((x0 + x1 - 1) // 2, y0)], fill=fill)


def scene_truth(scene: _Scene) -> dict[str, Any]:
    """Ground truth (version 2) as plain JSON-ready data, for scorers and the fingerprint."""
    return {
        "background": scene.background,
        "gradient": scene.gradient,
        "size": [scene.size, scene.size],
        "difficulty": scene.difficulty,
        "shapes": [
            {"shape": s.shape, "colour": s.colour, "position": s.position,
             "bbox": list(s.bbox), "small": s.small}
            for s in scene.shapes
        ],
        "counts": {name: sum(s.shape == name for s in scene.shapes) for name in SHAPES},
        "total": len(scene.shapes),
        "colours": sorted({s.colour for s in scene.shapes}),
        "distractors": [{"colour": s.colour, "kind": "stripe", "bbox": list(s.bbox)}
                        for s in scene.stripes],
    }


def describe(scene: _Scene) -> str:
    """A plain-English rendition of the scene for text-only models: exactly the truth
    (background, each shape's size class, colour, kind and cell, and the stripes, said
    not to be shapes), nothing more."""
    parts = []
    for s in scene.shapes:
        where = "in the centre" if s.position == "centre" else f"at the {s.position}"
        words = f"small {s.colour}" if s.small else s.colour
        parts.append(f"{_article(words)} {words} {s.shape} {where}")
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    noun = "shape" if len(parts) == 1 else "shapes"
    # "plain" says outright that there is no gradient (the free-text rules read it so).
    backdrop = (f"{scene.background} gradient" if scene.gradient
                else f"plain {scene.background}")
    opening = _article(backdrop).capitalize()
    text = f"{opening} {backdrop} background with {len(parts)} {noun}: {listed}."
    if scene.stripes:
        bands = [f"{_article(s.colour)} {s.colour} one along the {s.edge} edge"
                 for s in scene.stripes]
        which = "a thin stripe" if len(bands) == 1 else "thin stripes"
        text += f" Not shapes: {which}, {' and '.join(bands)}."
    return text


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class SyntheticScenes:
    """``n`` generated scenes with known shapes, colours, counts and positions.

    ``difficulty``: ``"easy"`` (the default), ``"medium"``, ``"hard"`` or ``"mixed"``
    (scene ``i`` has level ``("easy", "medium", "hard")[i % 3]``); see the module's
    docstring for what each level draws and the limits the answer key rests on.

    Example::

        SyntheticScenes(16, seed=7, size=448, difficulty="hard")
    """

    name: str = "synthetic"

    def __init__(self, n: int = 8, *, seed: int = 0, size: int = 448,
                 difficulty: str = "easy") -> None:
        # Checked here, before any model loads; the message starts with the call.
        if difficulty not in DIFFICULTIES:
            raise DatasetArgumentError(
                f"SyntheticScenes(difficulty={difficulty!r}): difficulty must be one of "
                f"{', '.join(DIFFICULTIES)}")
        least_size = MIN_SIZE if difficulty == "easy" else MIN_SIZE_HARDER
        for field_name, value, least, unit in (("n", n, 1, ""), ("size", size, least_size, " px")):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                level = "" if field_name == "n" or difficulty == "easy" else \
                    f" for difficulty {difficulty!r}"
                raise DatasetArgumentError(
                    f"SyntheticScenes({field_name}={value!r}): {field_name} must be a whole "
                    f"number of at least {least}{unit}{level}"
                )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise DatasetArgumentError(
                f"SyntheticScenes(seed={seed!r}): seed must be a whole number"
            )
        self.n = n
        self.seed = seed
        self.size = size
        self.difficulty = difficulty

    def __repr__(self) -> str:
        level = "" if self.difficulty == "easy" else f", difficulty={self.difficulty!r}"
        return f"SyntheticScenes({self.n}, seed={self.seed}, size={self.size}{level})"

    def __len__(self) -> int:
        return self.n

    def scene(self, index: int) -> _Scene:
        """The plan of scene ``index`` (what `sample` renders)."""
        return make_scene(self.seed, index, self.size, self.difficulty)

    def sample(self, index: int) -> Sample:
        """Scene ``index``; PNG bytes are drawn only when ``load_image`` is called."""
        scene = self.scene(index)
        level = "" if scene.difficulty == "easy" else f"/difficulty={scene.difficulty}"
        return Sample(
            id=f"scene-{index:04d}",
            source=f"synthetic:seed={self.seed}/index={index}{level}",
            load_image=functools.partial(render_png, scene),
            description=describe(scene),
            truth=scene_truth(scene),
        )

    def samples(self) -> Iterator[Sample]:
        """Yield scenes 0..n-1."""
        for index in range(self.n):
            yield self.sample(index)

    def selection(self) -> Selection:
        """Which samples this dataset yields (`DatasetSelection`): all ``n`` scenes."""
        return {"seed": self.seed, "limit": self.n,
                "ids": [f"scene-{index:04d}" for index in range(self.n)]}

    def fingerprint(self) -> str:
        """Hash the generation parameters and every scene's plan, not the PNG bytes.

        PNG bytes depend on the zlib that Pillow was built with (zlib-ng in
        recent wheels), so the same scene compresses differently across machines.
        The text rendition a text-only model reads is hashed too: a rewording of
        `describe` is a different benchmark for those models.
        """
        payload = {
            "generator": f"synthetic/v{GENERATOR_VERSION}",
            "n": self.n,
            "seed": self.seed,
            "size": self.size,
            "difficulty": self.difficulty,
            "scenes": [scene_truth(self.scene(i)) for i in range(self.n)],
            "descriptions": [describe(self.scene(i)) for i in range(self.n)],
        }
        encoded = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(encoded).hexdigest()
