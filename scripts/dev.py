#!/usr/bin/env python3
"""Set up the locked CPU environment and run the project's commands; needs nothing but Python 3.10+.

    python3 scripts/dev.py demo    # prune the bundled model + evaluate it on topo_synth through lmms-eval
    python3 scripts/dev.py test    # the test suite's default tier (pytest; extra arguments go to pytest)
    python3 scripts/dev.py test -m e2e   # the end-to-end tier: real CLI runs, exports, several processes, and the
                                         # cross-checks against dionysus (built for this tier only)
    python3 scripts/dev.py setup   # only create/refresh .venv from the lock (--topology: also build dionysus)
    python3 scripts/dev.py lock    # resolve what pyproject.toml adds (the lock's pins held), rebuild .venv, run the suite
    python3 scripts/dev.py lock --fresh   # re-resolve everything from the declared ranges (pins not held)
    python3 scripts/dev.py docs    # build the documentation site (mkdocs.yml, docs/) with --strict into site/
    python3 scripts/dev.py docs --check-site   # ... then open every built page in headless Chromium
                                               # (scripts/check_site.py: pages, images, internal links, screenshots)

The environment lives in ``.venv`` next to this repository and is installed from ``requirements-cpu.lock``:
every package pinned to an exact version and installed with ``--no-deps``, so nothing is resolved at install
time and a fresh clone next month gets what it gets today. ``lock`` makes the lock in a throwaway venv from the
declared ranges (the ``eval``, ``test``, ``onnx`` and ``docs`` extras, a CPU ``torch==2.13.0``, and lmms-eval in
the ``harness`` extra's range but without its dependency metadata: that pulls PyPI's torchvision, a CUDA build that
breaks ``import transformers`` next to a CPU torch), freezes it, then rebuilds ``.venv`` from it and runs the suite.
The current lock's pins are passed to pip as constraints, so a re-lock keeps every existing version and resolves
only what is new; a pin that no longer satisfies a declared range makes pip fail (ResolutionImpossible) instead of
moving it silently: widen the range or re-lock with ``--fresh``. It prints which pins were added, removed or changed.

``docs`` runs ``scripts/docs_pages.py --check`` (fails when a generated reference or results page differs from
what the code and ``bench/results`` would generate now), then ``mkdocs build --strict`` into ``site/`` (a warning
fails the build); ``--check-site`` then runs ``scripts/check_site.py``, which needs ``chromium`` on PATH
(Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".topo-setup-stamp"
LOCK = ROOT / "requirements-cpu.lock"
TORCH = "torch==2.13.0"
BUILT_SEPARATELY = {"dionysus"}  # built from source by `topo-prune install-topology` (no Linux wheel)
NOT_LOCKED = {"pip", "lmms-topo-plugin"}  # the installer itself and the project (installed editable)
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
PIP = ("-m", "pip", "install", "--disable-pip-version-check", "-q")


def run(*command: str | os.PathLike, env: dict | None = None) -> None:
    print("+", " ".join(map(str, command)), flush=True)
    subprocess.run([str(part) for part in command], check=True, cwd=ROOT, env=env)


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """``{canonical name: version}`` of the lock file."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonical(name)] = version
    return pins


def harness_requirement() -> str:
    """lmms-eval's declared range, from the ``harness`` extra of pyproject.toml."""
    match = re.search(r'^harness = \["([^"]+)"\]', (ROOT / "pyproject.toml").read_text(), re.M)
    if not match:
        sys.exit("pyproject.toml has no `harness = [\"lmms-eval...\"]` extra")
    return match.group(1)


def torch_index() -> list[str]:
    index = os.environ.get("TORCH_INDEX_URL")  # e.g. a CPU-only wheel index on machines without the local wheel
    return ["--index-url", index] if index else []


def setup_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "requirements-cpu.lock", "scripts/dev.py", "lmms_topo_plugin/tools/install_topology.py"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def install_topology(python: Path, *args: str) -> None:
    """``topo-prune install-topology`` of the venv of ``python`` (its console script, so the installed project
    runs, not the checkout in the working directory): builds dionysus."""
    run(python.parent / "topo-prune", "install-topology", *args)


