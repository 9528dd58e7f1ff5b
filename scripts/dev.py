#!/usr/bin/env python3
"""Set up a CPU environment and run the project's two commands; needs nothing but Python 3.10+.

    python3 scripts/dev.py demo    # prune the bundled model + evaluate it on topo_synth through lmms-eval
    python3 scripts/dev.py test    # the test suite (pytest; extra arguments go to pytest)
    python3 scripts/dev.py setup   # only create/refresh .venv

The environment lives in ``.venv`` next to this repository. torch is pinned to a CPU build
(``torch==2.13.0``), and lmms-eval is installed without its dependency metadata, because that pulls
PyPI's torchvision, a CUDA build that breaks ``import transformers`` next to a CPU torch; the
dependencies lmms-eval needs at run time come from the ``eval`` extra of pyproject.toml.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".topo-setup-stamp"
TORCH = "torch==2.13.0"
LMMS_EVAL = "lmms-eval==0.7.3"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run(*command: str | os.PathLike, env: dict | None = None) -> None:
    print("+", " ".join(map(str, command)), flush=True)
    subprocess.run([str(part) for part in command], check=True, cwd=ROOT, env=env)


def setup_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "scripts/dev.py", "scripts/install_dionysus.py"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def setup() -> None:
    """Create ``.venv`` and install the project (editable) with a CPU torch; skipped when up to date."""
    if STAMP.exists() and STAMP.read_text() == setup_fingerprint() and PYTHON.exists():
        return
    if not PYTHON.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    constraints = VENV / "constraints.txt"
    constraints.write_text(TORCH + "\n")
    pip = [PYTHON, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    torch_index = os.environ.get("TORCH_INDEX_URL")  # e.g. a CPU-only wheel index on other machines
    run(*pip, TORCH, *(["--index-url", torch_index] if torch_index else []))
    run(*pip, "-c", constraints, "-e", f"{ROOT}[eval,test]")
    run(*pip, "--no-deps", LMMS_EVAL)
    run(PYTHON, ROOT / "scripts" / "install_dionysus.py")  # zigzag persistence (method=topology)
    run(PYTHON, "-c", "import torch, transformers, lmms_eval, lmms_topo_plugin, dionysus; "
        "assert not __import__('importlib').util.find_spec('torchvision'), 'torchvision must not be installed'")
    STAMP.write_text(setup_fingerprint())


def demo(extra: list[str]) -> None:
    """Prune the bundled default model with topology and evaluate it on topo_synth with the lmms-eval CLI."""
    tasks_dir = subprocess.run([VENV / "bin" / "topo-prune", "tasks-dir"], check=True, capture_output=True,
                               text=True).stdout.strip()
    env = {**os.environ, **OFFLINE}
    run(VENV / "bin" / "lmms-eval", "--model", "topo_pruned",
        "--model_args", "method=topology,sparsity=0.25,device=cpu,batch_size=16",
        "--tasks", "topo_synth", "--include_path", tasks_dir, "--output_path", ROOT / "out" / "demo", *extra, env=env)


def test(extra: list[str]) -> None:
    env = {**os.environ, **OFFLINE}
    run(PYTHON, "-m", "pytest", *extra, env=env)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("setup", "demo", "test"):
        sys.exit(__doc__)
    setup()
    command, extra = sys.argv[1], sys.argv[2:]
    if command == "demo":
        demo(extra)
    elif command == "test":
        test(extra)


if __name__ == "__main__":
    main()
