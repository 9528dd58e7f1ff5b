"""The package's layers: lmms-eval only at the edge (``integrations/lmms_eval/``), and no import cycles.

The core (everything but ``integrations``, ``search``, ``cli`` and ``tools``) must import without lmms-eval, and no
module outside ``integrations/lmms_eval/`` may import it. The import graph counts every import statement of a module,
at module level or inside a function, and ``from X import name`` as an import of the module ``X.name`` when that is a
module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the folders of the installed package (pyproject's package-dir): lmms_topo_plugin.exporters is exporters/, ...
ROOTS = {"lmms_topo_plugin": REPO / "lmms_topo_plugin", "lmms_topo_plugin.exporters": REPO / "exporters",
         "lmms_topo_plugin.model_cards": REPO / "model_cards"}
EDGE = "lmms_topo_plugin.integrations.lmms_eval"
NOT_CORE = ("integrations", "search", "cli", "tools")  # subpackages of lmms_topo_plugin that may need lmms-eval


def package_modules() -> dict[str, Path]:
    """Every module of the package (``lmms_topo_plugin.x.y`` → its file); a package is its ``__init__.py``."""
    modules = {}
    for prefix, folder in ROOTS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            modules[".".join((prefix, *(parts[:-1] if parts[-1] == "__init__" else parts)))] = path
    return modules


def imported_names(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """``(imported module or name, line)`` of every import statement in the file, anywhere in it."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            names += [(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base, node.lineno)
                      for alias in node.names]
    return names


def import_graph() -> dict[str, set[str]]:
    """``module → the package modules it imports`` (a name inside a module counts as that module)."""
    modules = package_modules()
    graph = {}
    for module, path in modules.items():
        targets = set()
        for name, _ in imported_names(module, path, modules):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _path(graph: dict[str, set[str]], start: str, goal: str, within: set[str]) -> list[str]:
    """A shortest import chain ``start → … → goal`` through ``within`` (breadth first)."""
    previous = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(graph[node] & within):
            if target == goal:
                chain = [goal, node]
                while previous[chain[-1]] is not None:
                    chain.append(previous[chain[-1]])
                return chain[::-1]
            if target not in previous:
                previous[target] = node
                queue.append(target)
    return []


def strong_components(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(component)
            elif target not in index:
                index[target] = low[target] = len(index)
                stack.append(target)
                on_stack.add(target)
                work.append((target, iter(sorted(graph[target]))))
            elif target in on_stack:
                low[node] = min(low[node], index[target])
    return components


def cycles_of(graph: dict[str, set[str]]) -> list[list[str]]:
    """One import chain ``a → … → a`` per cycle of ``graph`` (empty: none)."""
    return [_path(graph, min(component), min(component), component) for component in strong_components(graph)]


def test_the_core_imports_without_lmms_eval():
    probe = textwrap.dedent(f"""
        import sys
        sys.modules["lmms_eval"] = None  # `import lmms_eval...` raises ImportError from here on
        import importlib, pkgutil

        NOT_CORE = {NOT_CORE!r}

        def walk(package):
            module = importlib.import_module(package)
            yield package
            for info in pkgutil.iter_modules(module.__path__, package + "."):
                if package == "lmms_topo_plugin" and info.name.rpartition(".")[2] in NOT_CORE:
                    continue
                if info.ispkg:
                    yield from walk(info.name)
                else:
                    importlib.import_module(info.name)
                    yield info.name

        imported = [name for root in {sorted(ROOTS)!r} for name in walk(root)]
        assert not [name for name, module in sys.modules.items() if name.startswith("lmms_eval") and module]
        print(" ".join(imported))
    """)
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    core = {module for module in package_modules()
            if not any(_inside(module, f"lmms_topo_plugin.{package}") for package in NOT_CORE)}
    assert set(result.stdout.split()) == core  # the walk imported every core module


def test_only_the_lmms_eval_integration_imports_lmms_eval():
    modules = package_modules()
    offenders = list(dict.fromkeys(f"{path.relative_to(REPO)}:{line}: imports {name}"
                                   for module, path in modules.items() if not _inside(module, EDGE)
                                   for name, line in imported_names(module, path, modules)
                                   if _inside(name, "lmms_eval")))
    assert not offenders, "lmms_eval is imported outside integrations/lmms_eval/:\n" + "\n".join(offenders)


def test_the_package_has_no_import_cycles():
    cycles = cycles_of(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_the_cycle_check_finds_every_cycle_and_nothing_else():
    graph = {"lmms_topo_plugin.a": {"lmms_topo_plugin.b"}, "lmms_topo_plugin.b": {"lmms_topo_plugin.c"},
             "lmms_topo_plugin.c": {"lmms_topo_plugin.a"},
             "lmms_topo_plugin.scorers.registry": {"lmms_topo_plugin.scorers.base"},
             "lmms_topo_plugin.scorers.base": {"lmms_topo_plugin.config"}, "lmms_topo_plugin.config": set()}
    assert cycles_of(graph) == [["lmms_topo_plugin.a", "lmms_topo_plugin.b", "lmms_topo_plugin.c",
                                 "lmms_topo_plugin.a"]]
    graph["lmms_topo_plugin.scorers.base"].add("lmms_topo_plugin.scorers.registry")
    assert ["lmms_topo_plugin.scorers.base", "lmms_topo_plugin.scorers.registry",
            "lmms_topo_plugin.scorers.base"] in cycles_of(graph)
