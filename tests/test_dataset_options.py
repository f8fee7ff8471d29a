"""Datasets chosen from the command line, the ini and the `vlm_dataset` marker:
`--vlm-images` (a folder, a glob, a manifest), `--vlm-limit` and `--vlm-seed` choosing
the same images on every machine, recorded in the results; and their mistakes, one line
and exit status 4 (harness: tests/bad_input.py)."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from pathlib import Path

import pytest

from pytest_vlmbench.datasets import (
    DatasetArgumentError,
    FolderDataset,
    ImagePrep,
    ManifestDataset,
    dataset_hash,
    get_dataset,
)
from pytest_vlmbench.datasets.images import match_glob
from pytest_vlmbench.plugin import options
from tests.bad_input import Case, check_case
from tests.conftest import Project, write_png

FIXTURE_IMAGES = Path(__file__).resolve().parent.parent / "fixtures" / "images"
NAMES = ("a.png", "b.png", "c.png", "d.png", "e.png", "f.png", "g.png")
CAPTION_TEST = """
from tiny_tasks import CAPTION

def test_caption(vlm_bench):
    vlm_bench.run(CAPTION)
"""
ONE = (f"{options.WARMUP}=0", f"{options.THREADS}=1", f"{options.MODELS}=tiny-vision")


def chosen_by_rule(names: list[str], limit: int, seed: int) -> list[str]:
    """The documented rule, written out again: rank by sha256 of "seed\\0id", keep the
    `limit` lowest, sort by id."""
    ranked = sorted(names, key=lambda n: hashlib.sha256(f"{seed}\0{n}".encode()).hexdigest())
    return sorted(ranked[:limit])


def album(root: Path, names: tuple[str, ...] = NAMES) -> Path:
    for i, name in enumerate(names):
        write_png(root / name, (30 * i % 256, 200, 40))
    return root


# --- the selection rule, without a model ---------------------------------------------


def test_three_of_the_fixture_photos_are_a_fixed_function_of_names_and_seed() -> None:
    """The issue's `--vlm-images=fixtures/images --vlm-limit=3 --vlm-seed=42`: pinned, so
    a change of rule (which would change every user's selection) fails here."""
    dataset = get_dataset("images", path=str(FIXTURE_IMAGES), limit=3, seed=42)
    assert dataset.ids == ("chelsea.jpg", "coins-grey.jpg", "rocket-exif-orientation-6.jpg")
    names = sorted(p.name for p in FIXTURE_IMAGES.glob("*.jpg"))
    assert list(dataset.ids) == chosen_by_rule(names, 3, 42)
    other = get_dataset("images", path=str(FIXTURE_IMAGES), limit=3, seed=2).ids
    assert other == ("astronaut.jpg", "coins-grey.jpg", "rocket-exif-orientation-6.jpg")
    assert list(other) == chosen_by_rule(names, 3, 2)


def test_the_choice_does_not_depend_on_the_order_files_were_made(tmp_path: Path) -> None:
    forward = album(tmp_path / "one")
    backward = album(tmp_path / "two", tuple(reversed(NAMES)))
    assert FolderDataset(forward, limit=3, seed=5).ids \
        == FolderDataset(backward, limit=3, seed=5).ids \
        == tuple(chosen_by_rule(list(NAMES), 3, 5))


def test_ids_are_nfc_whatever_the_file_system_hands_out(tmp_path: Path) -> None:
    """macOS names files in NFD: the id (and so the choice and the hash) is NFC."""
    nfd = unicodedata.normalize("NFD", "café.png")
    write_png(tmp_path / nfd)
    (sample,) = FolderDataset(tmp_path).samples()
    assert sample.id == unicodedata.normalize("NFC", "café.png") != nfd
    assert sample.load_image is not None
    assert sample.load_image()  # the file is read by its name on disk


@pytest.mark.parametrize(("path", "pattern", "matches"), [
    ("a.jpg", "**/*.jpg", True), ("x/y/a.jpg", "**/*.jpg", True), ("a.JPG", "*.jpg", False),
    ("x/a.jpg", "*.jpg", False), ("x/a.jpg", "x/*.jpg", True), ("x/y/a.jpg", "x/**", True),
    ("b[1].jpg", "b[[]1].jpg", True),
])
def test_globs_match_the_same_on_every_os(path: str, pattern: str, matches: bool) -> None:
    assert match_glob(path, pattern) is matches


def test_a_glob_keeps_its_root_and_matches_below_it(tmp_path: Path) -> None:
    album(tmp_path / "album" / "2024", ("x.png", "y.png"))
    album(tmp_path / "album", ("top.png",))
    write_png(tmp_path / "album" / "2024" / "skip.gif")
    dataset = get_dataset("images", path=str(tmp_path / "album" / "**" / "*.png"))
    assert isinstance(dataset, FolderDataset)
    assert dataset.ids == ("2024/x.png", "2024/y.png", "top.png")
    assert dataset.fingerprint() != FolderDataset(tmp_path / "album").fingerprint()


def test_a_jsonl_manifest_gives_ids_descriptions_and_truth(tmp_path: Path) -> None:
    album(tmp_path / "pics")
    rows = [{"image": f"pics/{n}", "id": n[0], "description": f"photo {n[0]}",
             "truth": {"score": i}} for i, n in enumerate(NAMES)]
    manifest = tmp_path / "picks.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    full = ManifestDataset(manifest)
    assert [s.id for s in full.samples()] == list("abcdefg")
    assert next(full.samples()).description == "photo a"
    assert next(full.samples()).truth == {"score": 0}
    chosen = get_dataset("images", path=str(manifest), limit=3, seed=42)
    assert list(chosen.ids) == chosen_by_rule(list("abcdefg"), 3, 42)
    assert chosen.fingerprint() != full.fingerprint()


def test_a_csv_manifest_and_its_missing_image_note(tmp_path: Path) -> None:
    album(tmp_path, ("a.png", "b.png"))
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,description,room\na.png,a red card,kitchen\n"
                        "b.png,,hall\ngone.png,nothing,attic\n")
    dataset = ManifestDataset(manifest)
    samples = list(dataset.samples())
    assert [(s.id, s.description, dict(s.truth)) for s in samples] == [
        ("a.png", "a red card", {"room": "kitchen"}), ("b.png", None, {"room": "hall"}),
        ("gone.png", "nothing", {"room": "attic"})]
    assert dataset.notes() == [f"manifest {manifest}: 1 listed image not found: gone.png"]


