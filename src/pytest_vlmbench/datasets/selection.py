"""Datasets chosen by a user rather than built in code: `--vlm-images` / ``vlm_images``
(`ImageSource`), the registry's ``images`` factory, and the ``vlm_dataset`` marker.

One spelling covers a user's photos in all three places: a folder, a glob such as
``album/**/*.jpg``, a manifest (``.jsonl``, ``.csv``: `manifest.py`), or one image file.
Which ``limit`` of them are chosen is `select_ids`'s rule, seeded and independent of
the file system's order, so the same photos are chosen on every machine.
"""

from __future__ import annotations

import functools
import glob
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pytest_vlmbench.datasets import (
    Dataset,
    DatasetArgumentError,
    DatasetError,
    UnknownDatasetError,
    available_datasets,
    dataset_factory,
)
from pytest_vlmbench.datasets.images import (
    DEFAULT_EXTENSIONS,
    FolderDataset,
    folder_call,
    some_of,
)
from pytest_vlmbench.datasets.manifest import SUFFIXES, ManifestDataset, manifest_call

_MAGIC = ("*", "?", "[")
_D = TypeVar("_D", FolderDataset, ManifestDataset)
_NAMED_IDS = 5


def open_images(text: str, base: Path, *, limit: int | None, seed: int,
                where: str) -> FolderDataset | ManifestDataset:
    """The dataset ``text`` names, relative to ``base``: a folder, a manifest, one
    image, or a glob (its folders up to the first wildcard are the root, the rest the
    `FolderDataset` pattern). Errors are one line starting with ``where``."""
    path = base / Path(text).expanduser()
    root, pattern = path, None
    if not path.exists() and any(magic in text for magic in _MAGIC):
        parts = path.parts
        first = next(i for i, part in enumerate(parts) if any(m in part for m in _MAGIC))
        root, pattern = Path(*parts[:first]), "/".join(parts[first:])
        if not root.is_dir():
            raise DatasetArgumentError(
                f"{where}: the glob's folder {root.absolute()} does not exist")
    elif not path.exists():
        raise DatasetArgumentError(
            f"{where}: no such folder, manifest or image file (looked for "
            f"{path.absolute()})")
    elif path.is_file():
        suffix = path.suffix.lower()
        if suffix in SUFFIXES:
            return _reworded(lambda: ManifestDataset(path, limit=limit, seed=seed),
                             manifest_call(path, limit), where)
        if suffix not in DEFAULT_EXTENSIONS:
            raise DatasetArgumentError(
                f"{where}: is a file, neither a manifest ({', '.join(SUFFIXES)}) nor an "
                f"image ({' '.join(DEFAULT_EXTENSIONS)})")
        root, pattern = path.parent, glob.escape(path.name)
    return _reworded(lambda: FolderDataset(root, limit=limit, seed=seed, pattern=pattern),
                     folder_call(root, limit, DEFAULT_EXTENSIONS, pattern), where)


def _reworded(build: Callable[[], _D], call: str, where: str) -> _D:
    """Build; a mistake's message starts with ``where`` instead of the constructor
    ``call`` the user never wrote."""
    try:
        return build()
    except DatasetArgumentError as exc:
        raise DatasetArgumentError(f"{where}: {str(exc).removeprefix(call + ': ')}") from None


def images(path: str | os.PathLike[str], *, limit: int | None = None,
           seed: int = 0) -> Dataset:
    """The registry's ``images``: what `--vlm-images` accepts, from code or a marker."""
    if not isinstance(path, (str, os.PathLike)):
        raise DatasetArgumentError(
            f"images(path={path!r}): path must be a folder, glob, manifest or image file")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise DatasetArgumentError(f"images(limit={limit!r}): limit must be at least 1")
    text = os.fspath(path)
    return open_images(text, Path(), limit=limit, seed=seed, where=f"images({text!r})")


@dataclass(frozen=True)
class ImageSource:
    """`--vlm-images` (or ``vlm_images``) as the session resolved it; the dataset is
    built once, on first use (the plugin asks at start-up, so a mistake is exit 4
    before any model loads), and shared by every benchmark."""

    text: str
    base: Path
    """The folder relative paths start from: where pytest was started (command line),
    or the ini file's folder (ini)."""
    limit: int | None
    seed: int
    where: str
    """How messages name the setting: ``--vlm-images=photos/`` or ``vlm_images = ...``."""

    @functools.cached_property
    def dataset(self) -> FolderDataset | ManifestDataset:
        return open_images(self.text, self.base, limit=self.limit, seed=self.seed,
                           where=self.where)

    def describe(self) -> str:
        """One line saying which images were chosen, for the terminal."""
        dataset = self.dataset
        chosen = (f"{len(dataset.ids)} of {dataset.available} images chosen with seed "
                  f"{self.seed}" if len(dataset.ids) < dataset.available
                  else f"all {len(dataset.ids)} images")
        return f"vlm_dataset: {self.where}: {chosen}: {some_of(dataset.ids, _NAMED_IDS)}"


def from_marker(args: Sequence[object], kwargs: Mapping[str, Any], *, base: Path,
                defaults: Mapping[str, Any], where: str) -> Dataset:
    """The dataset ``@pytest.mark.vlm_dataset(name, **kwargs)`` asks for, from the
    registry. A relative ``path=`` is relative to ``base`` (the test file's folder);
    ``defaults`` (the session's ``seed``, ``n``) fill the factory's parameters of those
    names that the marker leaves out."""
    shown = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
    call = f"{where}({shown})"
    if len(args) != 1 or not isinstance(args[0], str):
        raise DatasetArgumentError(
            f"{call}: expected one dataset name first, e.g. vlm_dataset('folder', "
            f"path='photos'); known: {', '.join(available_datasets())}")
    name = args[0]
    try:
        factory = dataset_factory(name)
    except (UnknownDatasetError, DatasetError) as exc:
        raise DatasetArgumentError(f"{call}: {exc}") from None
    given = dict(kwargs)
    path = given.get("path")
    if isinstance(path, (str, os.PathLike)) and not Path(path).expanduser().is_absolute():
        given["path"] = str(base / Path(path).expanduser())
    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable: no defaults to offer
        accepted = {}  # type: ignore[assignment]
    given.update({k: v for k, v in defaults.items() if k in accepted and k not in given})
    try:
        dataset = factory(**given)
    except TypeError as exc:  # a misspelt or missing argument
        raise DatasetArgumentError(f"{call}: {exc}") from None
    except DatasetArgumentError as exc:
        raise DatasetArgumentError(f"{call}: {exc}") from None
    if not isinstance(dataset, Dataset):
        raise DatasetArgumentError(
            f"{call}: the factory returned {type(dataset).__name__}, not a Dataset")
    return dataset
