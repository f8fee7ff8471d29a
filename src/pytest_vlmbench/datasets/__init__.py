"""Datasets: where benchmark inputs come from, and a registry to find them by name.

A dataset yields `Sample`s whose image bytes load lazily, so a 10,000-photo
folder costs nothing until a sample is used. `prepare_image` turns a sample
into the JPEG a model actually sees; how it does so (`ImagePrep`) is part of
the dataset hash, because a different resize is a different benchmark.

Third parties add datasets through the ``pytest_vlmbench.datasets`` entry-point
group; each entry point names a factory that takes keyword arguments and
returns a `Dataset`::

    [project.entry-points."pytest_vlmbench.datasets"]
    coco-val = "my_pkg.coco:CocoVal"
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, runtime_checkable

from pytest_vlmbench.errors import UsageMistake, UserInputError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from pytest_vlmbench.results.models import VideoRef

__all__ = [
    "ENTRY_POINT_GROUP",
    "PREP_VERSION",
    "Dataset",
    "DatasetArgumentError",
    "DatasetError",
    "DatasetNotes",
    "DatasetSelection",
    "FolderDataset",
    "ImageError",
    "ImagePrep",
    "ManifestDataset",
    "ModelAdapted",
    "PreparedImage",
    "Sample",
    "Selection",
    "SyntheticScenes",
    "UnknownDatasetError",
    "VideoScenes",
    "VideoSource",
    "available_datasets",
    "dataset_factory",
    "dataset_for_model",
    "dataset_hash",
    "dataset_label",
    "dataset_notes",
    "dataset_selection",
    "get_dataset",
    "prep_fields",
    "prepare_image",
    "register_dataset",
    "unregister_dataset",
]

ENTRY_POINT_GROUP = "pytest_vlmbench.datasets"

# Bump when prepare_image changes its output for the same input and ImagePrep
# (e.g. a different alpha policy), so old and new results never compare as equal.
PREP_VERSION = 1


class DatasetError(UserInputError):
    """A dataset cannot be built (missing or empty folder, bad manifest...)."""


class DatasetArgumentError(DatasetError, UsageMistake):
    """A dataset that cannot be built from its arguments (a missing or empty folder,
    ``n=0``, ``limit=0``, extensions that match nothing) or that yields no samples.

    Known before any request, so it is a `UsageMistake`: the test fails with this one
    line, which starts with the constructor call (``FolderDataset('photos/'): ...``),
    and the session exits with status 4.
    """


@dataclass(frozen=True)
class ImagePrep:
    """How images are prepared before they reach a model, as real pipelines do.

    Every field changes the pixels (and so the latency and the answers), which
    is why it is hashed into the dataset hash.
    """

    long_edge: int = 448
    jpeg_quality: int = 90
    max_pixels: int | None = None
    """At most this many pixels (width x height), by a further downscale after the
    long-edge fit, as pipelines with a pixel budget do; None: no budget."""
    exif_transpose: bool = True
    """Turn the image upright by its EXIF orientation, as browsers and most pipelines
    do; False: use the pixels as stored (the orientation is ignored, as some do)."""

    def __post_init__(self) -> None:
        # A usage mistake (vlm_bench.run(image_size=-1), --vlm-image-size): one line.
        if isinstance(self.long_edge, bool) or not isinstance(self.long_edge, int):
            raise DatasetArgumentError(
                f"ImagePrep(long_edge={self.long_edge!r}): long_edge must be a whole number "
                f"of pixels")
        if self.max_pixels is not None and (
                isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int)
                or self.max_pixels < 1):
            raise DatasetArgumentError(
                f"ImagePrep(max_pixels={self.max_pixels!r}): max_pixels must be a whole "
                f"number of at least 1 (or None for no pixel budget)")
        if not isinstance(self.exif_transpose, bool):
            raise DatasetArgumentError(
                f"ImagePrep(exif_transpose={self.exif_transpose!r}): exif_transpose must be "
                f"True or False")
        if self.long_edge < 1:
            raise DatasetArgumentError(
                f"ImagePrep(long_edge={self.long_edge!r}): long_edge (the image size) must "
                f"be at least 1 px"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise DatasetArgumentError(
                f"ImagePrep(jpeg_quality={self.jpeg_quality!r}): jpeg_quality must be in "
                f"1..100"
            )


@dataclass(frozen=True)
class PreparedImage:
    """The exact bytes sent to a model, with the hash that identifies them."""

    jpeg: bytes = field(repr=False)  # a repr full of JPEG bytes helps nobody
    sha256: str
    width: int
    height: int
    source: str

    def data_url(self) -> str:
        """Return the image as the ``data:`` URL OpenAI-style APIs accept."""
        return "data:image/jpeg;base64," + base64.b64encode(self.jpeg).decode("ascii")


class ImageError(DatasetError):
    """One sample's image cannot be used; the runner records it and goes on.

    The message starts with the source, so a user can find the bad file.
    """

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass(frozen=True)
class Sample:
    """One benchmark input; images are loaded only when asked for."""

    id: str
    source: str
    load_image: Callable[[], bytes] | None
    description: str | None
    truth: Mapping[str, Any]
    duration_s: float | None = None
    prepare: Callable[[ImagePrep], Sequence[PreparedImage]] | None = field(
        default=None, repr=False, compare=False)
    """A sample that makes its own images for a preparation (a video scene: its sampled
    frames, each fitted like an image, then laid out as several images, a panorama, a
    grid or the middle frame); None: `load_image`'s bytes are prepared as one image.
    Raises `ImageError`/`DatasetError` naming the file when it cannot."""
    scene: Mapping[str, Any] | None = None
    """Where a video scene sits (the record's ``scene``: video, index, start_s, end_s,
    duration_s, frames_s, layout); None for a still image."""


@runtime_checkable
class Dataset(Protocol):
    """What the runner needs from any dataset source."""

    name: str

    def samples(self) -> Iterator[Sample]:
        """Yield samples in a stable order."""
        ...

    def fingerprint(self) -> str:
        """Return a sha256 hex digest of the content, stable across runs and machines."""
        ...


@runtime_checkable
class DatasetNotes(Protocol):
    """Optional for a dataset: things a user should know about how it was built.

    `FolderDataset` says which files it skipped for their extension. Each note becomes
    a warning of every benchmark that uses the dataset (in the results file and the
    terminal summary), not a Python warning: under ``filterwarnings = error`` a stray
    README in a photo folder must not fail a benchmark. A separate Protocol, so that
    datasets without notes still satisfy `Dataset`.
    """

    def notes(self) -> list[str]:
        """One line per note; empty when there is nothing to say."""
        ...


def dataset_notes(dataset: Dataset) -> list[str]:
    """The dataset's notes (`DatasetNotes`), or none."""
    return list(dataset.notes()) if isinstance(dataset, DatasetNotes) else []


