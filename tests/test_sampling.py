"""The seeded sample of N from any source (folder, glob, JSONL and CSV manifests): the
same seed gives the same sample in another Python process and whatever order the files
were created in; adding a file changes at most the one slot it wins; the seed, the limit
and the chosen ids are recorded (`selection()`, the entry's ``dataset.selection``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_vlmbench.datasets import (
    Dataset,
    DatasetSelection,
    FolderDataset,
    ManifestDataset,
    SyntheticScenes,
    dataset_selection,
    get_dataset,
)
from pytest_vlmbench.plugin import options
from tests.conftest import Project, write_png

NAMES = tuple(f"p{i:02d}.png" for i in range(20))
LIMIT, SEED = 6, 1234
KINDS = ("folder", "glob", "jsonl", "csv")


def make_source(root: Path, kind: str, names: tuple[str, ...]) -> Path:
    """Write ``names`` as PNGs under ``root`` in the order given, with the listing
    ``kind`` reads; return what to open (folder, glob, manifest)."""
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        write_png(root / "img" / name, (i * 11 % 256, 90, 200))
    if kind == "folder":
        return root / "img"
    if kind == "glob":
        (root / "img" / "notes.txt").write_text("not chosen by the glob")
        return root / "img" / "*.png"
    if kind == "jsonl":
        lines = [json.dumps({"image": f"img/{n}", "id": n.removesuffix(".png")})
                 for n in names]
        (root / "m.jsonl").write_text("\n".join(lines) + "\n")
        return root / "m.jsonl"
    rows = ["image,id,label", *(f"img/{n},{n.removesuffix('.png')},x" for n in names)]
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    return root / "m.csv"


def open_source(path: Path, limit: int | None = LIMIT, seed: int = SEED) -> Dataset:
    return get_dataset("images", path=str(path), limit=limit, seed=seed)


def chosen(dataset: Dataset) -> list[str]:
    selection = dataset_selection(dataset)
    assert selection is not None
    return selection["ids"]


@pytest.mark.parametrize("kind", KINDS)
def test_selection_records_seed_limit_and_ids(tmp_path: Path, kind: str) -> None:
    dataset = open_source(make_source(tmp_path, kind, NAMES))
    assert isinstance(dataset, DatasetSelection)
    selection = dataset_selection(dataset)
    assert selection is not None
    assert selection["seed"] == SEED
    assert selection["limit"] == LIMIT
    assert len(selection["ids"]) == LIMIT
    assert selection["ids"] == [s.id for s in dataset.samples()]  # the order yielded
    everything = dataset_selection(open_source(make_source(tmp_path / "all", kind, NAMES),
                                               limit=None))
    assert everything is not None
    assert everything["limit"] is None
    assert len(everything["ids"]) == len(NAMES)


def test_synthetic_scenes_record_their_selection() -> None:
    assert dataset_selection(SyntheticScenes(3, seed=9)) == {
        "seed": 9, "limit": 3, "ids": ["scene-0000", "scene-0001", "scene-0002"]}


def test_a_dataset_without_selection_records_none() -> None:
    class Plain:
        name = "plain"

        def samples(self):  # type: ignore[no-untyped-def]
            return iter(())

        def fingerprint(self) -> str:
            return "0" * 64

    assert dataset_selection(Plain()) is None


_CHILD = """
import json, sys
from pytest_vlmbench.datasets import dataset_selection, get_dataset
out = {}
for kind, path in json.loads(sys.argv[1]).items():
    out[kind] = dataset_selection(get_dataset("images", path=path, limit=LIMIT,
                                              seed=SEED))
print(json.dumps(out))
"""


def test_same_seed_same_sample_in_two_other_processes(tmp_path: Path) -> None:
    paths = {kind: str(make_source(tmp_path / kind, kind, NAMES)) for kind in KINDS}
    here = {kind: dataset_selection(open_source(Path(p))) for kind, p in paths.items()}
    code = _CHILD.replace("LIMIT", str(LIMIT)).replace("SEED", str(SEED))
    seen = []
    for hash_seed in ("1", "987654"):  # str hashing differs between the two processes
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run([sys.executable, "-c", code, json.dumps(paths)],
                              capture_output=True, text=True, env=env, check=True,
                              timeout=120)
        seen.append(json.loads(done.stdout))
    assert seen[0] == seen[1] == here


@pytest.mark.parametrize("kind", KINDS)
def test_file_system_order_does_not_matter(tmp_path: Path, kind: str) -> None:
    forward = open_source(make_source(tmp_path / "a", kind, NAMES))
    shuffled = NAMES[7:] + NAMES[:7][::-1]
    backward = open_source(make_source(tmp_path / "b", kind, shuffled))
    if kind in ("folder", "glob"):  # a folder yields its ids sorted
        assert chosen(forward) == chosen(backward) == sorted(chosen(forward))
    else:  # a manifest yields them in its own order: the same ones
        assert sorted(chosen(forward)) == sorted(chosen(backward))
        assert chosen(backward) == [n.removesuffix(".png") for n in shuffled
                                    if n.removesuffix(".png") in chosen(forward)]


def _replaced(before: list[str], after: list[str]) -> tuple[set[str], set[str]]:
    return set(before) - set(after), set(after) - set(before)


@pytest.mark.parametrize("kind", KINDS)
def test_adding_a_file_changes_at_most_the_slot_it_wins(tmp_path: Path, kind: str) -> None:
    before = chosen(open_source(make_source(tmp_path / "base", kind, NAMES)))
    outcomes = set()
    for extra in range(30):
        name = f"new{extra:02d}.png"
        after = chosen(open_source(make_source(tmp_path / name, kind, (*NAMES, name))))
        dropped, added = _replaced(before, after)
        key = name.removesuffix(".png") if kind in ("jsonl", "csv") else name
        if added:
            assert added == {key}, (name, added)
            assert len(dropped) == 1, (name, dropped)
        else:
            assert dropped == set()
        assert len(after) == LIMIT
        outcomes.add(bool(added))
    assert outcomes == {True, False}  # both cases happened: the file won a slot, or not


@pytest.mark.parametrize("factory", [
    lambda p: FolderDataset(p / "img", limit=LIMIT, seed=SEED),
    lambda p: ManifestDataset(p / "m.jsonl", limit=LIMIT, seed=SEED),
])
def test_the_constructors_record_the_same_selection_as_images(
        tmp_path: Path, factory: Callable[[Path], Dataset]) -> None:
    make_source(tmp_path, "jsonl", NAMES)
    dataset = factory(tmp_path)
    assert chosen(dataset) == [s.id for s in dataset.samples()]


CAPTION_TEST = """
from tiny_tasks import CAPTION

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION)
"""


def test_the_benchmark_entry_records_the_selection(project: Project) -> None:
    make_source(project.pytester.path / "src", "folder", NAMES[:7])
    project.pytester.makepyfile(test_bench=CAPTION_TEST)
    out = project.run(f"{options.IMAGES}=src/img", f"{options.LIMIT}=3",
                      f"{options.SEED}=42", f"{options.WARMUP}=0", f"{options.THREADS}=1",
                      f"{options.MODELS}=tiny-vision")
    out.run.assert_outcomes(passed=1)
    (entry,) = out.doc()["benchmarks"]
    expected = dataset_selection(FolderDataset(project.pytester.path / "src" / "img",
                                               limit=3, seed=42))
    assert entry["dataset"]["selection"] == expected
    assert entry["dataset"]["prep"] == {"long_edge": 448, "jpeg_quality": 90,
                                        "max_pixels": None, "exif_transpose": True}
