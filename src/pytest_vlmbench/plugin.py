"""The pytest plugin: options, markers, matrix parametrisation, session hooks.

Only hooks live here; the work lives in modules named for what they own. This module
imports nothing heavy: backends are imported when a model is loaded.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from pytest_vlmbench import devices, table
from pytest_vlmbench.catalog import CatalogError
from pytest_vlmbench.devices import DeviceError
from pytest_vlmbench.fixtures import vlm_bench, vlm_dataset, vlm_model
from pytest_vlmbench.options import Options, register, register_aliases
from pytest_vlmbench.runner import ModelCase
from pytest_vlmbench.session import VlmSession
from pytest_vlmbench.stash import SESSION_KEY

__all__ = ["vlm_bench", "vlm_dataset", "vlm_model"]

_taken_aliases: list[str] = []


@pytest.hookimpl(trylast=True)
def pytest_addoption(parser: pytest.Parser) -> None:
    # Last, so that a short alias another plugin has already claimed is detected.
    register(parser)
    _taken_aliases[:] = register_aliases(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "vlm_slo(**limits): service-level objectives checked after vlm_bench.run, e.g. "
        "vlm_slo(max_latency_p95_s=2.0, min_parse_rate=1.0)",
    )
    config.addinivalue_line(
        "markers",
        "vlm_modality(name): run this benchmark only on models of this modality "
        "('vision' or 'text')",
    )
    if hasattr(config, "workerinput"):
        return  # pytest-xdist workers: issue 5 wires them; the controller owns results
    options = Options.from_config(config)
    try:
        profile, detection = devices.resolve(options.device)
    except DeviceError as exc:
        raise pytest.UsageError(f"pytest-vlmbench: {exc}") from None
    config.stash[SESSION_KEY] = VlmSession(config, options, profile, detection, _taken_aliases)


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session: pytest.Session) -> None:
    """Validate the catalog before collecting, so an error is one line and exit status 4.

    (Raised later, from pytest_generate_tests, it would be a collection traceback.) A
    session with no catalog file is left alone unless models were asked for: plain test
    suites that never use the plugin must not fail because of it.
    """
    vlm = session.config.stash.get(SESSION_KEY, None)
    if vlm is None or not (vlm.options.catalog.exists() or vlm.options.models):
        return
    try:
        vlm.matrix()
    except CatalogError as exc:
        raise pytest.UsageError(f"pytest-vlmbench: {exc}") from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "vlm_model" not in metafunc.fixturenames:
        return
    session = metafunc.config.stash.get(SESSION_KEY, None)
    if session is None:
        return
    wanted = {m.args[0] for m in metafunc.definition.iter_markers("vlm_modality") if m.args}
    params = []
    for cell in session.matrix():
        marks = []
        skip = cell.skip
        if skip is None and wanted and cell.case.modality not in wanted:
            needed = "/".join(sorted(wanted))
            skip = f"needs a {needed} model; {cell.case.model} is {cell.case.modality}"
        if skip is not None:
            marks.append(pytest.mark.skip(reason=skip))
        params.append(pytest.param(cell.case, id=cell.case.id, marks=marks))
    metafunc.parametrize("vlm_model", params, indirect=True)


def _case_of(item: pytest.Item) -> ModelCase | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    case = callspec.params.get("vlm_model")
    return case if isinstance(case, ModelCase) else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group benchmarks by matrix cell (stable) so each model is loaded once."""
    order: dict[ModelCase, int] = {}
    for item in items:
        case = _case_of(item)
        if case is not None and case not in order:
            order[case] = len(order)
    if order:

        def rank(item: pytest.Item) -> int:
            case = _case_of(item)
            return -1 if case is None else order[case]

        items.sort(key=rank)


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> Generator[None, Any, Any]:
    vlm = session.config.stash.get(SESSION_KEY, None)
    if vlm is not None:
        vlm.finish(interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)
    return (yield)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    vlm = config.stash.get(SESSION_KEY, None)
    if vlm is None or not vlm.benchmarks:
        return
    tr = terminalreporter
    tr.section("pytest-vlmbench")
    tr.write_line(
        f"device {vlm.device.name} ({vlm.detection.evidence}); "
        f"{vlm.options.samples} samples, {vlm.options.warmup} warm-up"
    )
    for line in table.render(vlm.benchmarks):
        tr.write_line(line)
    for b in vlm.benchmarks:
        for warning in b["warnings"]:
            tr.write_line(f"warning: {b['id']}: {warning}", yellow=True)
    loads = ", ".join(
        f"{e['model']}-{e['precision']} x{e['count']} ({e['load_s']:.2f} s)"
        for e in vlm.pool.loads.values()
    )
    if loads:
        tr.write_line(f"model loads: {loads}")
    tr.write_line(f"results: {vlm.results_path}")
    tr.write_line(f"records: {vlm.records_path}")
    if vlm.log_path is not None and vlm.log_path.exists():
        tr.write_line(f"backend log: {vlm.log_path}")
