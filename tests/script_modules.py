"""Scripts outside the package (``bench/``, ``scripts/``) imported by the tests as modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_script(path: Path):
    """The script at ``path`` (relative paths: from the repository root) as a module named after its file,
    registered in ``sys.modules`` (dataclasses and pickling look a module up by its name)."""
    path = ROOT / path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module
