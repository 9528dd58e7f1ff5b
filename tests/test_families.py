"""The family table in lmms_topo_plugin.families is the one source of every per-family lookup, and product code
imports no test helpers."""

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import transformers

import lmms_topo_plugin
import lmms_topo_plugin.exporters
from lmms_topo_plugin import families
from lmms_topo_plugin.errors import UnsupportedArchitectureError
from lmms_topo_plugin.families import (
    FAMILIES,
    IMAGE_ONLY_PROCESSORS,
    ONNX_FAMILIES,
    SUPPORTED_MODEL_TYPES,
    TINY_MODEL_TYPES,
    adapter_class_for,
    family_for,
    tiny_recipe,
)

PACKAGE = Path(lmms_topo_plugin.__file__).parent
EXPORTERS = Path(lmms_topo_plugin.exporters.__file__).parent


def _union(part: str) -> set:
    return {key for family in FAMILIES for key in getattr(family, part)}


def test_every_model_type_lookup_comes_from_the_one_table():
    assert sum(len(family.model_types) for family in FAMILIES) == len(SUPPORTED_MODEL_TYPES)  # disjoint
    assert set(SUPPORTED_MODEL_TYPES) == _union("model_types")
    for model_type in SUPPORTED_MODEL_TYPES:
        assert adapter_class_for(SimpleNamespace(model_type=model_type)) is family_for(model_type).adapter
    assert set(ONNX_FAMILIES) == _union("onnx") <= set(SUPPORTED_MODEL_TYPES)
    assert set(TINY_MODEL_TYPES) == _union("tiny") <= set(SUPPORTED_MODEL_TYPES)
    assert set(IMAGE_ONLY_PROCESSORS) == _union("image_only_processors")
    for model_type in TINY_MODEL_TYPES:  # each recipe builds a config of its own model_type
        assert getattr(transformers, tiny_recipe(model_type).config_class).model_type == model_type


def test_every_family_module_is_in_the_table_and_the_old_tables_are_gone():
    modules = [importlib.import_module(f"{families.__name__}.{info.name}")
               for info in pkgutil.iter_modules(families.__path__)]
    assert {id(module.FAMILY) for module in modules if hasattr(module, "FAMILY")} == {id(f) for f in FAMILIES}
    for old in ("lmms_topo_plugin.adapters", "lmms_topo_plugin.exporters.onnx.families",
                "lmms_topo_plugin.testing.tiny_models", "lmms_topo_plugin.testing.tokenizer"):
        assert importlib.util.find_spec(old) is None, old


def test_unknown_model_type_names_the_supported_ones():
    with pytest.raises(UnsupportedArchitectureError, match="qwen2_5_vl, qwen2_vl, smolvlm"):
        adapter_class_for(SimpleNamespace(model_type="gpt2"))
    with pytest.raises(ValueError, match="qwen2_5_vl"):
        tiny_recipe("smolvlm")  # a supported model_type without a tiny recipe


def _imported_modules(path: Path, module: str) -> set[str]:
    """Every module ``path`` (the module ``module``) imports, anywhere in it, relative imports resolved."""
    names = set()
    if path.name == "__init__.py":  # a package's relative imports start from the package itself
        module = f"{module}.__init__"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = module.split(".")[:-node.level] if node.level else []
            stem = ".".join([*base, *([node.module] if node.module else [])])
            names.add(stem)
            names.update(f"{stem}.{alias.name}" for alias in node.names)
    return names


def _product_modules() -> dict[str, Path]:
    """Product modules (not lmms_topo_plugin.testing) by dotted name."""
    modules = {}
    for root, package in ((PACKAGE, "lmms_topo_plugin"), (EXPORTERS, "lmms_topo_plugin.exporters")):
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join([package, *parts[:-1], *([] if parts[-1] == "__init__" else [parts[-1]])])
            if not name.startswith("lmms_topo_plugin.testing") and "tasks" not in parts:
                modules[name] = path
    return modules


def test_product_code_imports_no_test_helpers():
    modules = _product_modules()
    assert {"lmms_topo_plugin.cli.main", "lmms_topo_plugin.tools.training.model"} <= set(modules)
    offenders = {name: sorted(imported for imported in _imported_modules(path, name)
                              if imported.split(".")[:2] == ["lmms_topo_plugin", "testing"])
                 for name, path in modules.items()}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_families_import_nothing_of_the_plugin_but_errors():
    """The rest of the plugin (the ONNX build, the loaders) imports the families, not the other way round."""
    modules = {name: path for name, path in _product_modules().items() if name.startswith(families.__name__)}
    assert "lmms_topo_plugin.families.qwen" in modules
    for name, path in modules.items():
        plugin = {imported for imported in _imported_modules(path, name) if imported.startswith("lmms_topo_plugin")}
        assert {imported for imported in plugin if not imported.startswith(("lmms_topo_plugin.families",
                                                                            "lmms_topo_plugin.errors"))} == set(), name
