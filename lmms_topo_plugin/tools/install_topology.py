"""``topo-prune install-topology``: make ``import dionysus`` work in this Python, for the topology cross-check
engines (``topo_engine=fast|classic``; the default engine, quiver, needs no dionysus); idempotent.

dionysus 2.2.3 ships no Linux wheel: pip builds it from source (scikit-build-core), which needs a C++ compiler,
CMake >= 3.20 (scikit-build-core has pip fetch the ``cmake`` wheel into the build environment when PATH has none)
and Boost >= 1.81 headers (Debian bookworm's default 1.74 cannot compile it). The command looks (:func:`probe`),
plans (:func:`make_plan`), then installs what it can: the compiler and Boost headers with apt-get when it runs as
root on a Debian/Ubuntu release that packages them, then dionysus with pip (examples and C++ tests off, torch held
at its installed version by a constraint). What it cannot install it prints as this platform's exact steps, and
fails with one line (exit code 3).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Optional, Sequence

from lmms_topo_plugin.errors import MissingDependencyError

DIONYSUS = "dionysus==2.2.3"
MIN_BOOST = 108100  # BOOST_VERSION of 1.81.0
MIN_CMAKE = (3, 20)  # dionysus' cmake_minimum_required
CMAKE_OFF = ("build_examples", "BUILD_TESTING")
BOOST_URL = "https://archives.boost.io/release/1.86.0/source/boost_1_86_0.tar.gz"
BOOST_DIR = "$HOME/.local/src/boost_1_86_0"  # where the manual steps unpack it (headers only, nothing to build)
MANAGERS = ("apt-get", "dnf", "zypper", "pacman", "apk", "brew")  # the first one on PATH is the platform's
APT_BOOST = {  # releases whose archive has Boost >= 1.81 headers, and that package
    "bookworm": "libboost1.81-dev", "trixie": "libboost-dev", "forky": "libboost-dev",
    "noble": "libboost-dev", "oracular": "libboost-dev", "plucky": "libboost-dev",
}
INSTALLS = {  # (manager, what) -> the command that installs it; apt-get: `apt_package`
    ("dnf", "compiler"): "dnf install -y gcc-c++",
    ("zypper", "compiler"): "zypper install -y gcc-c++",
    ("pacman", "compiler"): "pacman -S --needed --noconfirm gcc",
    ("apk", "compiler"): "apk add g++",
    ("brew", "compiler"): "xcode-select --install",
    ("pacman", "boost"): "pacman -S --needed --noconfirm boost",
    ("brew", "boost"): "brew install boost",
}


@dataclass(frozen=True)
class Environment:
    """What the plan depends on, as :func:`probe` finds it."""

    python: str
    dionysus: bool  # ``import dionysus`` (with the zigzag functions) works in ``python``
    compiler: Optional[str]  # a C++ compiler's path
    cmake: tuple[int, ...]  # the version of ``cmake`` on PATH; () for none
    boost: int  # BOOST_VERSION of the first boost/version.hpp on the include path; 0 for none
    system: str  # platform.system(): Linux, Darwin, Windows
    release: str = ""  # /etc/os-release VERSION_CODENAME (bookworm, noble, ...)
    manager: Optional[str] = None  # the package manager (one of MANAGERS)
    root: bool = False


@dataclass
class Plan:
    """What :func:`install_topology` will run, and what it cannot do here (with the steps that do it)."""

    apt: dict[str, str] = field(default_factory=dict)  # what apt-get installs first (as root) -> its package
    notes: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # one phrase per prerequisite this command cannot install
    steps: list[str] = field(default_factory=list)  # the user's steps, in order


def dionysus_importable(python: str) -> bool:
    probe_code = "import dionysus; dionysus.fast_zigzag; dionysus.zigzag_homology_persistence"
    return subprocess.run([python, "-c", probe_code], capture_output=True).returncode == 0


def find_compiler() -> Optional[str]:
    """``$CXX`` when set, else the first of c++, g++, clang++ on PATH."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    return next(filter(None, map(shutil.which, names)), None)


