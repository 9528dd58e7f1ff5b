#!/usr/bin/env python3
"""Make ``import dionysus`` work in the running Python (normally ``.venv/bin/python``); idempotent.

    .venv/bin/python scripts/install_dionysus.py [REQUIREMENT [PIP_OPTION ...]]   # default dionysus==2.2.3

dionysus 2.2.3 ships no Linux wheel: pip builds it from source (scikit-build-core + CMake), and its headers
need Boost >= 1.81 (Debian bookworm's default 1.74 fails to compile it). Steps, each skipped when done:
``apt-get install libboost1.81-dev`` (root only; otherwise the command is printed and the script fails),
then ``pip install dionysus==2.2.3`` from source with examples and C++ tests off. torch is pinned by a
constraint so that pip can never replace it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DIONYSUS = "dionysus==2.2.3"
BOOST_PACKAGE = "libboost1.81-dev"
BOOST_VERSION_HEADER = Path("/usr/include/boost/version.hpp")
MIN_BOOST = 108100  # BOOST_VERSION of 1.81.0
CMAKE_OFF = ("build_examples", "BUILD_TESTING")


def dionysus_importable() -> bool:
    probe = [sys.executable, "-c", "import dionysus; dionysus.fast_zigzag; dionysus.zigzag_homology_persistence"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def boost_version() -> int:
    """BOOST_VERSION from the system headers, 0 when no Boost headers are installed."""
    if not BOOST_VERSION_HEADER.exists():
        return 0
    for line in BOOST_VERSION_HEADER.read_text().splitlines():
        if line.startswith("#define BOOST_VERSION "):
            return int(line.split()[2])
    return 0


def run(command: list[str], env: dict | None = None) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, env=env)


def ensure_boost() -> None:
    if boost_version() >= MIN_BOOST:
        return
    command = ["apt-get", "install", "-y", "--no-install-recommends", BOOST_PACKAGE]
    if os.geteuid() != 0:
        sys.exit(f"dionysus needs Boost >= 1.81 headers; as root run: apt-get update && {' '.join(command)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-cache", "show", BOOST_PACKAGE], capture_output=True).returncode != 0:
        run(["apt-get", "update", "-q"], env)
    run(command, env)
    if boost_version() < MIN_BOOST:
        sys.exit(f"{BOOST_PACKAGE} installed but {BOOST_VERSION_HEADER} still reports Boost {boost_version()}; "
                 "remove the older libboost-dev headers")


def build_dionysus(requirement: str, pip_options: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("torch==2.13.0\n")
        settings = [f"--config-settings=cmake.define.{option}=OFF" for option in CMAKE_OFF]
        env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
        run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-c", str(constraints),
             *settings, *pip_options, requirement], env)


def main() -> None:
    if dionysus_importable():
        print(f"dionysus is already importable in {sys.executable}")
        return
    start = time.perf_counter()
    ensure_boost()
    build_dionysus(sys.argv[1] if len(sys.argv) > 1 else DIONYSUS, sys.argv[2:])
    if not dionysus_importable():
        sys.exit("dionysus was built but still does not import; see the pip output above")
    print(f"dionysus installed in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
