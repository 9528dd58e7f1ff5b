"""`topo-prune install-topology`: diagnosis and plan on faked environments; nothing is installed or built."""

from __future__ import annotations

import dataclasses

import pytest

from lmms_topo_plugin.tools import install_topology as it
from lmms_topo_plugin.cli.main import main

PYTHON = "/venv/bin/python"
READY = it.Environment(python=PYTHON, dionysus=False, compiler="/usr/bin/c++", cmake=(3, 25, 1), boost=108100,
                       system="Linux", release="bookworm", manager="apt-get", root=False)


def env(**changes) -> it.Environment:
    return dataclasses.replace(READY, **changes)


@pytest.fixture
def commands(monkeypatch):
    """Every command the installer would run, recorded instead of run; dionysus imports after the 'build'."""
    ran: list[list[str]] = []
    monkeypatch.setattr(it, "run", lambda command, env=None: ran.append(list(command)))
    monkeypatch.setattr(it.subprocess, "run", lambda *a, **k: pytest.fail(f"unexpected subprocess {a}"))
    monkeypatch.setattr(it, "dionysus_importable", lambda python: bool(ran))
    return ran


def cli(monkeypatch, environment: it.Environment, *argv: str) -> int:
    monkeypatch.setattr(it, "probe", lambda: environment)
    return main(["install-topology", *argv])


def test_already_importable_is_nothing_to_do(monkeypatch, commands, capsys):
    assert cli(monkeypatch, env(dionysus=True, compiler=None, boost=0)) == 0
    assert commands == [] and "nothing to do" in capsys.readouterr().out
    assert it.make_plan(env(dionysus=True, boost=0)) == it.Plan()


def test_ready_environment_builds_with_pip_only(monkeypatch, commands, capsys):
    assert cli(monkeypatch, READY, "--requirement", "dionysus==2.2.3", "--", "--no-deps") == 0
    (pip,) = commands
    assert pip[:3] == [PYTHON, "-m", "pip"] and pip[-2:] == ["--no-deps", "dionysus==2.2.3"]
    assert "--config-settings=cmake.define.build_examples=OFF" in pip and "-c" in pip
    assert "plan: pip install dionysus==2.2.3" in capsys.readouterr().out


def test_dry_run_runs_nothing(monkeypatch, commands, capsys):
    assert cli(monkeypatch, env(boost=107400, root=True), "--dry-run") == 0
    assert commands == []
    assert "plan: apt-get install libboost1.81-dev; then pip install dionysus==2.2.3" in capsys.readouterr().out


def assert_one_line_failure(capsys, code: int, *phrases: str) -> str:
    """Exit code 3, one `topo-prune:` line on stderr holding every phrase; returns stdout (the steps)."""
    out, err = capsys.readouterr()
    assert code == 3 and len(err.strip().splitlines()) == 1 and err.startswith("topo-prune: "), err
    for phrase in phrases:
        assert phrase in err
    return out


def test_missing_compiler_prints_the_apt_steps_and_fails_in_one_line(monkeypatch, commands, capsys):
    code = cli(monkeypatch, env(compiler=None))
    out = assert_one_line_failure(capsys, code, "no C++ compiler", "topo-prune install-topology")
    assert "1. sudo apt-get update\n" in out and "2. sudo apt-get install -y --no-install-recommends g++\n" in out
    assert commands == []


def test_old_boost_as_root_on_bookworm_is_installed_with_apt(monkeypatch, commands, capsys):
    monkeypatch.setattr(it, "boost_version", lambda dirs: 108100)  # what the headers say after apt-get
    monkeypatch.setattr(it, "apt_install", lambda packages: commands.append(["apt-get", "install", *packages]))
    assert cli(monkeypatch, env(boost=107400, root=True)) == 0
    assert commands[0] == ["apt-get", "install", "libboost1.81-dev"] and commands[1][1:3] == ["-m", "pip"]


def test_old_boost_without_a_package_gets_the_header_download(monkeypatch, commands, capsys):
    code = cli(monkeypatch, env(boost=107400, release="jammy", root=True))
    out = assert_one_line_failure(capsys, code, "Boost 1.74.0 headers, older than 1.81")
    steps = out.split("run these steps:")[1]
    assert it.BOOST_URL in steps and "export CPATH=$HOME/.local/src/boost_1_86_0" in steps and "apt-get" not in steps
    assert commands == []


@pytest.mark.parametrize("changes, steps", [
    (dict(compiler=None, boost=0, manager="brew", system="Darwin", release=""),
     ["xcode-select --install", "brew install boost"]),
    (dict(boost=0, manager="dnf", release=""), ["curl -L "]),
    (dict(compiler=None, boost=107400), ["sudo apt-get install -y --no-install-recommends g++",
                                         "sudo apt-get install -y --no-install-recommends libboost1.81-dev"]),
    (dict(system="Windows", manager=None, compiler=None), ["wsl --install"]),
])
def test_manual_steps_fit_the_platform(changes, steps):
    plan = it.make_plan(env(**changes))
    assert plan.missing and plan.apt == {}
    for step in steps:
        assert any(step in line for line in plan.steps), (step, plan.steps)


def test_cmake_is_left_to_pip_unless_build_isolation_is_off():
    assert it.make_plan(env(cmake=())).missing == []
    assert "pip fetches the cmake wheel" in it.make_plan(env(cmake=(3, 18))).notes[0]
    plan = it.make_plan(env(cmake=()), ["--no-build-isolation"])
    assert plan.missing == ["no CMake >= 3.20 on PATH (pip cannot fetch it under --no-build-isolation)"]
    assert f'{PYTHON} -m pip install "cmake>=3.20"' in plan.steps


def test_failed_build_is_one_line(monkeypatch, capsys):
    def fail(command, env=None):
        raise it.subprocess.CalledProcessError(1, command)

    monkeypatch.setattr(it, "run", fail)
    code = cli(monkeypatch, READY)
    assert_one_line_failure(capsys, code, "failed with exit code 1", "see its output above")


def test_boost_version_reads_the_first_header(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    for root, number in ((old, 107400), (new, 108600)):
        (root / "boost").mkdir(parents=True)
        (root / "boost" / "version.hpp").write_text(f"#ifndef X\n#define BOOST_VERSION {number}\n#endif\n")
    assert it.boost_version([tmp_path / "none", new, old]) == 108600
    assert it.boost_version([tmp_path / "none"]) == 0
    assert it.dotted(108600) == "1.86.0"
