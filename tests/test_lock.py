"""The development/CI environment is exactly the lock: drift is caught here, not by a user."""

import os
import re
import sys
from importlib.metadata import distributions
from pathlib import Path

import pytest

from script_modules import load_script

ROOT = Path(__file__).resolve().parent.parent
dev = load_script(Path("scripts/dev.py"))


def test_the_lock_pins_every_package_exactly_and_bounds_what_broke_before():
    pins = dev.read_lock()
    assert pins["filelock"].split(".")[0] == "3"  # lmms-eval 0.7.3 imports filelock._api (gone in 4.x)
    assert pins["lmms-eval"] == "0.7.3" and pins["torch"].startswith("2.13.0")
    assert "torchvision" not in pins
    lines = [line for line in dev.LOCK.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert list(pins) == sorted(pins) and all(re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", line) for line in lines)


def test_installed_versions_equal_the_lock():
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        if os.environ.get("CI"):
            pytest.fail(f"CI must run in the locked environment {ROOT / '.venv'}, not {sys.prefix}")
        pytest.skip("not running in the project's locked .venv (python3 scripts/dev.py test runs there)")
    installed = {dev.canonical(d.metadata["Name"]): d.version for d in distributions()}
    pins = dev.read_lock()
    optional = {name for name in dev.BUILT_SEPARATELY if name not in installed}  # dionysus: the e2e tier's setup only
    drift = {name: (version, installed.get(name)) for name, version in pins.items()
             if installed.get(name) != version and name not in optional}
    extra = sorted(set(installed) - set(pins) - dev.NOT_LOCKED)
    assert (drift, extra) == ({}, []), f"locked vs installed {drift}; not in the lock: {extra}"


@pytest.mark.parametrize("command, extra, expected", [
    ("test", [], False), ("test", ["-q"], False), ("test", ["-q", "-m", "e2e"], True), ("test", ["-me2e"], True),
    ("test", ["-m", "e2e or not e2e"], True), ("test", ["-m", "not e2e"], False), ("demo", ["-m", "e2e"], False),
    ("setup", [], False), ("setup", ["--topology"], True),
])
def test_dionysus_is_built_only_for_the_tier_that_needs_it(command, extra, expected):
    """The demo and the default tier set up without dionysus (minutes of building); the end-to-end tier, whose
    cross-checks compare the default engine with it, and `setup --topology` build it."""
    assert dev.wants_topology(command, extra) is expected
