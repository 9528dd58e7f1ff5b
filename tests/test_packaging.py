"""A built wheel ships the tasks, their data and the entry point, and works outside the source tree."""

import shutil
import textwrap
import zipfile
from pathlib import Path

import pytest

from cli import python

pytestmark = pytest.mark.e2e  # the end-to-end tier (real CLI runs, exports): pytest -m e2e

ROOT = Path(__file__).resolve().parent.parent
# what an in-tree `pip wheel --no-build-isolation` leaves behind (setuptools' build/ and the egg-info); never
# copied into the build source either, so a checkout's own build/ (e.g. a `topo-prune export --out build`) is no input
BUILD_LEFTOVERS = ("build", "dist", "*.egg-info")


def build_leftovers() -> dict[str, int]:
    """Every file under the checkout's top-level build leftovers, with its modification time in ns."""
    found = [path for pattern in BUILD_LEFTOVERS for path in ROOT.glob(pattern)]
    files = [file for path in found for file in ([path] if path.is_file() else [path, *path.rglob("*")])]
    return {str(file.relative_to(ROOT)): file.stat().st_mtime_ns for file in files}


@pytest.fixture(scope="module")
def wheel_build(tmp_path_factory):
    """The wheel, built by pip from a copy of the checkout (pip builds in place: setuptools writes its build/ and
    egg-info next to pyproject.toml), and the checkout's build leftovers before and after."""
    before = build_leftovers()
    source = tmp_path_factory.mktemp("source") / "lmms-topo-plugin"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv*", "__pycache__", ".pytest_cache",
                                                                *BUILD_LEFTOVERS))
    out = tmp_path_factory.mktemp("wheel")
    python("-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, source, check=True, timeout=None)
    (built,) = out.glob("lmms_topo_plugin-*.whl")
    return built, before, build_leftovers()


@pytest.fixture(scope="module")
def wheel(wheel_build):
    return wheel_build[0]


def test_building_the_wheel_writes_nothing_into_the_checkout(wheel_build):
    """`topo-prune export --out build/` after the suite ran must not find setuptools' build/ there."""
    _, before, after = wheel_build
    assert after == before


def test_wheel_contains_tasks_data_and_entry_point(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("lmms_topo_plugin/tasks/topo_synth/topo_synth.yaml", "lmms_topo_plugin/tasks/topo_synth/utils.py",
                    "lmms_topo_plugin/tasks/topo_synth/_default_template.yaml",
                    "lmms_topo_plugin/tasks/topo_synth/data/test_math.jsonl", "lmms_topo_plugin/exporters/__init__.py",
                    "lmms_topo_plugin/tasks/topo_synth/topo_synth_dev.yaml",
                    "lmms_topo_plugin/tasks/topo_synth/topo_synth_dev_presence.yaml",
                    "lmms_topo_plugin/tasks/topo_synth/data/dev_math.jsonl",
                    "lmms_topo_plugin/default_model/training_log.json",  # synthbench.seen replays it to build dev
                    "lmms_topo_plugin/cli/install_topology.py",  # topo-prune install-topology
                    "lmms_topo_plugin/tools/install_topology.py",  # what it runs
                    "lmms_topo_plugin/model_cards/__init__.py", "lmms_topo_plugin/integrations/lmms_eval/model.py"):
        assert shipped in names, shipped
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[lmms_eval.models]" in text and "topo_pruned = lmms_topo_plugin.integrations.lmms_eval.manifest:manifests" in text
    assert "topo-prune = lmms_topo_plugin.cli.main:main" in text


def test_wheel_contains_every_subpackage(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    package_root = ROOT / "lmms_topo_plugin"
    for init in package_root.rglob("__init__.py"):
        if "__pycache__" in init.parts:
            continue
        shipped = "lmms_topo_plugin/" + init.relative_to(package_root).as_posix()
        assert shipped in names, f"{shipped} is missing from the wheel: list its package in pyproject.toml"


def test_installed_wheel_serves_its_own_tasks(wheel, tmp_path):
    target = tmp_path / "site"
    python("-m", "pip", "install", "--no-deps", "-q", "--target", target, wheel, check=True, timeout=None)
    probe = textwrap.dedent("""
        import lmms_topo_plugin, sys
        from importlib.metadata import entry_points
        from lmms_eval.tasks import TaskManager, get_task_dict
        from lmms_topo_plugin.integrations.lmms_eval.tasks import bundled_tasks_dir
        assert lmms_topo_plugin.__file__.startswith(sys.argv[1]), lmms_topo_plugin.__file__
        assert bundled_tasks_dir().startswith(sys.argv[1]), bundled_tasks_dir()
        assert any(ep.name == "topo_pruned" for ep in entry_points(group="lmms_eval.models"))
        manager = TaskManager(include_path=bundled_tasks_dir(), include_defaults=False)
        task = get_task_dict(["topo_synth_count"], manager)["topo_synth_count"]
        assert len(task.eval_docs) == 100
        dev = get_task_dict(["topo_synth_dev_math"], manager)["topo_synth_dev_math"]
        assert len(dev.eval_docs) == 100 and dev.eval_docs[0]["id"] == "dev-math-0000"
        print("ok")
    """)
    # only the installed wheel on the path: nothing of this environment but its Python
    result = python("-c", probe, target, cwd=tmp_path, timeout=None, inherit=False,
                    env={"PYTHONPATH": str(target), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
                         "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.stdout.strip() == "ok", result.stderr[-2000:]
