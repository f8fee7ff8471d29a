"""The fixtures a benchmark asks for: `vlm_model`, `vlm_dataset`, `vlm_bench`.

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
    from pytest_vlmbench.backends import BackendError

    case: ModelCase = request.param
    try:
        return session_of(request.config).pool.get(case)
    except BackendError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


@pytest.fixture
def vlm_dataset(request: pytest.FixtureRequest) -> Dataset:
    """The default dataset: seeded synthetic scenes, one per measured request."""
    from pytest_vlmbench.datasets.synthetic import SyntheticScenes

    opts = session_of(request.config).options
    return SyntheticScenes(n=opts.samples, seed=opts.seed)


@pytest.fixture
def vlm_bench(request: pytest.FixtureRequest, vlm_model: LoadedHandle) -> Bench:
    """Runs tasks against `vlm_model`; see Bench.run (bench.py)."""
    from pytest_vlmbench.plugin.bench import Bench

    return Bench(request, vlm_model)
