"""Where the running ``lmms-eval`` command writes its results, so the pruning report can go next to them."""

from __future__ import annotations

import sys
from pathlib import Path


def output_path(argv: list[str] | None = None) -> str | None:
    """The ``--output_path`` of the running ``lmms-eval`` command (``sys.argv``), if any."""
    argv = sys.argv if argv is None else argv
    for i, arg in enumerate(argv):
        if arg == "--output_path" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--output_path="):
            return arg.split("=", 1)[1]
    return None


def results_directory(pretrained: str | None, argv: list[str] | None = None) -> Path | None:
    """lmms-eval's results folder for the model ``pretrained`` (``<--output_path>/<sanitized name>``), or ``None``
    when the command has no ``--output_path``."""
    path = output_path(argv)
    if path is None:
        return None
    from lmms_eval.utils import sanitize_model_name

    return Path(path) / sanitize_model_name(pretrained or "")
