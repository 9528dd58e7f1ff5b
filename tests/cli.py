"""The real console tools in a subprocess, for the tests: one runner (:func:`run`) and one function per tool.

Every command runs in the environment the tests run in (``os.environ`` when it is called, so the test's own
``LMMS_TOPO_CACHE`` from conftest's ``isolated_cache``), with the Hugging Face libraries offline, the venv's
``bin`` first on ``PATH`` (where ``lmms-eval``, ``topo-prune``, ``torchrun`` and ``hf`` are), and what a test
adds: ``env`` (variables set, or overridden) and ``pythonpath`` (a folder put first on ``PYTHONPATH``, such as a
fault-injection fixture). Output is captured as text; a command that does not end within ``timeout`` seconds
fails the test.

    result = lmms_eval(f"pretrained={checkpoint},method=random,sparsity=0.25,device=cpu", tmp_path / "out")
    result = topo_prune("export", "--model-args", args, "--out", str(tmp_path / "build"))
    result = torchrun(2, "-m", "lmms_topo_plugin.cli.main", "sweep", ...)
    result = python("-c", code, pythonpath=FIXTURES / "old_lmms_eval")

Commands that are signalled while they run (Ctrl-C, a kill) are started by the test itself with
``subprocess.Popen(argv(tool, ...), env=environment(...))``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Mapping

BIN = Path(sys.executable).parent
FIXTURES = Path(__file__).parent / "fixtures"
FAULTS = FIXTURES / "faults"  # on PYTHONPATH: a sitecustomize that injects the failure TOPO_TEST_FAULT names
# what conftest sets for the tests' own process, and every command inherits unless the caller's environment says
# otherwise (Hub-talking commands set HF_HUB_OFFLINE=0 through ``env``)
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
# tool name -> the argv that starts it: the venv's console scripts, its Python, and ``topo-prune`` run as a module
# (what ``python -m lmms_topo_plugin.cli.main`` does without the console script's wrapper)
TOOLS = {
    "python": [sys.executable],
    "lmms-eval": [str(BIN / "lmms-eval")],
    "topo-prune": [str(BIN / "topo-prune")],
    "torchrun": [str(BIN / "torchrun")],
    "topo-prune-module": [sys.executable, "-m", "lmms_topo_plugin.cli.main"],
}
TIMEOUT = 600


def argv(tool: str, *args: str | os.PathLike) -> list[str]:
    """The command line of ``tool`` (a name in :data:`TOOLS`, or any program, e.g. ``bash``) with ``args``."""
    return [*TOOLS.get(tool, [tool]), *map(str, args)]


def environment(env: Mapping[str, str] | None = None, pythonpath: str | os.PathLike | None = None,
                inherit: bool = True) -> dict[str, str]:
    """The tests' environment for a command: ``os.environ`` (offline, venv ``bin`` first on ``PATH``) updated by
    ``env``, with ``pythonpath`` first on ``PYTHONPATH``; ``inherit=False``: ``env`` alone, exactly."""
    if not inherit:
        return dict(env or {})
    merged = {**OFFLINE_ENV, **os.environ}
    merged["PATH"] = os.pathsep.join(filter(None, [str(BIN), os.environ.get("PATH")]))
    merged.update(env or {})
    if pythonpath:
        merged["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), merged.get("PYTHONPATH")]))
    return merged


def run(tool: str, *args: str | os.PathLike, env: Mapping[str, str] | None = None,
        pythonpath: str | os.PathLike | None = None, inherit: bool = True, cwd: str | os.PathLike | None = None,
        timeout: float | None = TIMEOUT, check: bool = False) -> subprocess.CompletedProcess:
    """Run ``tool args`` to its end (see :func:`argv`, :func:`environment`), stdout and stderr captured as text;
    ``check``: a non-zero exit fails the test, with the end of stderr."""
    command = argv(tool, *args)
    result = subprocess.run(command, capture_output=True, text=True, env=environment(env, pythonpath, inherit),
                            cwd=cwd, timeout=timeout)
    assert not (check and result.returncode), f"{command} exited {result.returncode}: {result.stderr[-3000:]}"
    return result


def python(*args: str | os.PathLike, **options) -> subprocess.CompletedProcess:
    """The venv's Python: ``python("-c", code)``, ``python(script, ...)``, ``python("-m", "pip", ...)``."""
    return run("python", *args, **options)


def topo_prune(*args: str | os.PathLike, module: bool = False, **options) -> subprocess.CompletedProcess:
    """``topo-prune args`` (the console script; ``module=True``: ``python -m lmms_topo_plugin.cli.main args``)."""
    return run("topo-prune-module" if module else "topo-prune", *args, **options)


def torchrun(nproc: int, *args: str | os.PathLike, **options) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node nproc args``: ``args`` starts with ``-m module`` or a script."""
    return run("torchrun", "--nproc_per_node", str(nproc), *args, **options)


def lmms_eval_args(model_args: str, output: str | os.PathLike, *extra: str, tasks: str = "topo_synth_count",
                   include: str | os.PathLike | None = None, limit: int = 2) -> list[str]:
    """The arguments of an ``lmms-eval --model topo_pruned`` run: ``tasks`` from ``include`` (default: the
    plugin's bundled tasks), ``limit`` documents each, results under ``output``, then ``extra``."""
    from lmms_topo_plugin.integrations.lmms_eval.tasks import bundled_tasks_dir

    return ["--model", "topo_pruned", "--model_args", model_args, "--tasks", tasks,
            "--include_path", str(include or bundled_tasks_dir()), "--output_path", str(output), "--limit", str(limit),
            *extra]


def lmms_eval(model_args: str, output: str | os.PathLike, *extra: str, tasks: str = "topo_synth_count",
              include: str | os.PathLike | None = None, limit: int = 2, **options) -> subprocess.CompletedProcess:
    """The real ``lmms-eval`` CLI with the plugin's model (:func:`lmms_eval_args`); ``options`` as :func:`run`'s."""
    return run("lmms-eval", *lmms_eval_args(model_args, output, *extra, tasks=tasks, include=include, limit=limit),
               **options)


def assert_failed(result: subprocess.CompletedProcess, code: int, line: str, out: Path) -> None:
    """Exit ``code``, exactly one ``topo_pruned:`` line on stderr equal to ``line``, no results file under ``out``."""
    ours = [text for text in result.stderr.splitlines() if text.startswith("topo_pruned:")]
    assert (result.returncode, ours) == (code, [line]), result.stderr[-3000:]
    assert not list(out.rglob("*_results.json"))
