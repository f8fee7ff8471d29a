"""The pytest plugin: options, markers, matrix parametrisation, session hooks.

Only hooks live here; the work lives in modules named for what they own. pytest
imports this module at every start wherever the plugin is installed, so at module
level it imports the standard library, pytest and our light modules only (options,
the catalog and device tables, file naming); backends, datasets, the runner, power
meters, numpy and the results schema are imported when a benchmark needs them
(tests/test_startup.py holds that line).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from pytest_vlmbench.errors import UsageMistake, UserInputError
from pytest_vlmbench.models import devices
from pytest_vlmbench.models.catalog import CatalogError
from pytest_vlmbench.models.devices import DeviceError
from pytest_vlmbench.plugin import benchmark_bridge, parallel
from pytest_vlmbench.plugin.fixtures import (
    vlm_bench,
    vlm_dataset,
    vlm_model,
    vlm_pipeline,
    vlm_video,
)
from pytest_vlmbench.plugin.options import (
    EXTENDED,
    MARKERS,
    Options,
    register,
    register_aliases,
)
from pytest_vlmbench.plugin.power_fixture import vlm_power
from pytest_vlmbench.plugin.stash import SESSION_KEY

if TYPE_CHECKING:
    from pytest_vlmbench.plugin.session import VlmSession
    from pytest_vlmbench.run.runner import ModelCase

__all__ = ["vlm_bench", "vlm_dataset", "vlm_model", "vlm_pipeline", "vlm_power", "vlm_video"]

_TAKEN_KEY = pytest.StashKey[list[str]]()
_USAGE_MISTAKE = "vlm_usage_mistake"  # a test report's user property: the one line
# CUDA_VISIBLE_DEVICES before a deliberate --device=cpu run hid the GPUs (None: unset).
_CUDA_ENV_KEY = pytest.StashKey[str | None]()


def pytest_addoption(parser: pytest.Parser) -> None:
    register(parser)


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> Generator[None, None, None]:
    """Add the short aliases (--device, ...) only after every plugin and initial conftest
    has registered its options, so one that registers `--device` itself keeps it."""
    yield
    early_config.stash[_TAKEN_KEY] = register_aliases(parser)


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    workerinput = getattr(config, "workerinput", None)
    options = Options.from_config(config)
    if options.fail_on:  # a typo in a rule is a usage error even without --vlm-compare
        from pytest_vlmbench.compare import RuleError, parse_rules

        try:
            parse_rules(options.fail_on)
        except RuleError as exc:
            raise pytest.UsageError(f"pytest-vlmbench: --vlm-fail-on: {exc}") from None
    if options.power_meter not in ("auto", "none"):  # a named one: ask the registry
        from pytest_vlmbench.power import known_names

        if options.power_meter not in known_names():
            raise pytest.UsageError(
                f"pytest-vlmbench: unknown power meter {options.power_meter!r}; known: "
                f"{', '.join(known_names())}"
            )
    run_id = results_path = None
    if workerinput is not None:
        if parallel.RUN_ID_KEY not in workerinput:  # a controller without our hook
            return
        run_id = workerinput[parallel.RUN_ID_KEY]
        results_path = parallel.worker_results(workerinput, config.rootpath)
        config.pluginmanager.register(parallel.WorkerTags(), "vlmbench-worker-tags")
        if workerinput.get(parallel.GPU_PER_WORKER_KEY):
            os.environ["CUDA_VISIBLE_DEVICES"] = parallel.assign_gpu(
                workerinput["workerid"], os.environ
            )
    resolved = None
    if options.device != "auto":  # an explicit device is checked now: a usage error
        try:
            resolved = devices.resolve(options.device)
        except DeviceError as exc:
            raise pytest.UsageError(f"pytest-vlmbench: {exc}") from None
        if resolved[0].name == "cpu" and resolved[1].profile != "cpu":
            # A deliberate CPU run on a GPU machine: with the GPUs visible, a GPU build of
            # llama.cpp still offloads large prompt batches to them (op_offload) at
            # n_gpu_layers=0. Hidden before any backend initialises CUDA; put back in
            # pytest_unconfigure.
            config.stash[_CUDA_ENV_KEY] = os.environ.get("CUDA_VISIBLE_DEVICES")
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from pytest_vlmbench.plugin.session import VlmSession  # light: imports on first use

    vlm = config.stash[SESSION_KEY] = VlmSession(
        config, options, resolved, config.stash.get(_TAKEN_KEY, []),
        run_id=run_id, results_path=results_path,
    )
    config.pluginmanager.register(_UsageMistakes(vlm), "vlmbench-usage-mistakes")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _CUDA_ENV_KEY in config.stash:
        previous = config.stash[_CUDA_ENV_KEY]
        del config.stash[_CUDA_ENV_KEY]
        if previous is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = previous


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session: pytest.Session) -> None:
    """Validate the catalog and the matrix before collecting, so an error is one line and
    exit status 4 (raised later, from pytest_generate_tests, it would be a collection
    traceback). A project without a catalog of its own uses the package's, which is
    valid, so plain test suites that never use the plugin are not troubled by this,
    nor even read it (Matrix.chosen)."""
    vlm = session.config.stash.get(SESSION_KEY, None)
    if vlm is None or not vlm.chosen():
        return
    try:
        vlm.check_matrix()  # the catalog and precisions only: no backend is imported
    except CatalogError as exc:
        raise pytest.UsageError(f"pytest-vlmbench: {exc}") from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "vlm_model" not in metafunc.fixturenames:
        return
    session = metafunc.config.stash.get(SESSION_KEY, None)
    if session is None:  # a worker of a controller that did not load this plugin
        reason = "pytest-vlmbench is not active in the pytest-xdist controller"
        metafunc.parametrize(
            "vlm_model", [pytest.param(None, id="xdist", marks=pytest.mark.skip(reason=reason))],
            indirect=True,
        )
        return
    wanted = {m.args[0] for m in metafunc.definition.iter_markers("vlm_modality") if m.args}
    own = metafunc.definition.get_closest_marker("vlm_models")
    try:
        cells = session.matrix(models=[str(a) for a in own.args] if own else None)
    except CatalogError as exc:  # no catalog file at all: one message, no traceback
        raise pytest.Collector.CollectError(f"pytest-vlmbench: {exc}") from None
    one_precision = metafunc.definition.get_closest_marker("vlm_one_precision") is not None
    first: dict[str, str] = {}  # model -> the precision it runs at under vlm_one_precision
    params = []
    for cell in cells:
        marks = []
        skip = cell.skip
        if skip is None and wanted and cell.case.modality not in wanted:
            needed = "/".join(sorted(wanted))
            skip = f"needs a {needed} model; {cell.case.model} is {cell.case.modality}"
        if skip is None and one_precision:
            chosen = first.setdefault(cell.case.model, cell.case.precision)
            if chosen != cell.case.precision:
                skip = (f"@pytest.mark.vlm_one_precision: {cell.case.model} runs this benchmark "
                        f"at {chosen} only")
        if skip is not None:
            marks.append(pytest.mark.skip(reason=skip))
        params.append(pytest.param(cell.case, id=cell.case.id, marks=marks))
    metafunc.parametrize("vlm_model", params, indirect=True)


def _case_of(item: pytest.Item) -> ModelCase | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    case = callspec.params.get("vlm_model")
    if case is None:  # not a benchmark: the runner stays unimported
        return None
    from pytest_vlmbench.run.runner import ModelCase

    return case if isinstance(case, ModelCase) else None


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark looks for its fixture
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group benchmarks by matrix cell (stable) so each model is loaded once; hand
    pytest-benchmark our clock where it is active."""
    order: dict[ModelCase, int] = {}
    bridge = benchmark_bridge.active(config) and config.stash.get(SESSION_KEY, None) is not None
    if not (config.getoption("vlm_extended") or config.getini("vlm_extended")):
        skip = pytest.mark.skip(reason=f"an extended suite (vlm_extended): run it with "
                                       f"{EXTENDED}, e.g. make bench-quality")
        for item in items:
            if item.get_closest_marker("vlm_extended") is not None:
                item.add_marker(skip)
    for item in items:
        case = _case_of(item)
        if case is not None and case not in order:
            order[case] = len(order)
        if case is not None and bridge:
            benchmark_bridge.prepare_item(item)
    vlm = config.stash.get(SESSION_KEY, None)
    checked = vlm is not None and not hasattr(config, "workerinput") \
        and not config.option.collectonly
    if order and checked and vlm is not None:
        try:
            vlm.check_runs_something()
        except CatalogError as exc:
            raise pytest.UsageError(f"pytest-vlmbench: {exc}") from None
    windows = any(name in getattr(item, "fixturenames", ())
                  for item in items for name in ("vlm_power", "vlm_pipeline"))
    if (order or windows) and checked and vlm is not None:
        problem = vlm.output_problem()  # before any model loads or any window is written
        if problem is not None:
            raise pytest.UsageError(f"pytest-vlmbench: {problem}")
        if vlm.options.history is not None and not config.getoption("vlm_history"):
            _check_history(vlm)  # from the ini or $VLMBENCH_HISTORY: only a session that
            # benchmarks opens it (a unit-test run in the same project never does)
    if order:

        def rank(item: pytest.Item) -> int:
            case = _case_of(item)
            return -1 if case is None else order[case]

        items.sort(key=rank)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """When the test function returns (or fails), hand all of its `vlm_bench.run()`s to
    pytest-benchmark at once: its fixture takes a single pedantic() call per test."""
    try:
        result = yield
    except BaseException:
        # The test's own failure (an SLO, Ctrl-C) is what the user must see: feeding
        # pytest-benchmark must not replace it (e.g. FixtureAlreadyUsed).
        with contextlib.suppress(Exception):
            benchmark_bridge.flush(item)
        raise
    benchmark_bridge.flush(item)
    return result