@pytest.mark.parametrize(("text", "words"), [
    ('{"image": "a.png"}\n{"image": "a.png"}\n', "line 2: id 'a.png' is already on line 1"),
    ('{"image": "a.png"}\nnot json\n', "line 2: not JSON"),
    ('{"id": "x"}\n', "line 1: 'image' must be a path to an image"),
    ('{"image": "gone.png"}\n', "none of its 1 images exists"),
    ("\n", "lists no images"),
])
def test_manifest_mistakes_are_one_line_naming_the_line(
        tmp_path: Path, text: str, words: str) -> None:
    album(tmp_path, ("a.png",))
    (tmp_path / "m.jsonl").write_text(text)
    with pytest.raises(DatasetArgumentError, match="ManifestDataset") as caught:
        ManifestDataset(tmp_path / "m.jsonl")
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


# --- real sessions on the tiny models -------------------------------------------------


def measured_ids(out_records: list[dict[str, object]]) -> list[object]:
    return [r["sample_id"] for r in out_records if r["phase"] == "measure"]


def test_the_options_choose_the_same_photos_for_a_seed_and_record_them(
        project: Project) -> None:
    images = album(project.pytester.path / "imgs")
    project.pytester.makepyfile(test_bench=CAPTION_TEST)
    expected = chosen_by_rule(list(NAMES), 3, 42)
    out = project.run(f"{options.IMAGES}=imgs", f"{options.LIMIT}=3", f"{options.SEED}=42",
                      *ONE)
    out.run.assert_outcomes(passed=1)
    assert measured_ids(out.records()) == expected  # one request per chosen photo
    (entry,) = out.doc()["benchmarks"]
    assert entry["samples"] == 3
    assert entry["dataset"]["name"] == "folder"
    assert entry["dataset"]["hash"] == dataset_hash(
        FolderDataset(images, limit=3, seed=42), ImagePrep())
    assert not any("repeat" in w for w in entry["warnings"])
    out.run.stdout.fnmatch_lines(
        [f"*vlm_dataset: --vlm-images=imgs: 3 of 7 images chosen with seed 42: "
         f"{', '.join(expected)}"])
    again = project.run(f"{options.IMAGES}=imgs", f"{options.LIMIT}=3", f"{options.SEED}=3",
                        f"{options.SAMPLES}=4", *ONE)
    again.run.assert_outcomes(passed=1)
    other = chosen_by_rule(list(NAMES), 3, 3)
    assert other != expected
    # --vlm-samples given: 4 requests cycle over the 3 photos, and the benchmark says so
    assert measured_ids(again.records()) == [*other, f"{other[0]}#1"]
    assert any("repeat 1 of them" in w for w in again.doc()["benchmarks"][0]["warnings"])