def new_venv(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    venv.EnvBuilder(with_pip=True).create(path)
    return path / "bin" / "python"


def setup(force: bool = False, topology: bool = False) -> None:
    """Install ``.venv`` from the lock (torch first, then every pin with ``--no-deps``); skipped when up to date.

    dionysus (built from source, minutes) only with ``topology``: the demo and the default test tier run without
    it (the default zigzag engine is numpy); the end-to-end tier's cross-checks against it need it."""
    pins = read_lock()
    if not force and STAMP.exists() and STAMP.read_text() == setup_fingerprint() and PYTHON.exists():
        if topology and not importable(PYTHON, "dionysus"):
            install_topology(PYTHON, "--requirement", f"dionysus=={pins['dionysus']}", "--", "--no-deps")
        return
    python = new_venv(VENV)
    run(python, *PIP, "--no-deps", f"torch=={pins['torch']}", *torch_index())
    rest = VENV / "locked-requirements.txt"
    rest.write_text("".join(f"{name}=={version}\n" for name, version in pins.items()
                            if name != "torch" and name not in BUILT_SEPARATELY))
    run(python, *PIP, "--no-deps", "-r", rest)
    run(python, *PIP, "--no-deps", "--no-build-isolation", "-e", ROOT)
    if topology:
        install_topology(python, "--requirement", f"dionysus=={pins['dionysus']}", "--", "--no-deps")
    check_requirements(python)
    run(python, "-c", "import torch, transformers, lmms_eval, lmms_topo_plugin, onnxruntime"
        + (", dionysus" if topology else ""))
    STAMP.write_text(setup_fingerprint())


def importable(python: Path, module: str) -> bool:
    return subprocess.run([str(python), "-c", f"import {module}"], capture_output=True).returncode == 0


def wants_topology(command: str, extra: list[str]) -> bool:
    """Whether the command needs dionysus: ``setup --topology``, or ``test`` selecting the end-to-end tier
    (``-m e2e``, ``-m "e2e or not e2e"``; not ``-m "not e2e"``)."""
    if command == "setup":
        return "--topology" in extra
    markers = [extra[i + 1] for i, arg in enumerate(extra[:-1]) if arg == "-m"]
    markers += [arg[2:] for arg in extra if arg.startswith("-m") and len(arg) > 2]
    return command == "test" and any(marker.replace("not e2e", "").find("e2e") >= 0 for marker in markers)


def check_requirements(python: Path) -> None:
    """``pip check``, except lmms-eval's own requirements (installed with ``--no-deps`` on purpose); and neither
    torchvision (a CUDA build on PyPI) nor both onnxruntime and onnxruntime-gpu (they overwrite each other)."""
    report = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True).stdout
    problems = [line for line in report.splitlines() if line.strip() and not line.startswith("lmms-eval ")
                and not line.startswith("No broken requirements")]
    installed = installed_versions(python)
    if "torchvision" in installed:
        problems.append("torchvision is installed: PyPI's build is CUDA-only and breaks transformers next to a CPU torch")
    if {"onnxruntime", "onnxruntime-gpu"} <= set(installed):
        problems.append("onnxruntime and onnxruntime-gpu are both installed: they overwrite each other; keep one")
    if problems:
        sys.exit("the locked environment is inconsistent:\n" + "\n".join(problems))


def installed_versions(python: Path) -> dict[str, str]:
    probe = ("from importlib.metadata import distributions\n"
             "for d in distributions(): print(d.metadata['Name'], d.version, sep='==')")
    listing = subprocess.run([str(python), "-c", probe], check=True, capture_output=True, text=True).stdout
    return {canonical(line.split("==")[0]): line.split("==")[1] for line in listing.splitlines() if "==" in line}