def _user_mistake(excinfo: pytest.ExceptionInfo[BaseException] | None) -> str | None:
    """The one line to show for a user's mistake (errors.UserInputError), else None."""
    if excinfo is None or not isinstance(excinfo.value, UserInputError):
        return None
    return str(excinfo.value) or type(excinfo.value).__name__


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A user's mistake raised in a test (a bad dataset path, a bad task parameter) is
    shown as its one line, not as a dump of the plugin's source."""
    report = yield
    line = _user_mistake(call.excinfo)
    if line is not None and call.excinfo is not None and report.failed:
        report.longrepr = line
        if isinstance(call.excinfo.value, UsageMistake):
            # Travels with the report to a pytest-xdist controller (pytest_runtest_logreport).
            report.user_properties.append((_USAGE_MISTAKE, line))
    return report


class _UsageMistakes:
    """Counts usage mistakes where the session ends: in this process, or in the
    pytest-xdist controller, which sees its workers' reports here."""

    def __init__(self, vlm: VlmSession) -> None:
        self.vlm = vlm

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.vlm.usage_mistakes.extend(
            str(v) for k, v in report.user_properties if k == _USAGE_MISTAKE)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """Likewise for a mistake raised while a benchmark module is imported (a Task with
    max_tokens=0 at module level)."""
    report = yield
    call = getattr(report, "call", None)  # pytest keeps the CallInfo on the report
    excinfo = getattr(call, "excinfo", None)
    line = _user_mistake(excinfo)
    if line is not None and excinfo is not None and report.failed:
        report.longrepr = f"{collector.nodeid}: {line}"
        vlm = collector.config.stash.get(SESSION_KEY, None)
        if vlm is not None and isinstance(excinfo.value, UsageMistake):
            vlm.usage_mistakes.append(line)
            vlm.collection_mistake = True  # pytest calls the stopped collection "interrupted"
    return report