def test_ini_glob_and_manifest_forms(project: Project) -> None:
    """The ini's path is relative to the ini file; a manifest gives text-only models its
    descriptions, while over bare photos they are skipped with the reason."""
    root = project.pytester.path
    album(root / "shots" / "day1", ("a.png", "b.png"))
    album(root / "shots", ("c.png",))
    write_png(root / "shots" / "day1" / "d.gif")
    project.pytester.makepyfile(test_bench=CAPTION_TEST)
    ini = root / "tox.ini"  # pytester.makeini's file
    ini.write_text(ini.read_text().rstrip() + "\nvlm_images = shots/**/*.png\nvlm_limit = 2\n")
    out = project.run(f"{options.WARMUP}=0", f"{options.THREADS}=1", "-rs")
    out.run.assert_outcomes(passed=1, skipped=1)  # tiny-text has no descriptions here
    assert measured_ids(out.records()) == chosen_by_rule(["day1/a.png", "day1/b.png",
                                                          "c.png"], 2, 0)
    out.run.stdout.fnmatch_lines(
        ["SKIPPED*tiny-text is a text-only model and dataset 'folder' has no text*"])

    (root / "m.jsonl").write_text("\n".join(json.dumps(
        {"image": f"shots/day1/{n}", "description": f"a picture called {n}"})
        for n in ("a.png", "b.png")))
    manifest = project.run(f"{options.IMAGES}=m.jsonl", f"{options.WARMUP}=0",
                           f"{options.THREADS}=1")
    manifest.run.assert_outcomes(passed=2)  # the text model gets the descriptions
    by_model: dict[object, list[object]] = {}
    for r in manifest.records():
        by_model.setdefault(r["model"], []).append(r["sample_id"])
        assert r["error"] is None, r["error"]
    assert by_model == {"tiny-text": ["shots/day1/a.png", "shots/day1/b.png"],
                        "tiny-vision": ["shots/day1/a.png", "shots/day1/b.png"]}
    assert {b["dataset"]["name"] for b in manifest.doc()["benchmarks"]} == {"manifest"}


def test_the_marker_overrides_the_command_line(project: Project) -> None:
    root = project.pytester.path
    album(root / "imgs")
    album(root / "suite" / "own", ("x.png", "y.png", "z.png"))
    (root / "suite" / "test_marked.py").write_text("""
import pytest
from tiny_tasks import CAPTION

@pytest.mark.vlm_dataset("synthetic", n=2)
def test_scenes(vlm_bench):
    vlm_bench.run(CAPTION, samples=2)

@pytest.mark.vlm_dataset("folder", path="own", limit=2)
def test_own(vlm_bench):
    vlm_bench.run(CAPTION)

def test_cli(vlm_bench):
    vlm_bench.run(CAPTION, samples=1)
""")
    out = project.run("suite", f"{options.IMAGES}=imgs", f"{options.SEED}=9", *ONE)
    out.run.assert_outcomes(passed=3)
    ids: dict[str, list[object]] = {}
    for r in out.records():
        ids.setdefault(str(r["benchmark"]).split("::")[1].split("[")[0], []).append(
            r["sample_id"])
    assert ids["test_scenes"] == ["scene-0000", "scene-0001"]
    # path= is relative to the test file; seed defaults to --vlm-seed; samples to the
    # session's (here one per --vlm-images photo, 7), cycling over the 2 chosen
    own = chosen_by_rule(["x.png", "y.png", "z.png"], 2, 9)
    assert ids["test_own"][:2] == own
    assert len(ids["test_own"]) == len(NAMES)
    assert ids["test_cli"] == [chosen_by_rule(list(NAMES), 7, 9)[0]]


# --- mistakes: one line, exit 4, nothing measured --------------------------------------

MARKED = """
import pytest
from tiny_tasks import CAPTION

@pytest.mark.vlm_dataset({args})
def test_marked(vlm_bench):
    vlm_bench.run(CAPTION, samples=1, warmup=0)
"""

VIDEO_BENCH = """
def test_video(vlm_bench, vlm_video):
    vlm_bench.run("scene_caption", vlm_video, warmup=0)
"""