def cmake_version() -> tuple[int, ...]:
    """The version of ``cmake`` on PATH, () when there is none."""
    cmake = shutil.which("cmake")
    if cmake is None:
        return ()
    output = subprocess.run([cmake, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", output)
    return tuple(int(part) for part in match.groups() if part is not None) if match else ()


def include_dirs() -> list[Path]:
    """Where a compiler finds headers: ``$CPATH`` and ``$CPLUS_INCLUDE_PATH`` first, then the usual prefixes."""
    extra = [part for name in ("CPATH", "CPLUS_INCLUDE_PATH") for part in os.environ.get(name, "").split(os.pathsep)]
    return [Path(part).expanduser() for part in extra if part] + [
        Path("/opt/homebrew/include"), Path("/usr/local/include"), Path("/usr/include")]


def boost_version(dirs: Sequence[Path]) -> int:
    """BOOST_VERSION of the first ``boost/version.hpp`` in ``dirs``; 0 when none has one."""
    for header in (directory / "boost" / "version.hpp" for directory in dirs):
        if header.is_file():
            match = re.search(r"^#define BOOST_VERSION (\d+)", header.read_text(errors="replace"), re.M)
            return int(match.group(1)) if match else 0
    return 0


def os_release() -> str:
    try:
        return platform.freedesktop_os_release().get("VERSION_CODENAME", "")
    except OSError:
        return ""


def probe(python: str = sys.executable) -> Environment:
    """The running environment, as far as building dionysus is concerned."""
    return Environment(
        python=python, dionysus=dionysus_importable(python), compiler=find_compiler(), cmake=cmake_version(),
        boost=boost_version(include_dirs()), system=platform.system(), release=os_release(),
        manager=next((name for name in MANAGERS if shutil.which(name)), None),
        root=hasattr(os, "geteuid") and os.geteuid() == 0)


def dotted(boost: int) -> str:
    """BOOST_VERSION 108100 → ``1.81.0``."""
    return f"{boost // 100000}.{boost // 100 % 1000}.{boost % 100}"


def lacking(env: Environment, pip_options: Sequence[str]) -> dict[str, str]:
    """The missing prerequisites (compiler, boost, cmake), each with a phrase for the error line. CMake only
    counts under ``--no-build-isolation``: otherwise pip fetches it for the build."""
    found: dict[str, str] = {}
    if env.compiler is None:
        found["compiler"] = "no C++ compiler (c++, g++, clang++ or $CXX)"
    if env.boost < MIN_BOOST:
        found["boost"] = (f"Boost {dotted(env.boost)} headers, older than 1.81" if env.boost
                          else "no Boost >= 1.81 headers")
    if env.cmake < MIN_CMAKE and "--no-build-isolation" in pip_options:
        found["cmake"] = "no CMake >= 3.20 on PATH (pip cannot fetch it under --no-build-isolation)"
    return found


def apt_package(env: Environment, need: str) -> Optional[str]:
    """The Debian/Ubuntu package that provides ``need`` on this release (None: the archive has none)."""
    return {"compiler": "g++", "boost": APT_BOOST.get(env.release)}.get(need)


def install_command(env: Environment, need: str) -> Optional[str]:
    """The package-manager command that installs ``need`` here, None where this platform has no such package."""
    if env.manager == "apt-get":
        package = apt_package(env, need)
        return f"apt-get install -y --no-install-recommends {package}" if package else None
    return INSTALLS.get((env.manager, need))


def manual_steps(env: Environment, needs: Sequence[str]) -> list[str]:
    """The user's steps for ``needs`` on this platform, then the rerun."""
    if env.system == "Windows":
        return ["dionysus does not build natively on Windows: install WSL 2 (`wsl --install -d Debian`) and run "
                "`topo-prune install-topology` inside it"]
    sudo = "" if env.root or env.manager == "brew" else "sudo "
    steps = [f"{sudo}{command}" for command in (install_command(env, need) for need in needs) if command]
    if steps and env.manager == "apt-get":
        steps.insert(0, f"{sudo}apt-get update")
    if "compiler" in needs and install_command(env, "compiler") is None:
        steps.append("install a C++ compiler (g++ or clang++) and put it on PATH, or set CXX to its path")
    if "boost" in needs and install_command(env, "boost") is None:
        parent = Path(BOOST_DIR).parent
        steps += [f"mkdir -p {parent} && curl -L {BOOST_URL} | tar xz -C {parent}",
                  f"export CPATH={BOOST_DIR}${{CPATH:+:$CPATH}}  # the headers are all dionysus needs"]
    if "cmake" in needs:
        steps.append(f'{env.python} -m pip install "cmake>=3.20"')
    return steps + ["topo-prune install-topology  # again"]


def make_plan(env: Environment, pip_options: Sequence[str] = ()) -> Plan:
    """apt-get what it can as root; every other missing prerequisite becomes a manual step."""
    if env.dionysus:
        return Plan()
    needs = lacking(env, pip_options)
    by_apt = env.root and env.manager == "apt-get"
    apt = {need: apt_package(env, need) for need in needs if by_apt and apt_package(env, need)}
    blocked = [need for need in needs if need not in apt]
    plan = Plan(apt=apt, missing=[needs[need] for need in blocked], steps=manual_steps(env, blocked) if blocked else [])
    if env.cmake < MIN_CMAKE and "cmake" not in needs:
        plan.notes.append("no CMake >= 3.20 on PATH: pip fetches the cmake wheel for the build")
    return plan


def describe(env: Environment) -> list[str]:
    """What was found, one line per prerequisite."""
    cmake = ".".join(map(str, env.cmake)) or "none on PATH"
    boost = dotted(env.boost) if env.boost else "none found"
    where = ", ".join(filter(None, (env.system, env.release, env.manager, "root" if env.root else "not root")))
    return [f"dionysus: {'importable' if env.dionysus else 'not importable'} in {env.python}",
            f"C++ compiler: {env.compiler or 'none'}", f"CMake: {cmake}", f"Boost headers: {boost} (need >= 1.81)",
            f"platform: {where}"]


def run(command: Sequence[str], env: Optional[dict] = None) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(list(command), check=True, env=env)


def apt_install(packages: Sequence[str]) -> None:
    """``apt-get install`` (after ``apt-get update`` when the package lists lack one of them)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if any(subprocess.run(["apt-cache", "show", name], capture_output=True).returncode for name in packages):
        run(["apt-get", "update", "-q"], env)
    run(["apt-get", "install", "-y", "--no-install-recommends", *packages], env)


def pip_build(python: str, requirement: str, pip_options: Sequence[str]) -> None:
    """``pip install`` the requirement from source, examples and C++ tests off, torch held where it is."""
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        try:
            constraints.write_text(f"torch=={version('torch')}\n")
        except PackageNotFoundError:
            constraints.write_text("")
        settings = [f"--config-settings=cmake.define.{option}=OFF" for option in CMAKE_OFF]
        env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
        run([python, "-m", "pip", "install", "--disable-pip-version-check", "-c", str(constraints), *settings,
             *pip_options, requirement], env)


def execute(plan: Plan, env: Environment, requirement: str, pip_options: Sequence[str]) -> None:
    """Run the plan's apt-get and pip steps; each failure is one line naming the step."""
    try:
        if plan.apt:
            apt_install(list(plan.apt.values()))
            if "boost" in plan.apt and boost_version(include_dirs()) < MIN_BOOST:
                raise MissingDependencyError(f"apt-get installed {plan.apt['boost']} but the first Boost headers "
                                             "found are still older than 1.81; remove the older libboost-dev")
        pip_build(env.python, requirement, pip_options)
    except subprocess.CalledProcessError as error:
        raise MissingDependencyError(f"`{' '.join(error.cmd[:4])} ...` failed with exit code {error.returncode}; "
                                     "see its output above") from error
    if not dionysus_importable(env.python):
        raise MissingDependencyError(f"{requirement} was built but still does not import; see pip's output above")


def install_topology(requirement: Optional[str] = None, pip_options: Sequence[str] = (), dry_run: bool = False,
                     env: Optional[Environment] = None) -> int:
    """Probe, plan, then install (or, with ``dry_run``, only say what would run); returns 0 when dionysus imports
    (or would be built). A prerequisite this command cannot install raises :class:`MissingDependencyError` after
    the manual steps are printed."""
    requirement = requirement or DIONYSUS
    env = env or probe()
    print("\n".join(describe(env)))
    if env.dionysus:
        print("nothing to do")
        return 0
    plan = make_plan(env, pip_options)
    for note in plan.notes:
        print(f"note: {note}")
    if plan.missing:
        print("this command cannot install what is missing; run these steps:")
        print("\n".join(f"  {i}. {step}" for i, step in enumerate(plan.steps, 1)), flush=True)
        raise MissingDependencyError(f"cannot build dionysus here: {'; '.join(plan.missing)}; run the steps "
                                     "printed above, then `topo-prune install-topology` again")
    actions = [f"apt-get install {' '.join(plan.apt.values())}"] if plan.apt else []
    actions.append(f"pip install {requirement} (built from source: a few minutes)")
    print(f"plan: {'; then '.join(actions)}", flush=True)
    if dry_run:
        return 0
    start = time.perf_counter()
    execute(plan, env, requirement, pip_options)
    print(f"dionysus installed in {time.perf_counter() - start:.0f} s")
    return 0