def pytest_sessionstart(session: pytest.Session) -> None:
    """Load the baseline and open an explicitly named power meter now: either failing is
    a usage error before any model loads (`auto` is resolved at the first benchmark)."""
    vlm = session.config.stash.get(SESSION_KEY, None)
    if vlm is None or session.config.option.collectonly:
        return
    worker = hasattr(session.config, "workerinput")
    # A worker on another machine has neither the baseline's files nor, for a SQLite
    # history, the history: the controller compares the whole run when it ends.
    remote = worker and bool(getattr(session.config, "workerinput", {}).get(
        parallel.SEND_BACK_KEY))
    if session.config.getoption("vlm_history") and not worker:
        _check_history(vlm)  # asked for on the command line: checked at once
    if vlm.options.compare and not remote:
        from pytest_vlmbench.plugin.gate import Gate, GateError  # numpy: only when comparing

        # `latest` means the newest run in the output directory; a worker writes into
        # workers-<run id>/ below it.
        out_dir = vlm.results_path.parent.parent if worker else vlm.results_path.parent
        try:
            vlm.gate = Gate(vlm.options.compare, out_dir, list(vlm.options.fail_on),
                            vlm.run_id, baseline_runs=vlm.options.baseline_runs,
                            drift_allowance=vlm.options.drift_allowance,
                            history=vlm.options.history,
                            history_base=vlm.options.history_base)
        except GateError as exc:
            raise pytest.UsageError(f"pytest-vlmbench: {exc}") from None
    if vlm.options.power_meter == "auto":
        return
    from pytest_vlmbench.power import MeterUnavailable

    controller = session.config.pluginmanager.has_plugin("dsession")
    try:
        monitor = vlm.power()
        if controller:
            monitor.trace_path = None  # the xdist controller only checks the meter
        monitor.start()
        if controller:
            monitor.stop()  # its workers measure
    except (MeterUnavailable, DeviceError) as exc:
        raise pytest.UsageError(
            f"pytest-vlmbench: --power-meter={vlm.options.power_meter}: {exc}"
        ) from None


