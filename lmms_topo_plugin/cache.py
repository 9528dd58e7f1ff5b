"""On-disk cache of expensive results (calibration statistics, scores), with atomic writes.

Entries are keyed by a hash of everything that determines them; writes go to a temporary file in the
same directory and are renamed into place, so an interrupted run never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from loguru import logger
from safetensors import SafetensorError
from safetensors.torch import load_file, save


def default_cache_dir() -> Path:
    """``$LMMS_TOPO_CACHE``, else ``$XDG_CACHE_HOME/lmms_topo_plugin``, else ``~/.cache/lmms_topo_plugin``."""
    if env := os.environ.get("LMMS_TOPO_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lmms_topo_plugin"


def cache_key(*parts: Any) -> str:
    """A stable hex digest of JSON-serialisable ``parts``."""
    payload = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:24]


def umask_mode(full: int = 0o666) -> int:
    """``full`` with the process umask applied: the mode an ordinary ``open()`` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return full & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and an atomic rename; normal file mode (umask honoured)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


class DiskCache:
    """A directory of JSON and tensor entries; ``enabled=False`` turns every lookup into a miss."""

    def __init__(self, root: Path | str | None = None, *, enabled: bool = True) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.enabled = enabled

    def _path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / f"{key}{suffix}"

    def get_json(self, kind: str, key: str) -> Any | None:
        path = self._path(kind, key, ".json")
        if not self.enabled or not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            return self._unreadable(path, error)

    def put_json(self, kind: str, key: str, value: Any) -> Path:
        path = self._path(kind, key, ".json")
        atomic_write_json(path, value)
        return path

    def get_tensors(self, kind: str, key: str) -> dict[str, torch.Tensor] | None:
        path = self._path(kind, key, ".safetensors")
        if not self.enabled or not path.exists():
            return None
        try:
            return load_file(str(path))
        except (OSError, SafetensorError) as error:
            return self._unreadable(path, error)

    @staticmethod
    def _unreadable(path: Path, error: Exception) -> None:
        """An entry that cannot be read (truncated, corrupted) is a miss; the next write replaces it."""
        logger.warning(f"topo_pruned: cache entry {path} is unreadable ({type(error).__name__}: {error}); "
                       "recomputing it")
        return None

    def put_tensors(self, kind: str, key: str, tensors: dict[str, torch.Tensor]) -> Path:
        path = self._path(kind, key, ".safetensors")
        atomic_write_bytes(path, save({name: t.contiguous() for name, t in tensors.items()}))
        return path
