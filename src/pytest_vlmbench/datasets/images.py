"""Image preparation and the folder-of-images dataset.

Preparation mirrors what serving pipelines do to a user's photo (honour the
camera's EXIF orientation, drop alpha, shrink, re-encode as JPEG), so a
benchmark measures the image a model would really get. Pillow is imported
inside the functions that need it, to keep ``import pytest_vlmbench`` cheap.

Any format Pillow decodes is accepted; of a multi-frame file (animated GIF, animated
WebP, APNG, multi-page TIFF) only the first frame is used, the one Pillow opens on and
the one a chat UI shows as the thumbnail.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import math
import os
import struct
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_vlmbench.datasets import (
    DatasetArgumentError,
    ImageError,
    ImagePrep,
    PreparedImage,
    Sample,
    Selection,
)

if TYPE_CHECKING:
    from PIL import Image

# Formats a stock Pillow wheel reads (GIF: first frame). HEIC/AVIF need plugins; pass
# extensions= for those, or for any other format a Pillow plugin adds.
DEFAULT_EXTENSIONS = (
    ".bmp", ".gif", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".pnm", ".ppm", ".tif", ".tiff",
    ".webp",
)

# How many skipped names the one-line note spells out.
_NAMED_SKIPS = 3

# Flattening transparent pixels on white matches what a browser or a chat UI
# shows; black (Pillow's plain convert("RGB")) turns logos into dark blobs.
_FLATTEN_ON = (255, 255, 255)


def prepare_image(sample: Sample, prep: ImagePrep) -> PreparedImage:
    """Return the JPEG a model sees for ``sample``, or raise `ImageError` saying why not.

    A multi-frame image (animated GIF or WebP, APNG, multi-page TIFF) gives its first
    frame. Deterministic for a given Pillow/libjpeg build (no optimize pass, no
    progressive scan, no metadata), so the hash identifies the pixels sent.
    """
    raw = _load_raw(sample)
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as opened:
            # Decode now: Image.open only reads the header, and a truncated
            # JPEG is detected only when its pixel data is read.
            opened.load()
            upright = ImageOps.exif_transpose(opened) if prep.exif_transpose else opened
            rgb = _to_rgb(upright)
    except UnidentifiedImageError as exc:
        raise ImageError(
            sample.source, "cannot identify image file (truncated or not an image)"
        ) from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(sample.source, f"image too large to decode safely ({exc})") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, struct.error) as exc:
        # Pillow reports truncation as OSError; malformed headers and EXIF
        # blocks surface as any of the others (seen in Pillow's fuzzing fixes).
        raise ImageError(
            sample.source, f"cannot decode image ({type(exc).__name__}: {exc})"
        ) from exc

    resized = _fit(rgb, prep.long_edge, prep.max_pixels)
    buffer = io.BytesIO()
    resized.save(
        buffer, format="JPEG", quality=prep.jpeg_quality, optimize=False, progressive=False
    )
    jpeg = buffer.getvalue()
    return PreparedImage(
        jpeg=jpeg,
        sha256=hashlib.sha256(jpeg).hexdigest(),
        width=resized.width,
        height=resized.height,
        source=sample.source,
    )


def _load_raw(sample: Sample) -> bytes:
    """Read the sample's bytes, turning I/O failures into an `ImageError`."""
    if sample.load_image is None:
        raise ImageError(sample.source, "sample has no image (text-only)")
    try:
        raw = sample.load_image()
    except FileNotFoundError as exc:
        raise ImageError(sample.source, "file not found") from exc
    except OSError as exc:
        raise ImageError(sample.source, f"cannot read file ({exc.strerror or exc})") from exc
    if not raw:
        raise ImageError(sample.source, "file is empty (0 bytes)")
    return raw


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB, flattening transparency on white."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16") or image.mode == "I":
        # 16-bit greyscale PNGs: a plain convert clips everything above 255 to white.
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        image.mode in ("P", "L", "RGB") and "transparency" in image.info
    )
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, _FLATTEN_ON)
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _fit(image: Image.Image, long_edge: int, max_pixels: int | None) -> Image.Image:
    """Shrink to `fitted_size`, in one resize; never upscale (it only adds blur and
    tokens)."""
    from PIL import Image

    size = fitted_size(image.width, image.height, long_edge, max_pixels)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def fitted_size(width: int, height: int, long_edge: int,
                max_pixels: int | None = None) -> tuple[int, int]:
    """The size an image of ``width`` x ``height`` is prepared at: the long edge shrunk to
    ``long_edge``, then, where ``max_pixels`` is given and still exceeded, both sides
    scaled by ``sqrt(max_pixels / pixels)``, rounded down (and trimmed, the longer side
    first, until ``width * height <= max_pixels``); no side below 1 px."""
    longest = max(width, height)
    if longest > long_edge:
        scale = long_edge / longest
        width, height = (
            long_edge if width == longest else max(1, round(width * scale)),
            long_edge if height == longest else max(1, round(height * scale)),
        )
    if max_pixels is not None and width * height > max_pixels:
        scale = math.sqrt(max_pixels / (width * height))
        width, height = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
        while width * height > max_pixels and max(width, height) > 1:
            if width >= height:
                width -= 1
            else:
                height -= 1
    return width, height