def _check_history(vlm: VlmSession) -> None:
    """A history that cannot be opened (a typo, psycopg missing, the server down) is a
    usage error before any model loads, not a red line after hours of benchmarks."""
    from pytest_vlmbench.history import History, HistoryError

    assert vlm.options.history is not None
    try:
        History.open(vlm.options.history, vlm.options.history_base).close()
    except HistoryError as exc:
        raise pytest.UsageError(f"pytest-vlmbench: --vlm-history: {exc}") from None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist controller: tell each worker its run id (its own under --dist each)
    and where to write (or to send its files back, on another machine); note it."""
    vlm = node.config.stash.get(SESSION_KEY, None)
    if vlm is None:
        return
    each = node.config.getoption("dist") == "each"
    if vlm.fleet is None:
        vlm.fleet = parallel.Fleet.of(vlm.results_path, vlm.run_id, each)
        node.config.pluginmanager.register(vlm.fleet, "vlmbench-fleet")
    vlm.fleet.add(node)
    spec = node.gateway.spec
    node.workerinput.update(parallel.worker_inputs(
        vlm.run_id, vlm.results_path, vlm.options.gpu_per_worker,
        workerid=str(node.gateway.id), each=each, gateway=parallel.gateway_text(spec),
        popen=bool(spec.popen),
    ))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object | None) -> None:
    """pytest-xdist controller: a worker ended (or died): note how, and write the files
    a worker on another machine sent back."""
    vlm = node.config.stash.get(SESSION_KEY, None)
    if vlm is not None and vlm.fleet is not None:
        vlm.fleet.node_down(node, error)


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> Generator[None, Any, Any]:
    vlm = session.config.stash.get(SESSION_KEY, None)
    if vlm is not None:
        interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
        if session.config.pluginmanager.has_plugin("dsession"):  # the xdist controller
            vlm.merge_workers(interrupted)
            # a run whose results are lost, or a worker's: the run is incomplete
            if (vlm.merge_error or vlm.lost_workers()) and session.exitstatus == 0:
                session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
        elif parallel.RUN_ID_KEY in getattr(session.config, "workerinput", {}):
            error = None
            try:
                vlm.finish(interrupted=interrupted)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                raise
            finally:  # the controller hears how it went, and gets the files if remote
                parallel.report_to_controller(session.config, vlm, interrupted, error)
        else:
            vlm.finish(interrupted=interrupted)
        # A mistake known before any request ends the session as a usage error (4), as a
        # bad option does; pytest itself calls collection errors "interrupted" (2).
        if vlm.usage_mistakes and (exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
                                   or (interrupted and vlm.collection_mistake)):
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
        worker = hasattr(session.config, "workerinput")
        if vlm.gate is not None and vlm.has_results() and not worker:
            comparison = vlm.gate.finish(vlm.results_path)
            if comparison is not None and comparison.gated and session.exitstatus == 0:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
            elif comparison is None and session.exitstatus == 0:  # a gate that could not
                session.exitstatus = pytest.ExitCode.INTERNAL_ERROR  # judge is not a pass
        if vlm.options.history is not None and vlm.has_results() and not worker \
                and not vlm.merge_error:
            from pytest_vlmbench.plugin.history_append import append_run

            vlm.history_line = append_run(vlm.options, vlm.results_path)
        if vlm.options.report is not None and vlm.has_results() and not worker:
            vlm.report_line = _write_report(vlm)
    return (yield)


def _write_report(vlm: VlmSession) -> tuple[str, bool]:
    """--vlm-report: the report of this run's results document. A report that cannot
    be written is one red line; the results are on disk already and the exit status
    is the benchmarks'."""
    from pytest_vlmbench.report import cost
    from pytest_vlmbench.report.build import ReportOptions, build
    from pytest_vlmbench.results.document import ResultsError

    options = vlm.options
    prices = cost.Prices(
        cost.DEFAULT_ELECTRICITY_PRICE if options.electricity_price is None
        else options.electricity_price, cost.DEFAULT_CURRENCY,
        [cost.parse_api_price(p) for p in options.api_prices],
        electricity_given=options.electricity_price is not None)
    assert options.report is not None
    try:
        result = build([vlm.results_path], options.report, ReportOptions(
            prices=prices, history=options.history, history_base=options.history_base))
    except (ResultsError, OSError, ValueError) as exc:
        return f"report not written: {exc}", True
    except Exception as exc:
        return f"report not written: {type(exc).__name__}: {exc}", True
    return (f"report: {options.report / 'report.html'} and report.md ({result.configs} "
            f"configurations, {len(result.files)} files, {result.seconds:.1f} s)"), False