def lock_constraints(held: dict[str, str]) -> str:
    """The constraints file of a re-lock: the CPU torch, then every pin ``held`` from the current lock."""
    return TORCH + "\n" + "".join(f"{name}=={version}\n" for name, version in sorted(held.items())
                                   if name not in NOT_LOCKED)


def lock_changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """One line per pin the re-lock added (``+``), removed (``-``) or moved (``~``)."""
    return ([f"+ {name}=={new[name]}" for name in sorted(set(new) - set(old))]
            + [f"- {name}=={old[name]}" for name in sorted(set(old) - set(new))]
            + [f"~ {name} {old[name]} -> {new[name]}" for name in sorted(set(old) & set(new)) if old[name] != new[name]])


def lock(fresh: bool = False) -> None:
    """Resolve the declared ranges in a throwaway venv, write the lock atomically, rebuild ``.venv``, run the suite.

    Unless ``fresh``, the current lock's pins are pip constraints: existing versions stay, only new packages are
    resolved, and a pin outside a declared range fails the resolution loudly."""
    held = read_lock() if LOCK.exists() and not fresh else {}
    scratch = ROOT / ".venv-lock"
    python = new_venv(scratch)
    constraints = scratch / "constraints.txt"
    constraints.write_text(lock_constraints(held))
    run(python, *PIP, "-c", constraints, TORCH, *torch_index())
    run(python, *PIP, "-c", constraints, f"{ROOT}[eval,test,onnx,docs]")
    run(python, *PIP, "-c", constraints, "--no-deps", harness_requirement())
    if "dionysus" in held:
        install_topology(python, "--requirement", f"dionysus=={held['dionysus']}", "--", "-c", str(constraints))
    else:
        install_topology(python)
    pins = {name: version for name, version in installed_versions(python).items() if name not in NOT_LOCKED}
    if "torchvision" in pins:
        sys.exit("the resolved environment contains torchvision; refusing to lock it (see the module docstring)")
    header = (f"# Exact versions of the CPU development/CI environment; made by `python3 scripts/dev.py lock` on\n"
              f"# {time.strftime('%Y-%m-%d')} with Python {platform.python_version()} ({sys.platform}, "
              f"{platform.machine()}). Do not edit by hand: change pyproject.toml's ranges and re-lock.\n")
    body = "".join(f"{name}=={pins[name]}\n" for name in sorted(pins))
    partial = LOCK.with_name(LOCK.name + ".partial")
    partial.write_text(header + body)
    os.replace(partial, LOCK)
    shutil.rmtree(scratch)
    print(f"wrote {LOCK.relative_to(ROOT)} ({len(pins)} packages)")
    print("\n".join(lock_changes(held, pins)) if held else "(resolved fresh: no pins held)")
    setup(force=True)
    test([])


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


def docs(extra: list[str]) -> None:
    """Check the generated pages, build the site with ``--strict`` into ``site/``; ``--check-site``: open it in
    headless Chromium (scripts/check_site.py)."""
    unknown = [arg for arg in extra if arg != "--check-site"]
    if unknown:
        sys.exit(f"docs: unknown option(s) {' '.join(unknown)}; the only option is --check-site")
    run(PYTHON, ROOT / "scripts" / "docs_pages.py", "--check")
    run(PYTHON, "-m", "mkdocs", "build", "--strict", "--clean", "--config-file", ROOT / "mkdocs.yml",
        "--site-dir", ROOT / "site", env={**os.environ, **OFFLINE, "NO_MKDOCS_2_WARNING": "1"})
    if "--check-site" in extra:
        run(PYTHON, ROOT / "scripts" / "check_site.py", ROOT / "site")


def main() -> None:
    commands = {"setup": lambda extra: None, "demo": demo, "test": test, "docs": docs,
                "lock": lambda extra: lock(fresh="--fresh" in extra)}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    command, extra = sys.argv[1], sys.argv[2:]
    if command != "lock":
        setup(topology=wants_topology(command, extra))
    try:
        commands[command](extra)
    except subprocess.CalledProcessError as error:
        sys.exit(error.returncode)


if __name__ == "__main__":
    main()
