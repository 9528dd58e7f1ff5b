"""Keep this machine's paths out of what ``topo-prune push`` publishes.

The records an export carries name the base model by where it was on disk (``base_model``, ``pretrained``,
the fingerprint ``/abs/dir#hash``, the cache's ``dir``). On the Hub such a path means nothing to a reader and
tells everyone the publisher's directory layout, so the published copies name a local directory by its name
(``/home/me/models/llava-tiny`` → ``llava-tiny``; the bundled default model → ``default_model``) and keep a
fingerprint's hash (``llava-tiny#c02e860a9ee8cae4``). The build's files on disk are not changed: ``export``
and the plugin's loader still read them as written.

:func:`public_copy` returns the bytes to publish for one file of the build, and :func:`local_path_in_file` is the
final check that refuses a file still holding one of the paths the build names.
"""

from __future__ import annotations

import json
import mmap
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterable

BUNDLED_MODEL_NAME = "default_model"
BUNDLED_MODEL_WORDS = "the bundled default model"
# files whose JSON the plugin writes (tokenizers and processors are left alone: their strings are vocabulary)
RECORD_FILES = ("config.json", "export_report.json")
RECORD_DIRS = ("pruning", "onnx")
TEXT_SUFFIXES = (".json", ".md", ".csv", ".txt", ".yaml", ".yml", ".jinja", ".html")
# an absolute POSIX path of at least two components inside a longer string, e.g. "pretrained=/a/b,device=cpu"
EMBEDDED_PATH = re.compile(r"(?<![\w.~/-])/(?:[\w.+@%~-]+/)+[\w.+@%~-]+")
# where a raw file is only tensor data: read the safetensors header only, skip ONNX external data
TENSOR_DATA_SUFFIXES = (".onnx_data", ".data", ".bin", ".pt", ".pth")


def split_suffix(value: str) -> tuple[str, str]:
    """``/abs/dir#hash`` → (``/abs/dir``, ``#hash``); a value without ``#`` → (value, "")."""
    path, mark, rest = value.partition("#")
    return path, mark + rest


def is_absolute_path(value: str) -> bool:
    """An absolute local path (POSIX ``/a/b``, ``~/a``, Windows ``C:\\a``), possibly with a ``#hash`` suffix."""
    path = split_suffix(value)[0]
    if not path or "\n" in path or "://" in path:
        return False
    return path.startswith("~") or PurePosixPath(path).is_absolute() or PureWindowsPath(path).drive != ""


def is_local_base(base: str) -> bool:
    """Whether a recorded ``base_model`` is a local directory rather than a Hub id (``org/name``)."""
    return (base.startswith((".", "/", "~")) or is_absolute_path(base) or base.count("/") > 1
            or Path(base).expanduser().exists())


def is_bundled_model(base: str | None) -> bool:
    """Whether ``base`` is the plugin's bundled default model (wherever the plugin was installed)."""
    if not base or not is_local_base(base):
        return False
    from lmms_topo_plugin.models.loading import BUNDLED_MODEL_DIR

    path = Path(split_suffix(base)[0]).expanduser()
    try:
        if path.resolve() == BUNDLED_MODEL_DIR.resolve():
            return True
    except OSError:
        pass
    posix = PurePosixPath(str(path).replace("\\", "/"))
    return posix.name == BUNDLED_MODEL_NAME and posix.parent.name == BUNDLED_MODEL_DIR.parent.name


def portable(value: str) -> str:
    """The published form of a path-valued string: a directory's name, a fingerprint's ``#hash`` kept."""
    path, suffix = split_suffix(value)
    windows = PureWindowsPath(path)
    name = windows.name if windows.drive else PurePosixPath(path.rstrip("/")).name
    return (name or "local") + suffix


def fingerprint_hash(fingerprint: str | None) -> str | None:
    """A local directory's fingerprint ``name#hash`` (older records: ``/abs/dir#hash``) → ``hash``; a Hub
    fingerprint ``org/name@commit`` as it is."""
    if not fingerprint:
        return fingerprint
    _, suffix = split_suffix(fingerprint)
    return suffix[1:] if suffix else fingerprint