class FolderDataset:
    """Photos from a folder (recursively), optionally a seeded sample of them.

    ``pattern`` keeps only the files whose path relative to the folder matches it
    (`match_glob`: ``*`` within a name, ``**`` across folders, case-sensitive on every
    OS), so ``album/**/*.jpg`` is ``FolderDataset("album", pattern="**/*.jpg")``.
    Ids are those relative paths in POSIX form and Unicode NFC (macOS hands out NFD
    names), so the same photos have the same ids, order and selection everywhere.

    Files are chosen by extension (`DEFAULT_EXTENSIONS`: JPEG, PNG, GIF, BMP, TIFF,
    WebP and the Netpbm formats; GIF and other animations give their first frame).
    Files with other extensions are skipped, and said so: `skipped` holds them and
    `notes()` gives the one line that goes into each benchmark's warnings. Hidden
    files and folders (``.cache/``, macOS ``._photo.jpg``) are skipped silently.

    Unreadable files are kept as samples on purpose: the runner records an
    error for each and carries on, so one bad photo does not hide the rest.

    Example::

        FolderDataset("fixtures/images", limit=100, seed=7)
    """

    name: str = "folder"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        limit: int | None = None,
        seed: int = 0,
        extensions: tuple[str, ...] = DEFAULT_EXTENSIONS,
        recursive: bool = True,
        pattern: str | None = None,
    ) -> None:
        # Every argument is checked here, not at the first samples() call, so a mistake
        # fails before any model loads and its message starts with the call as written.
        call = folder_call(path, limit, extensions, pattern)
        if not isinstance(path, (str, os.PathLike)):
            raise DatasetArgumentError(
                f"{call}: path must be a folder (a str or a Path), got {type(path).__name__}"
            )
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise DatasetArgumentError(
                f"{call}: limit must be a whole number of at least 1 (or None for every "
                f"image), got {limit!r}"
            )
        if pattern is not None and (not isinstance(pattern, str) or not pattern.strip("/")):
            raise DatasetArgumentError(
                f"{call}: pattern must be a glob such as '**/*.jpg', got {pattern!r}")
        self.path = Path(path)
        self.limit = limit
        self.seed = seed
        self.extensions = _normalise_extensions(extensions, call)
        self.recursive = recursive
        self.pattern = pattern
        self._files = _list_images(self.path, self.extensions, recursive, pattern, call)
        self.skipped = self._files.skipped
        self.ids = tuple(select_ids(sorted(self._files.found), limit, seed))
        """The chosen ids, sorted: what `samples()` yields, in that order."""
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        glob = "" if self.pattern is None else f", pattern={self.pattern!r}"
        return (f"FolderDataset({str(self.path)!r}{glob}, limit={self.limit!r}, "
                f"seed={self.seed!r})")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def available(self) -> int:
        """How many images the folder (and pattern) offered before the limit chose."""
        return len(self._files.found)

    @property
    def label(self) -> str:
        """How messages name this dataset: ``folder:PATH`` (see `dataset_label`)."""
        glob = "" if self.pattern is None else f"/{self.pattern}"
        return f"{self.name}:{self.path}{glob}"

    def selection(self) -> Selection:
        """The seed, the limit and the chosen ids, sorted (`DatasetSelection`)."""
        return {"seed": self.seed, "limit": self.limit, "ids": list(self.ids)}

    def notes(self) -> list[str]:
        """One line naming the files skipped for their extension, if any (`DatasetNotes`)."""
        if not self.skipped:
            return []
        count = len(self.skipped)
        files = "file" if count == 1 else "files"
        return [f"folder {self.path}: skipped {count} {files} whose extension is not an "
                f"image one: {some_of(self.skipped, _NAMED_SKIPS)}"]

    def samples(self) -> Iterator[Sample]:
        """Yield one sample per selected file, sorted by relative path."""
        for image_id in self.ids:
            file = self.path / self._files.found[image_id]
            yield Sample(
                id=image_id,
                source=str(file),
                load_image=file.read_bytes,
                description=None,
                truth={},
            )

    def fingerprint(self) -> str:
        """Hash ids, file contents and selection parameters, not the folder's location.

        The same photos copied to another machine give the same fingerprint. The
        extension list is not hashed: it only chooses files, and the chosen ones are
        (so a folder of JPEGs stays the same dataset when a format is added to the
        defaults, and a GIF that joins the selection changes the hash).
        """
        if self._fingerprint is None:
            digest = hashlib.sha256()
            params: dict[str, object] = {
                "dataset": self.name,
                "limit": self.limit,
                "seed": self.seed,
                "recursive": self.recursive,
            }
            if self.pattern is not None:  # absent otherwise: older hashes stay the same
                params["pattern"] = self.pattern
            digest.update(json.dumps(params, sort_keys=True).encode())
            for image_id in self.ids:
                file = self.path / self._files.found[image_id]
                digest.update(f"\n{image_id}\0{file_digest(file)}".encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


def some_of(names: tuple[str, ...], most: int) -> str:
    """The first ``most`` names, and how many more: ``a, b, c and 4 more``."""
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def file_digest(file: Path) -> str:
    """Hash a file's bytes; an unreadable file hashes as a marker, not a crash."""
    try:
        with file.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        return f"unreadable:{type(exc).__name__}"


def folder_call(path: object, limit: object, extensions: object = DEFAULT_EXTENSIONS,
                pattern: object = None) -> str:
    """The constructor call as the user wrote it, to start every error message with: the
    path as given (``'photos/'``, not a resolved Path), and only the non-default
    arguments that matter to the message."""
    given = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    parts = [repr(given)]
    if pattern is not None:
        parts.append(f"pattern={pattern!r}")
    if limit is not None:
        parts.append(f"limit={limit!r}")
    if extensions != DEFAULT_EXTENSIONS:
        parts.append(f"extensions={extensions!r}")
    return f"FolderDataset({', '.join(parts)})"


def _normalise_extensions(extensions: object, call: str) -> tuple[str, ...]:
    """Sorted lower-case suffixes with their dot (``"JPG"`` -> ``".jpg"``).

    A bare string is refused: iterating ``".jpg"`` gives ``. j p g``, which match nothing.
    """
    if isinstance(extensions, (str, bytes)):
        raise DatasetArgumentError(
            f"{call}: extensions must be a tuple of suffixes such as ('.jpg', '.png'), "
            f"not the string {extensions!r}"
        )
    try:
        items = list(extensions)  # type: ignore[call-overload]
    except TypeError:
        raise DatasetArgumentError(
            f"{call}: extensions must be a tuple of suffixes such as ('.jpg', '.png'), "
            f"got {type(extensions).__name__}"
        ) from None
    normalised: set[str] = set()
    for item in items:
        if not isinstance(item, str) or not item.strip(" ."):
            raise DatasetArgumentError(
                f"{call}: each extension must be a suffix such as '.jpg', got {item!r}"
            )
        suffix = item.strip().lower()
        normalised.add(suffix if suffix.startswith(".") else f".{suffix}")
    if not normalised:
        raise DatasetArgumentError(
            f"{call}: extensions is empty, so no file can be chosen; leave it out for the "
            f"default image formats"
        )
    return tuple(sorted(normalised))


@dataclass(frozen=True)
class _Listing:
    """A folder's image files by id (NFC POSIX relative path -> the path on disk, which
    may be NFD), and the ids of the other files, which were skipped."""

    found: dict[str, str]
    skipped: tuple[str, ...]


def _list_images(
    root: Path, extensions: tuple[str, ...], recursive: bool, pattern: str | None, call: str
) -> _Listing:
    """The image files under ``root`` (matching ``pattern`` if given) and the other,
    skipped ones; errors start with the constructor ``call``."""
    if not root.exists():
        where = "" if root.is_absolute() else f" (looked in {Path.cwd() / root})"
        raise DatasetArgumentError(f"{call}: folder not found{where}")
    if not root.is_dir():
        raise DatasetArgumentError(
            f"{call}: is a file, not a folder; pass the folder that holds the images"
        )
    glob = None if pattern is None else _glob_parts(pattern)
    candidates = root.rglob("*") if recursive else root.iterdir()
    found: dict[str, str] = {}
    skipped: list[str] = []
    for file in candidates:
        relative = file.relative_to(root)
        # Hidden files include macOS "._photo.jpg" resource forks, which are not images.
        if any(part.startswith(".") for part in relative.parts) or not file.is_file():
            continue
        image_id = unicodedata.normalize("NFC", relative.as_posix())
        if glob is not None and not _match(tuple(image_id.split("/")), glob):
            continue
        if file.suffix.lower() in extensions:
            found[image_id] = relative.as_posix()
        else:
            skipped.append(image_id)
    skipped.sort()
    if not found:
        looked = " ".join(extensions)
        matching = "" if pattern is None else f" matching {pattern!r}"
        if not skipped and pattern is not None:
            raise DatasetArgumentError(f"{call}: no files match {pattern!r} in {root}")
        if not skipped:
            raise DatasetArgumentError(f"{call}: folder is empty (no {looked} files)")
        files = "file" if len(skipped) == 1 else "files"
        raise DatasetArgumentError(
            f"{call}: no images found (no {looked} files{matching}; found {len(skipped)} "
            f"other {files}, e.g. {skipped[0]})"
        )
    return _Listing(found, tuple(skipped))


def _glob_parts(pattern: str) -> tuple[str, ...]:
    normalised = unicodedata.normalize("NFC", pattern.replace("\\", "/"))
    return tuple(part for part in normalised.split("/") if part and part != ".")


def match_glob(relative: str, pattern: str) -> bool:
    """Whether a POSIX relative path matches a glob: ``*``, ``?`` and ``[...]`` within
    one name (`fnmatch.fnmatchcase`), ``**`` for any number of folders (none included).

    Case-sensitive on every OS, unlike `Path.glob` on Windows, so one pattern chooses
    the same files everywhere.
    """
    return _match(tuple(relative.split("/")), _glob_parts(pattern))


def _match(parts: tuple[str, ...], glob: tuple[str, ...]) -> bool:
    if not glob:
        return not parts
    if glob[0] == "**":
        return _match(parts, glob[1:]) or (bool(parts) and _match(parts[1:], glob))
    return (bool(parts) and fnmatch.fnmatchcase(parts[0], glob[0])
            and _match(parts[1:], glob[1:]))


def select_ids(ids: list[str], limit: int | None, seed: int) -> list[str]:
    """Pick ``limit`` of ``ids``, seeded, the same on every machine; returned sorted.

    The rule: rank each id by ``sha256(f"{seed}\\0{id}")`` (hex), keep the ``limit``
    lowest, sort them by id. It depends only on the ids and the seed: not on the order
    the file system lists files, nor on the Python version (``random.sample`` may
    change), and adding a photo to the folder leaves most of a selection unchanged.
    """
    if limit is None or limit >= len(ids):
        return sorted(ids)

    def rank(image_id: str) -> str:
        return hashlib.sha256(f"{seed}\0{image_id}".encode()).hexdigest()

    return sorted(sorted(ids, key=rank)[:limit])
