"""The ``lmms_eval.models`` entry point is import-light and cannot break the harness's plugin loading."""

import subprocess
import textwrap
from pathlib import Path

from cli import FIXTURES, python

HEAVY = ("torch", "transformers", "matplotlib")


def run_python(code: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    return python("-c", textwrap.dedent(code), pythonpath=pythonpath, timeout=300)


def test_loading_the_entry_point_imports_neither_torch_nor_transformers():
    result = run_python(f"""
        import sys
        from importlib.metadata import entry_points
        (point,) = [ep for ep in entry_points(group="lmms_eval.models") if ep.name == "topo_pruned"]
        payload = point.load()
        print(sorted(name for name in {HEAVY!r} if name in sys.modules))
        (manifest,) = payload()
        print(manifest.model_id, manifest.chat_class_path, manifest.simple_class_path)
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        "[]",
        "topo_pruned lmms_topo_plugin.integrations.lmms_eval.model.TopoPrunedChat lmms_topo_plugin.integrations.lmms_eval.model.TopoPrunedSimple",
    ]


def test_the_registered_class_paths_resolve_to_the_model_classes():
    from lmms_topo_plugin.integrations.lmms_eval.model import TopoPrunedChat, TopoPrunedSimple
    from lmms_topo_plugin.integrations.lmms_eval.manifest import manifests

    (manifest,) = manifests()
    classes = []
    for path in (manifest.chat_class_path, manifest.simple_class_path):
        module, name = path.rsplit(".", 1)
        classes.append(getattr(__import__(module, fromlist=[name]), name))
    assert classes == [TopoPrunedChat, TopoPrunedSimple]


def test_an_incompatible_lmms_eval_gets_a_warning_not_an_exception():
    result = run_python("""
        from lmms_topo_plugin.integrations.lmms_eval.manifest import manifests
        print(manifests())
    """, pythonpath=FIXTURES / "old_lmms_eval")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
    assert result.stderr.strip() == (
        "lmms_topo_plugin: cannot register --model topo_pruned with this lmms-eval (ModuleNotFoundError: No module "
        "named 'lmms_eval.models'); lmms-eval>=0.7.3,<0.8 is supported")
