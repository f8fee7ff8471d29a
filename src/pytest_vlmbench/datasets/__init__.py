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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pytest_vlmbench.errors import UsageMistake, UserInputError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

__all__ = [
    "ENTRY_POINT_GROUP",
    "PREP_VERSION",
    "Dataset",
    "DatasetArgumentError",
    "DatasetError",
    "DatasetNotes",
    "FolderDataset",
    "ImageError",
    "ImagePrep",
    "ManifestDataset",
    "PreparedImage",
    "Sample",
    "SyntheticScenes",
    "UnknownDatasetError",
    "available_datasets",
    "dataset_factory",
    "dataset_hash",
    "dataset_label",
    "dataset_notes",
    "get_dataset",
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

    def __post_init__(self) -> None:
        # A usage mistake (vlm_bench.run(image_size=-1), --vlm-image-size): one line.
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


def dataset_hash(dataset: Dataset, prep: ImagePrep) -> str:
    """Hash what a model is shown: the dataset content plus how images are prepared."""
    payload = {
        "dataset": dataset.name,
        "fingerprint": dataset.fingerprint(),
        "prep": dataclasses.asdict(prep),
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
    from importlib import metadata

    # Registered names win over entry points, so a plugin cannot hijack "folder".
    found: dict[str, EntryPoint] = {}
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry_point.name, entry_point)
    return found


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
