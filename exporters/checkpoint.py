"""Save a (pruned) model and its processor as a ``from_pretrained`` checkpoint, atomically.

The directory is written next to its destination under a temporary name and renamed into place, so an
interrupted save never leaves a half-written checkpoint, and a previous checkpoint there is replaced whole.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lmms_topo_plugin.errors import UsageError

if TYPE_CHECKING:  # torch is imported where it is used: the CLI imports this module for SAVE_DTYPES
    import torch

SAVE_DTYPES = ("base", "float32", "float16", "bfloat16")


def save_dtype(choice: str, base_dtype: Any) -> torch.dtype | None:
    """The dtype to save in: the base checkpoint's (``base``; ``None`` when it states none) or the one named."""
    import torch

    if choice == "base":
        if isinstance(base_dtype, str):
            base_dtype = getattr(torch, base_dtype, None)
        return base_dtype if isinstance(base_dtype, torch.dtype) else None
    return getattr(torch, choice)


def is_checkpoint(path: Path) -> bool:
    return (path / "config.json").is_file()


def check_destination(out: str | os.PathLike, flag: str, overwrite: bool,
                      holds_export: Callable[[Path], bool] = is_checkpoint) -> Path:
    """Refuse ``out`` before any work is done when writing there would lose something: a file, or a directory of
    other files (always), or a previous export (``holds_export(out)``) unless ``overwrite``. Returns ``out``."""
    out = Path(out)
    if not out.exists():
        return out
    if not out.is_dir():
        raise UsageError(f"{flag} {out} is a file, not a directory; choose another {flag}")
    if not any(out.iterdir()):
        return out
    if not holds_export(out):
        raise UsageError(f"{flag} {out} exists and is not an export (it holds other files); choose another {flag} "
                         f"or remove {out}")
    if not overwrite:
        raise UsageError(f"{flag} {out} already holds an export; pass --overwrite to replace it, or choose another "
                         f"{flag}")
    return out


def save_checkpoint(model: Any, processor: Any, out: str | os.PathLike, dtype: torch.dtype | None = None,
                    validate: Callable[[Path], dict] | None = None) -> Path:
    """Write ``model`` (cast to ``dtype`` when given) and ``processor`` to ``out``; returns ``out``.

    ``out`` may be missing, empty, or a previous checkpoint (it has a ``config.json``); anything else is refused
    so that no user directory is replaced by mistake. ``validate(staging_dir)`` runs on the written checkpoint
    before it is renamed into place (raise to refuse it); its result is saved there as ``export_report.json``.
    """
    from lmms_topo_plugin.cache import atomic_write_json, umask_mode

    out = Path(out)
    check_destination(out, "destination", overwrite=True)  # a previous checkpoint there is replaced whole
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    try:
        if dtype is not None and dtype != model.dtype:
            model.to(dtype)
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        if validate is not None:
            atomic_write_json(staging / "export_report.json", validate(staging))
        os.chmod(staging, umask_mode(0o777))
        if out.exists():
            retired = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
            os.replace(out, retired / out.name)
            try:
                os.replace(staging, out)
            except BaseException:  # e.g. Ctrl-C between the two renames: the previous checkpoint goes back
                os.replace(retired / out.name, out)
                shutil.rmtree(retired, ignore_errors=True)
                raise
            shutil.rmtree(retired)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