CASES = [
    Case("images-missing", args=("--vlm-images=nowhere",),
         words=("--vlm-images=nowhere: no such folder, manifest or image file (looked for ",
                "/nowhere)")),
    Case("images-glob-matches-nothing", args=("--vlm-images=pics/*.jpg",),
         files={"pics/a.txt": "x"},
         words=("--vlm-images=pics/*.jpg: no files match '*.jpg' in ", "/pics")),
    Case("images-glob-matches-no-image", args=("--vlm-images=pics/*",),
         files={"pics/a.txt": "x"},
         words=("--vlm-images=pics/*: no images found", "matching '*'; found 1 other file, "
                "e.g. a.txt")),
    Case("images-glob-folder-missing", args=("--vlm-images=gone/**/*.jpg",),
         words=("--vlm-images=gone/**/*.jpg: the glob's folder", "/gone does not exist")),
    Case("images-empty-folder", args=("--vlm-images=pics",), files={"pics/.keep": ""},
         words=("--vlm-images=pics: folder is empty",)),
    Case("images-not-an-image", args=("--vlm-images=notes.txt",), files={"notes.txt": "x"},
         words=("--vlm-images=notes.txt: is a file, neither a manifest",)),
    Case("images-bad-manifest", args=("--vlm-images=m.jsonl",),
         files={"m.jsonl": '{"image": 3}\n'},
         words=("--vlm-images=m.jsonl: line 1: 'image' must be a path to an image",)),
    Case("limit-zero", args=("--vlm-images=pics", "--vlm-limit=0"), files={"pics/.keep": ""},
         words=("--vlm-limit: expected a number >= 1, got 0",)),
    Case("limit-without-images", args=("--vlm-limit=3",),
         words=("--vlm-limit=3 needs --vlm-images",)),
    Case("limit-without-images-in-the-ini", ini="vlm_limit = 3",
         words=("vlm_limit = 3 (pytest.ini) needs --vlm-images",)),
    Case("images-from-the-ini", ini="vlm_images = nowhere",
         words=("vlm_images = nowhere (pytest.ini): no such folder",)),
    Case("marker-unknown-dataset", files={"test_bench.py": MARKED.format(args="'foldr'")},
         words=("test_bench.py::test_marked", "@pytest.mark.vlm_dataset('foldr'): unknown "
                "dataset 'foldr'; known datasets: folder, images, manifest, synthetic, video")),
    Case("marker-without-a-name", files={"test_bench.py": MARKED.format(args="path='p'")},
         words=("@pytest.mark.vlm_dataset(path='p'): expected one dataset name first",)),
    Case("marker-misspelt-argument",
         files={"test_bench.py": MARKED.format(args="'folder', pth='p'")},
         words=("@pytest.mark.vlm_dataset('folder', pth='p'): ", "'pth'")),
    Case("marker-folder-missing",
         files={"test_bench.py": MARKED.format(args="'folder', path='gone'")},
         words=("@pytest.mark.vlm_dataset('folder', path='gone'): FolderDataset(",
                "folder not found")),
    Case("video-missing", args=("--vlm-video=nowhere.mp4",),
         files={"test_bench.py": VIDEO_BENCH},
         words=("--vlm-video=nowhere.mp4: VideoScenes(", "nowhere.mp4")),
    Case("video-bad-detector", args=("--vlm-scene-detector=fancy",),
         words=("--vlm-scene-detector=fancy: expected content or adaptive",)),
    Case("video-bad-threshold", args=("--vlm-scene-detector=content:-3",),
         words=("--vlm-scene-detector=content:-3: expected content or adaptive, optionally "
                ":THRESHOLD (> 0)",)),
    Case("video-nan-threshold", args=("--vlm-scene-detector=content:nan",),
         words=("--vlm-scene-detector=content:nan: expected content or adaptive",)),
    Case("video-middle-with-frames",
         args=("--vlm-video-layout=middle", "--vlm-video-frames=start"),
         words=("--vlm-video-frames=start with --vlm-video-layout=middle: the middle "
                "layout sends the scene's middle frame alone",)),
    Case("video-bad-layout", args=("--vlm-video-layout=diagonal",),
         words=("--vlm-video-layout=diagonal: expected one of auto, images, panorama",)),
    Case("video-bad-frames", args=("--vlm-video-frames=often",),
         files={"test_bench.py": VIDEO_BENCH},
         words=("--vlm-video-frames=often: unknown frame 'often'",)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_dataset_option_mistakes(case: Case, tmp_path: Path, model_cache: Path) -> None:
    check_case(tmp_path, model_cache, case)
    assert not (tmp_path / "out" / "results.records.jsonl").exists()  # nothing ran
    log = tmp_path / "out" / "results.backend.log"
    assert not log.exists() or "== load " not in log.read_text()  # no model loaded