@pytest.hookimpl(wrapper=True)
def pytest_report_header(config: pytest.Config) -> Generator[None, list[Any], list[Any]]:
    """Drop pytest-benchmark's header line unless its output was asked for
    (benchmark_bridge.asked): it describes defaults our benchmarks do not use."""
    lines = yield
    if config.pluginmanager.hasplugin(benchmark_bridge.PLUGIN_NAME) \
            and not benchmark_bridge.asked(config):
        return [line for line in lines
                if not (isinstance(line, str) and line.startswith("benchmark: "))]
    return lines


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(
    config: pytest.Config, machine_info: dict[str, Any]
) -> None:
    """pytest-benchmark compares machine info between saved runs: add the accelerator."""
    vlm = config.stash.get(SESSION_KEY, None)
    if vlm is None:
        return
    try:
        device, detection = vlm.device, vlm.detection
    except DeviceError:
        return
    machine_info["vlmbench"] = {
        "device": device.name, "accelerator": device.accelerator,
        "description": device.description, "detected": detection.evidence,
        "cpu_fallback": sorted(vlm.fallbacks),  # backends that ran on the CPU instead
    }


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    vlm = config.stash.get(SESSION_KEY, None)
    if vlm is None or not (vlm.has_results() or vlm.merge_error or vlm.lost_workers()):
        return
    from pytest_vlmbench.plugin.terminal import write_summary

    write_summary(terminalreporter, vlm)