def description(base: str | None) -> str:
    """The base model in prose: the bundled default model, or a local directory's name."""
    if base is None:
        return "a base model this build does not record"
    return BUNDLED_MODEL_WORDS if is_bundled_model(base) else f"the local directory {portable(base)}"


class Replacer:
    """Rewrites path-valued strings to their :func:`portable` form and remembers every path it met."""

    def __init__(self, roots: Iterable[str] = ()):
        self.paths: set[str] = set()
        for root in roots:
            self.add(root)

    def add(self, path: str) -> None:
        """Remember ``path`` (its ``#hash`` dropped) when it is absolute and at least two levels deep: replacing
        a bare ``/tmp`` everywhere would garble text that merely mentions it."""
        path = split_suffix(path)[0].rstrip("/\\")
        if is_absolute_path(path) and len(PureWindowsPath(path).parts) >= 3:
            self.paths.add(path)

    def string(self, value: str) -> str:
        if is_absolute_path(value):
            self.add(value)
            return portable(value)
        for match in EMBEDDED_PATH.findall(value):
            self.add(match)
        return self.text(value)

    def text(self, text: str) -> str:
        """Every path met so far, replaced in ``text`` by its name (the longest first)."""
        for path in sorted(self.paths, key=len, reverse=True):
            if path in text:
                text = text.replace(path, portable(path))
        return text

    def json(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.string(value)
        if isinstance(value, list):
            return [self.json(item) for item in value]
        if isinstance(value, dict):
            return {key: self.json(item) for key, item in value.items()}
        return value

    def forms(self) -> list[str]:
        """Each path as it may appear in a file: as is, and JSON-escaped (backslashes, non-ASCII)."""
        forms = set()
        for path in self.paths:
            forms |= {path, json.dumps(path)[1:-1], json.dumps(path, ensure_ascii=False)[1:-1]}
        return sorted(forms, key=len, reverse=True)


def is_record(relative: Path) -> bool:
    """A JSON file the plugin writes into a build (not a tokenizer's or processor's)."""
    parts = relative.parts
    return relative.suffix == ".json" and (relative.as_posix() in RECORD_FILES or parts[0] in RECORD_DIRS)


def public_copy(root: Path, relative: Path, replacer: Replacer) -> bytes | None:
    """The bytes to publish for ``root/relative`` when they differ from the file's (None: publish the file).

    A record's JSON has every path-valued string replaced by its portable form; another text file has the paths
    the records named replaced. Binary files are published as they are (and checked by :func:`local_path_in_file`).
    """
    if relative.suffix.lower() not in TEXT_SUFFIXES:
        return None
    data = (root / relative).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if is_record(relative):
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            record = None
        if record is not None:
            public = replacer.json(record)
            if public == record:
                return None
            indent = 2 if text.lstrip().startswith(("{\n", "[\n")) else None
            ending = "\n" if text.endswith("\n") else ""
            return (json.dumps(public, indent=indent, ensure_ascii=False) + ending).encode()
    public = replacer.text(text)
    return None if public == text else public.encode()


def local_path_in(data: bytes | mmap.mmap, forms: list[str]) -> str | None:
    """The first of ``forms`` (local paths) that ``data`` contains, else None."""
    return next((form for form in forms if data.find(form.encode()) != -1), None)


def local_path_in_file(path: Path, public: bytes | None, forms: list[str]) -> str | None:
    """The first of ``forms`` in what will be published for ``path``: ``public`` when the push rewrote it, else the
    file (a safetensors file's header only; raw tensor data is not searched)."""
    if public is not None:
        return local_path_in(public, forms)
    name = path.name.lower()
    if not forms or name.endswith(TENSOR_DATA_SUFFIXES) or path.stat().st_size == 0:
        return None
    with path.open("rb") as handle:
        if name.endswith(".safetensors"):
            size = int.from_bytes(handle.read(8), "little")
            return local_path_in(handle.read(min(size, 100 << 20)), forms)
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return local_path_in(view, forms)