def dataset_label(dataset: Dataset) -> str:
    """How messages name a dataset: its ``label`` (``folder:photos``) where it has one,
    else its registry name, so a warning says which folder, not just "folder"."""
    label = getattr(dataset, "label", None)
    return label if isinstance(label, str) and label else dataset.name


_ADDED_PREP = {"max_pixels": None, "exif_transpose": True}
"""ImagePrep fields added after results were first stored, with their defaults."""


def prep_fields(prep: ImagePrep, *, hashed: bool = False) -> dict[str, Any]:
    """The preparation as JSON-ready fields (a benchmark's ``dataset.prep``). ``hashed``:
    without the fields added later that keep their defaults, so a dataset prepared as
    before keeps the hash it had."""
    fields = dataclasses.asdict(prep)
    if hashed:
        for name, default in _ADDED_PREP.items():
            if fields[name] == default:
                del fields[name]
    return fields


class Selection(TypedDict):
    """Which samples a dataset chose: the seed, the limit, their ids in order."""

    seed: int
    limit: int | None
    ids: list[str]


@runtime_checkable
class DatasetSelection(Protocol):
    """Optional for a dataset: which samples it chose and how (the seeded sample of a
    folder, glob or manifest; the scenes generated). The runner records it in each
    benchmark's ``dataset.selection``. A separate Protocol, like `DatasetNotes`."""

    def selection(self) -> Selection:
        """The seed, the limit (None: all) and the chosen ids, in the order yielded."""
        ...


def dataset_selection(dataset: Dataset) -> Selection | None:
    """The dataset's `selection()`, or None for a dataset without one."""
    if not isinstance(dataset, DatasetSelection):
        return None
    chosen = dataset.selection()
    return {"seed": chosen["seed"], "limit": chosen["limit"], "ids": list(chosen["ids"])}


@runtime_checkable
class VideoSource(Protocol):
    """Optional for a dataset whose samples are scenes of videos (datasets/video.py):
    how it found and shows them, and each video with its detection and extraction
    times. The runner writes it to the benchmark's ``dataset.video`` and computes the
    per-video figures (seconds per scene, real-time factor) from it and the records."""

    def video_ref(self) -> VideoRef:
        """Detector, sampling, layout and every video (decoding them first if needed)."""
        ...


