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

import hashlib
import io
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_vlmbench.datasets import (
    DatasetArgumentError,
    ImageError,
    ImagePrep,
    PreparedImage,
    Sample,
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
            upright = ImageOps.exif_transpose(opened)
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

    resized = _fit_long_edge(rgb, prep.long_edge)
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


def _fit_long_edge(image: Image.Image, long_edge: int) -> Image.Image:
    """Shrink so the long edge is ``long_edge``; never upscale (it only adds blur and tokens)."""
    from PIL import Image

    width, height = image.size
    longest = max(width, height)
    if longest <= long_edge:
        return image
    scale = long_edge / longest
    size = (
        long_edge if width == longest else max(1, round(width * scale)),
        long_edge if height == longest else max(1, round(height * scale)),
    )
    return image.resize(size, Image.Resampling.LANCZOS)


class FolderDataset:
    """Photos from a folder (recursively), optionally a seeded sample of them.

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
    ) -> None:
        # Every argument is checked here, not at the first samples() call, so a mistake
        # fails before any model loads and its message starts with the call as written.
        call = _call(path, limit, extensions)
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
        self.path = Path(path)
        self.limit = limit
        self.seed = seed
        self.extensions = _normalise_extensions(extensions, call)
        self.recursive = recursive
        found, self.skipped = _list_images(self.path, self.extensions, recursive, call)
        self._ids = _select(found, limit, seed)
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        return f"FolderDataset({str(self.path)!r}, limit={self.limit!r}, seed={self.seed!r})"

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def label(self) -> str:
        """How messages name this dataset: ``folder:PATH`` (see `dataset_label`)."""
        return f"{self.name}:{self.path}"

    def notes(self) -> list[str]:
        """One line naming the files skipped for their extension, if any (`DatasetNotes`)."""
        if not self.skipped:
            return []
        count = len(self.skipped)
        named = ", ".join(self.skipped[:_NAMED_SKIPS])
        more = f" and {count - _NAMED_SKIPS} more" if count > _NAMED_SKIPS else ""
        files = "file" if count == 1 else "files"
        return [f"folder {self.path}: skipped {count} {files} whose extension is not an "
                f"image one: {named}{more}"]

    def samples(self) -> Iterator[Sample]:
        """Yield one sample per selected file, sorted by relative path."""
        for image_id in self._ids:
            file = self.path / image_id
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
            params = {
                "dataset": self.name,
                "limit": self.limit,
                "seed": self.seed,
                "recursive": self.recursive,
            }
            digest.update(json.dumps(params, sort_keys=True).encode())
            for image_id in self._ids:
                digest.update(f"\n{image_id}\0{_file_digest(self.path / image_id)}".encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


def _file_digest(file: Path) -> str:
    """Hash a file's bytes; an unreadable file hashes as a marker, not a crash."""
    try:
        with file.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        return f"unreadable:{type(exc).__name__}"


def _call(path: object, limit: object, extensions: object) -> str:
    """The constructor call as the user wrote it, to start every error message with: the
    path as given (``'photos/'``, not a resolved Path), and only the non-default
    arguments that matter to the message."""
    given = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    parts = [repr(given)]
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


def _list_images(
    root: Path, extensions: tuple[str, ...], recursive: bool, call: str
) -> tuple[list[str], tuple[str, ...]]:
    """Relative POSIX paths under ``root`` of the image files and of the other (skipped)
    files, both sorted; errors start with the constructor ``call``."""
    if not root.exists():
        where = "" if root.is_absolute() else f" (looked in {Path.cwd() / root})"
        raise DatasetArgumentError(f"{call}: folder not found{where}")
    if not root.is_dir():
        raise DatasetArgumentError(
            f"{call}: is a file, not a folder; pass the folder that holds the images"
        )
    candidates = root.rglob("*") if recursive else root.iterdir()
    ids: list[str] = []
    skipped: list[str] = []
    for file in candidates:
        relative = file.relative_to(root)
        # Hidden files include macOS "._photo.jpg" resource forks, which are not images.
        if any(part.startswith(".") for part in relative.parts) or not file.is_file():
            continue
        (ids if file.suffix.lower() in extensions else skipped).append(relative.as_posix())
    skipped.sort()
    if not ids:
        looked = " ".join(extensions)
        if not skipped:
            raise DatasetArgumentError(f"{call}: folder is empty (no {looked} files)")
        files = "file" if len(skipped) == 1 else "files"
        raise DatasetArgumentError(
            f"{call}: no images found (no {looked} files; found {len(skipped)} other "
            f"{files}, e.g. {skipped[0]})"
        )
    return sorted(ids), tuple(skipped)


def _select(ids: list[str], limit: int | None, seed: int) -> list[str]:
    """Pick ``limit`` ids, seeded, in a way that is stable across Python versions.

    Ranking by a hash of (seed, id) instead of ``random.sample`` means adding a
    photo to the folder leaves most of an existing selection unchanged.
    """
    if limit is None or limit >= len(ids):
        return ids

    def rank(image_id: str) -> str:
        return hashlib.sha256(f"{seed}\0{image_id}".encode()).hexdigest()

    return sorted(sorted(ids, key=rank)[:limit])
