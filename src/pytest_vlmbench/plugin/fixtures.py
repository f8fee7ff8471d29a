"""The fixtures a benchmark asks for: `vlm_model`, `vlm_dataset`, `vlm_bench`,
`vlm_pipeline`.

`vlm_model` is parametrised by the plugin over models x precisions for the device, so
asking for it (directly or through `vlm_bench`) is what makes a test a benchmark.
pytest imports this module with the plugin at every start, so the fixtures import
what they need (backends, datasets, the runner) when a test first asks for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pytest_vlmbench.plugin.stash import SESSION_KEY

if TYPE_CHECKING:
    from pytest_vlmbench.datasets import Dataset
    from pytest_vlmbench.plugin.bench import Bench
    from pytest_vlmbench.plugin.pipeline import VlmPipeline
    from pytest_vlmbench.plugin.pool import LoadedHandle
    from pytest_vlmbench.plugin.session import VlmSession
    from pytest_vlmbench.run.runner import ModelCase


def session_of(config: pytest.Config) -> VlmSession:
    """This process's session; a test fails with one line where the plugin is off."""
    session: VlmSession | None = config.stash.get(SESSION_KEY, None)
    if session is None:
        pytest.fail("pytest-vlmbench is not active in this process (an xdist worker?)",
                    pytrace=False)
    return session


@pytest.fixture
def vlm_model(request: pytest.FixtureRequest) -> LoadedHandle:
    """The loaded model for this matrix cell (loaded once per session and reused)."""
    from pytest_vlmbench.backends import BackendError, PrecisionUnavailable

    case: ModelCase = request.param
    try:
        return session_of(request.config).pool.get(case)
    except PrecisionUnavailable as exc:  # this install cannot run it here: a reasoned skip
        pytest.skip(str(exc))
    except BackendError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


_ANNOUNCED = pytest.StashKey[bool]()


@pytest.fixture
def vlm_dataset(request: pytest.FixtureRequest) -> Dataset:
    """The test's dataset: its `vlm_dataset` marker's, else --vlm-images' (chosen once
    per session, with --vlm-limit and --vlm-seed), else seeded synthetic scenes, one per
    measured request."""
    opts = session_of(request.config).options
    marker = request.node.get_closest_marker("vlm_dataset")
    if marker is not None:
        from pytest_vlmbench.datasets.selection import from_marker

        # A mistake is a DatasetArgumentError: one line, and the session exits with 4.
        return from_marker(marker.args, marker.kwargs, base=request.node.path.parent,
                           defaults={"seed": opts.seed, "n": opts.samples},
                           where=f"{request.node.nodeid}: @pytest.mark.vlm_dataset")
    if opts.images is not None:
        if not request.config.stash.get(_ANNOUNCED, False) \
                and request.config.get_verbosity() >= 0:
            request.config.stash[_ANNOUNCED] = True
            session_of(request.config).say(opts.images.describe())
        return opts.images.dataset
    from pytest_vlmbench.datasets.synthetic import SyntheticScenes

    return SyntheticScenes(n=opts.samples, seed=opts.seed)


@pytest.fixture
def vlm_video(request: pytest.FixtureRequest) -> Dataset:
    """Scenes of videos, for a video benchmark (`vlm_bench.run(task, vlm_video)`):
    --vlm-video's file, folder or glob, else the generated demo video (coloured scenes
    with hard cuts and moving shapes, written once into the cache directory), split by
    --vlm-scene-detector, sampled by --vlm-video-frames, laid out by --vlm-video-layout.
    Detection and frame extraction run once per video per session, outside every
    request; a video that cannot be decoded is one failed request naming it."""
    from pytest_vlmbench.plugin.options import VideoChoice

    opts = session_of(request.config).options
    choice = opts.video or VideoChoice(None)
    return choice.dataset(demo_dir=opts.cache_dir / "video")


@pytest.fixture
def vlm_bench(request: pytest.FixtureRequest, vlm_dataset: Dataset,
              vlm_model: LoadedHandle) -> Bench:
    """Runs tasks against `vlm_model`; see Bench.run (bench.py). Asks for `vlm_dataset`
    first, so a bad `vlm_dataset` marker fails before the model loads."""
    from pytest_vlmbench.plugin.bench import Bench

    return Bench(request, vlm_model)


@pytest.fixture
def vlm_pipeline(request: pytest.FixtureRequest) -> VlmPipeline:
    """Runs two-stage pipelines (a vision model's output into a text model, both from
    the catalog); see VlmPipeline.run (pipeline.py). Not parametrised: the stages name
    their models."""
    from pytest_vlmbench.plugin.pipeline import VlmPipeline

    return VlmPipeline(request)
