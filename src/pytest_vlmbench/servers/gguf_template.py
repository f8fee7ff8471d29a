"""The Gemma chat template for the managed servers, so that they build the very prompt
the in-process backend builds (models/chat_template.py; gemma3-270m ships none):

- llama-cpp-python's server takes a template only from the model file (its `mtmd`
  vision handler reads nothing else, and a text model without `chat_format` uses the
  file's template): `templated_copy` writes a copy of the GGUF that carries it;
- llama-server takes it as a file (`template_file`, for --chat-template-file).

The copy is spliced byte for byte: the header is walked here (gguf's GGUFReader parses
every one of gemma3-270m's 262,144 vocabulary strings into numpy objects and took ~50 s;
this walk skips them in well under a second), the other keys and the tensor infos are
copied as they are, and the tensor data follows unchanged: tensor offsets count from the
aligned start of the data section, so a longer header moves nothing.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
from pathlib import Path
from typing import IO

from pytest_vlmbench.models.chat_template import GEMMA_CHAT_TEMPLATE

TEMPLATE_KEY = "tokenizer.chat_template"
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q",
            11: "q", 12: "d"}  # GGUF value types -> struct codes (8: string, 9: array)
_STRING = 8


class _Walk:
    """Reads a GGUF header in the file's byte order."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        if fh.read(4) != b"GGUF":
            raise ValueError("not a GGUF file")
        self.order = "<"
        (version,) = struct.unpack("<I", fh.read(4))
        if version not in (2, 3):
            self.order = ">"
            (version,) = struct.unpack(">I", struct.pack("<I", version))
            if version not in (2, 3):
                raise ValueError(f"unsupported GGUF version {version}")
        self.version = version

    def num(self, code: str) -> int:
        size = struct.calcsize(code)
        data = self.fh.read(size)
        if len(data) < size:
            raise ValueError("truncated GGUF header")
        value: int = struct.unpack(self.order + code, data)[0]
        return value

    def text(self) -> bytes:
        return self.fh.read(self.num("Q"))

    def skip_value(self, kind: int) -> int | None:
        """Skip one value; scalar integers are returned (general.alignment)."""
        if kind in _SCALARS:
            return self.num(_SCALARS[kind])
        if kind == _STRING:
            self.fh.seek(self.num("Q"), 1)
            return None
        if kind == 9:
            item, count = self.num("I"), self.num("Q")
            if item in _SCALARS:
                self.fh.seek(count * struct.calcsize(_SCALARS[item]), 1)
            else:
                for _ in range(count):
                    self.skip_value(item)
            return None
        raise ValueError(f"unknown GGUF value type {kind}")


def _write_with_template(src: Path, dst: Path, template: str) -> Path:
    with src.open("rb") as fin:
        walk = _Walk(fin)
        n_tensors, n_kv = walk.num("Q"), walk.num("Q")
        kept: list[tuple[int, int]] = []  # byte ranges of the keys we keep
        alignment = 32
        for _ in range(n_kv):
            start = fin.tell()
            key = walk.text().decode("utf-8", "replace")
            value = walk.skip_value(walk.num("I"))
            if key == "general.alignment" and isinstance(value, int) and value > 0:
                alignment = value
            if not key.startswith(TEMPLATE_KEY):
                kept.append((start, fin.tell()))
        infos_start = fin.tell()
        for _ in range(n_tensors):
            walk.text()
            fin.seek(8 * walk.num("I") + 4 + 8, 1)  # dims, type, offset
        infos_end = fin.tell()
        data_start = -(-infos_end // alignment) * alignment
        order = walk.order
        key_bytes, value_bytes = TEMPLATE_KEY.encode(), template.encode()
        with dst.open("wb") as out:
            out.write(b"GGUF" + struct.pack(order + "IQQ", walk.version, n_tensors,
                                            len(kept) + 1))
            for start, end in kept:
                fin.seek(start)
                out.write(fin.read(end - start))
            out.write(struct.pack(order + "Q", len(key_bytes)) + key_bytes
                      + struct.pack(order + "IQ", _STRING, len(value_bytes)) + value_bytes)
            fin.seek(infos_start)
            out.write(fin.read(infos_end - infos_start))
            out.write(b"\0" * (-out.tell() % alignment))
            fin.seek(data_start)
            shutil.copyfileobj(fin, out, 1 << 24)
    return dst


def template_file(cache_dir: Path, template: str = GEMMA_CHAT_TEMPLATE) -> Path:
    """The template as a cached file (for llama-server's --chat-template-file)."""
    from pytest_vlmbench.models.weights import ensure_generated

    digest = hashlib.sha256(template.encode()).hexdigest()[:12]
    return ensure_generated(cache_dir / "templated", f"chat-template-{digest}.jinja",
                            lambda out: _write_text(out, template))


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def templated_copy(path: Path, cache_dir: Path, template: str = GEMMA_CHAT_TEMPLATE) -> Path:
    """A cached copy of the GGUF at `path` whose `tokenizer.chat_template` is `template`
    (keyed by the file's path, size, mtime and the template)."""
    from pytest_vlmbench.models.weights import ensure_generated

    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{template}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return ensure_generated(cache_dir / "templated", f"{path.stem}-templated-{digest}.gguf",
                            lambda out: _write_with_template(path, out, template))
