"""The matrix: ids, skips with reasons, options and their errors (inner sessions)."""

from __future__ import annotations

import pytest

from pytest_vlmbench.plugin import options
from tests.conftest import TINY_CATALOG, Project

BENCH = """
def test_caption(vlm_model):
    pass
"""


def test_ids_are_model_precision_device(project: Project) -> None:
    project.pytester.makepyfile(test_bench=BENCH)
    out = project.run("--collect-only", "-q")
    out.run.stdout.fnmatch_lines(
        [
            "test_bench.py::test_caption[[]tiny-text-fp32-cpu[]]",
            "test_bench.py::test_caption[[]tiny-vision-fp32-cpu[]]",
        ]
    )


def test_tests_without_the_fixture_are_not_parametrised(project: Project) -> None:
    project.pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    out = project.run("--collect-only", "-q")
    out.run.stdout.fnmatch_lines(["test_plain.py::test_plain"])
    assert not out.out.exists()  # no benchmark ran: no results file


def test_precision_missing_from_catalog_is_skipped_with_reason(project: Project) -> None:
    project.pytester.makepyfile(test_bench=BENCH)
    out = project.run(f"{options.MODELS}=tiny-text", f"{options.PRECISIONS}=fp32,q8_0", "-rs")
    out.run.assert_outcomes(passed=1, skipped=1)
    out.run.stdout.fnmatch_lines(["*tiny-text has no q8_0 variant in models.toml (it has fp32)*"])


GPU_ONLY = """
[[model]]
id = "gpu-only"
backend = "llama_cpp"
modality = "text"
default = true
precisions = { fp8 = "path:nowhere.gguf" }
"""


def test_precision_the_device_cannot_run_is_skipped_with_reason(project: Project) -> None:
    tiny_text = TINY_CATALOG[:TINY_CATALOG.index('[[model]]\nid = "tiny-vision"')]
    (project.pytester.path / "models.toml").write_text(GPU_ONLY + tiny_text)
    project.pytester.makepyfile(test_bench=BENCH)
    out = project.run("-rs")
    out.run.assert_outcomes(passed=1, skipped=1)
    out.run.stdout.fnmatch_lines(["*device cpu does not support fp8*"])


def test_a_matrix_that_selects_nothing_is_a_usage_error(project: Project) -> None:
    """Every cell skipped used to exit 0 with nothing benchmarked and no results."""
    (project.pytester.path / "models.toml").write_text(GPU_ONLY)
    project.pytester.makepyfile(test_bench=BENCH)
    out = project.run()
    assert out.run.ret == pytest.ExitCode.USAGE_ERROR
    out.run.stderr.fnmatch_lines(
        ["ERROR: pytest-vlmbench: the model matrix selects nothing to run here: "
         "device cpu does not support fp8"])
    assert not out.out.exists()


def test_modality_marker_skips_text_models(project: Project) -> None:
    project.pytester.makepyfile(
        test_bench="""
import pytest

@pytest.mark.vlm_modality("vision")
def test_look(vlm_model):
    pass
"""
    )
    out = project.run("-rs")
    out.run.assert_outcomes(passed=1, skipped=1)
    out.run.stdout.fnmatch_lines(["*needs a vision model; tiny-text is text*"])


def test_explicit_device_that_is_not_this_machine_is_a_usage_error(project: Project) -> None:
    project.pytester.makepyfile(test_bench=BENCH)
    out = project.run("--device=orin")
    assert out.run.ret == pytest.ExitCode.USAGE_ERROR
    out.run.stderr.fnmatch_lines(["*--device=orin but this machine was detected as 'cpu'*"])


def test_unknown_device_lists_the_known_ones(project: Project) -> None:
    out = project.run(f"{options.DEVICE}=tpu9000")
    assert out.run.ret == pytest.ExitCode.USAGE_ERROR
    out.run.stderr.fnmatch_lines(["*unknown device 'tpu9000'; known: auto, *h100*"])


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        (f"{options.SAMPLES}=0", "*expected a number >= 1, got 0*"),
        (f"{options.WARMUP}=many", "*expected a whole number, got 'many'*"),
        (f"{options.PRECISIONS}=,", "*expected a comma-separated list*"),
    ],
)
def test_bad_option_values_are_usage_errors(project: Project, arg: str, message: str) -> None:
    out = project.run(arg)
    assert out.run.ret == pytest.ExitCode.USAGE_ERROR
    out.run.stderr.fnmatch_lines([message])


def test_bad_ini_value_is_a_usage_error(project: Project) -> None:
    project.pytester.makeini(
        """
        [pytest]
        vlm_catalog = models.toml
        vlm_samples = -3
        """
    )
    out = project.run()
    assert out.run.ret == pytest.ExitCode.USAGE_ERROR
    out.run.stderr.fnmatch_lines(["*ini option vlm_samples = '-3': expected a number >= 1*"])


def test_catalog_error_names_file_entry_and_field(project: Project) -> None:
    (project.pytester.path / "models.toml").write_text(
        '[[model]]\nid = "broken"\nbackend = "llama_cpp"\nmodality = "text"\n'
        'precisions = { fp32 = "ftp:x" }\n'
    )
    project.pytester.makepyfile(test_bench=BENCH)
    out = project.run()
    assert out.run.ret == pytest.ExitCode.USAGE_ERROR
    out.run.stderr.fnmatch_lines(
        ["ERROR: *models.toml: model 'broken': field 'precisions.fp32': weight source 'ftp:x'*"]
    )
    assert "Traceback" not in out.run.stdout.str() + out.run.stderr.str()