@runtime_checkable
class ModelAdapted(Protocol):
    """Optional for a dataset whose input depends on what the model takes: a video
    dataset with ``layout="auto"`` sends several frames to a model that takes several
    images and a panorama to a single-image one. The runner calls it before hashing."""

    def for_model(self, max_images: int | None) -> Dataset:
        """This dataset as shown to a model taking at most `max_images` (None: any)."""
        ...


def dataset_for_model(dataset: Dataset, max_images: int | None) -> Dataset:
    """`dataset.for_model(max_images)` where it adapts (`ModelAdapted`), else itself."""
    return dataset.for_model(max_images) if isinstance(dataset, ModelAdapted) else dataset


def dataset_hash(dataset: Dataset, prep: ImagePrep) -> str:
    """Hash what a model is shown: the dataset content plus how images are prepared."""
    payload = {
        "dataset": dataset.name,
        "fingerprint": dataset.fingerprint(),
        "prep": prep_fields(prep, hashed=True),
        "prep_version": PREP_VERSION,
    }
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


class UnknownDatasetError(KeyError):
    """No dataset of that name is registered or advertised by an entry point."""

    def __str__(self) -> str:
        # KeyError's own __str__ wraps the message in quotes.
        return str(self.args[0])


_REGISTRY: dict[str, Callable[..., Dataset]] = {}


def register_dataset(name: str, factory: Callable[..., Dataset], *, replace: bool = False) -> None:
    """Make ``factory`` available as ``name``; refuse to shadow a name silently."""
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not factory and not replace:
        raise ValueError(
            f"dataset {name!r} is already registered ({existing!r}); pass replace=True"
        )
    _REGISTRY[name] = factory


def unregister_dataset(name: str) -> None:
    """Forget ``name`` if registered (plugins unloading, tests cleaning up)."""
    _REGISTRY.pop(name, None)


def _entry_points() -> dict[str, EntryPoint]:
    # Imported here: importlib.metadata costs ~50 ms and is needed only on lookup.
    # Registered names win over entry points, so a plugin cannot hijack a built-in.
    from pytest_vlmbench.extensions import advertised

    return advertised(ENTRY_POINT_GROUP)


def available_datasets() -> list[str]:
    """Names that `get_dataset` accepts, sorted."""
    return sorted(set(_REGISTRY) | set(_entry_points()))


def dataset_factory(name: str) -> Callable[..., Dataset]:
    """The factory registered (or advertised by an entry point) as ``name``.

    Entry points are loaded only here, so importing this package stays cheap.
    """
    factory = _REGISTRY.get(name)
    if factory is None:
        entry_point = _entry_points().get(name)
        if entry_point is None:
            known = ", ".join(available_datasets()) or "none"
            raise UnknownDatasetError(f"unknown dataset {name!r}; known datasets: {known}")
        try:
            factory = entry_point.load()
        except Exception as exc:
            raise DatasetError(
                f"dataset {name!r}: cannot load entry point {entry_point.value!r} "
                f"({type(exc).__name__}: {exc})"
            ) from exc
    return factory


def get_dataset(name: str, **kwargs: Any) -> Dataset:
    """Build the dataset called ``name`` with ``kwargs`` (names: `available_datasets`)."""
    dataset = dataset_factory(name)(**kwargs)
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"dataset factory for {name!r} returned {type(dataset).__name__}, not a Dataset"
        )
    return dataset


# Imported last: these modules build on the types above (a deliberate import
# cycle that resolves because everything they need is already defined).
from pytest_vlmbench.datasets.images import FolderDataset, prepare_image  # noqa: E402
from pytest_vlmbench.datasets.manifest import ManifestDataset  # noqa: E402
from pytest_vlmbench.datasets.selection import images  # noqa: E402
from pytest_vlmbench.datasets.synthetic import SyntheticScenes  # noqa: E402

register_dataset(FolderDataset.name, FolderDataset)
register_dataset(ManifestDataset.name, ManifestDataset)
register_dataset(SyntheticScenes.name, SyntheticScenes)

register_dataset("images", images)  # what --vlm-images takes: folder, glob, manifest, image

from pytest_vlmbench.datasets.video import VideoScenes  # noqa: E402

register_dataset(VideoScenes.name, VideoScenes)