def test_unknown_model_in_models_option(project: Project) -> None:
    project.pytester.makepyfile(test_bench=BENCH)
    out = project.run(f"{options.MODELS}=gpt-17")
    assert out.run.ret == pytest.ExitCode.USAGE_ERROR
    out.run.stderr.fnmatch_lines(
        ["*--vlm-models: *no model 'gpt-17'; known: tiny-text, tiny-vision*"]
    )


def test_short_alias_yields_to_a_plugin_that_took_it_first(project: Project) -> None:
    project.pytester.makepyfile(
        otherplugin="""
def pytest_addoption(parser):
    parser.addoption("--device", dest="other_device", default="theirs")

def pytest_configure(config):
    config.other_seen = config.getoption("other_device")
""",
        test_bench="""
def test_caption(vlm_model, request):
    assert request.config.other_seen == "gpu0"
""",
    )
    out = project.run("-p", "otherplugin", "--device=gpu0", f"{options.DEVICE}=cpu")
    out.run.assert_outcomes(passed=2)


def test_plain_session_imports_no_backend(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_plain="""
import sys

def test_light():
    heavy = {"llama_cpp", "torch", "vllm", "transformers", "pynvml", "PIL", "numpy",
             "jsonschema"}
    assert not heavy & set(sys.modules), heavy & set(sys.modules)
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_conftest_that_registers_device_keeps_it(project: Project) -> None:
    """A project's own `--device` option wins; ours stays reachable as --vlm-device."""
    project.pytester.makeconftest(
        """
def pytest_addoption(parser):
    parser.addoption("--device", dest="project_device", default="none")
"""
    )
    project.pytester.makepyfile(
        test_bench="""
def test_caption(vlm_model, request):
    assert request.config.getoption("project_device") == "sim0"
"""
    )
    out = project.run("--device=sim0", f"{options.DEVICE}=cpu", f"{options.MODELS}=tiny-text")
    out.run.assert_outcomes(passed=1)


def test_worker_of_a_controller_without_the_plugin_skips_benchmarks(project: Project) -> None:
    """A worker whose controller did not hand it a run id (the controller does not run
    this plugin): benchmarks skip with the reason, plain tests run."""
    project.pytester.makeconftest(
        """
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    config.workerinput = {"workerid": "gw0"}  # what pytest-xdist sets on a worker
"""
    )
    project.pytester.makepyfile(
        test_bench="""
def test_caption(vlm_model):
    pass

def test_plain():
    pass
"""
    )
    out = project.run("-rs")
    out.run.assert_outcomes(passed=1, skipped=1)
    out.run.stdout.fnmatch_lines(["*not active in the pytest-xdist controller*"])


def test_a_missing_catalog_file_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nvlm_catalog = missing.toml\n")
    pytester.makepyfile(test_bench=BENCH)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pytest-vlmbench: *missing.toml: model catalog not found*"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_project_without_a_catalog_uses_the_packages(pytester: pytest.Pytester) -> None:
    """First use in one's own folder: no benchmarks/models.toml, no vlm_catalog."""
    pytester.makepyfile(test_bench=BENCH)
    result = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "-q",
                                f"{options.DEVICE}=cpu")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["test_bench.py::test_caption[gemma3-270m-q4_k_m-cpu]",
                                 "test_bench.py::test_caption[tiny-vlm-q4_k_m-cpu]"])


TWO_PRECISIONS = """
[[model]]
id = "tiny-text"
backend = "llama_cpp"
modality = "text"
chat_format = "model"
default = true
default_precisions = ["fp32", "f16"]

[model.precisions]
fp32 = "generated:llama-tiny"
f16 = "quantized:f16:generated:llama-tiny"
q8_0 = "quantized:q8_0:generated:llama-tiny"
"""

ONE_PRECISION_BENCH = """
import pytest

def test_axis(vlm_model):
    pass

@pytest.mark.vlm_one_precision
def test_once(vlm_model):
    pass
"""


def test_default_precisions_and_one_precision_marker(project: Project) -> None:
    (project.pytester.path / "models.toml").write_text(TWO_PRECISIONS)
    project.pytester.makepyfile(test_bench=ONE_PRECISION_BENCH)
    out = project.run("-rs", "-v")
    # default_precisions: fp32 and f16, not q8_0; test_once runs at fp32 only.
    out.run.assert_outcomes(passed=3, skipped=1)
    for line in ("*test_axis[[]tiny-text-fp32-cpu[]] PASSED*",
                 "*test_axis[[]tiny-text-f16-cpu[]] PASSED*",
                 "*test_once[[]tiny-text-fp32-cpu[]] PASSED*",
                 "*vlm_one_precision: tiny-text runs this benchmark at fp32 only*"):
        out.run.stdout.fnmatch_lines([line])
    # An explicit --vlm-precisions wins over the catalog's default_precisions.
    again = project.run(f"{options.PRECISIONS}=q8_0")
    again.run.assert_outcomes(passed=2)


def test_default_precisions_must_name_known_precisions(project: Project) -> None:
    (project.pytester.path / "models.toml").write_text(
        TWO_PRECISIONS.replace('["fp32", "f16"]', '["fp32", "q4_kk"]'))
    project.pytester.makepyfile(test_bench=BENCH)
    out = project.run()
    assert out.run.ret == pytest.ExitCode.USAGE_ERROR
    out.run.stderr.fnmatch_lines(["*default_precisions*'q4_kk'*not in precisions*"])
