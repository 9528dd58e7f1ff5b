"""lmms-eval's tasks: the task YAMLs shipped with the plugin, the task index, a task's documents as prompts.

lmms-eval is imported inside the functions, so that :mod:`lmms_topo_plugin.calibration` (which asks for a task's
documents only with ``calib_task=``) and this module import without it.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any, Callable

from lmms_topo_plugin.models.prompting import Prompt


def bundled_tasks_dir() -> str:
    """The directory of the task YAMLs shipped with the plugin (pass it to ``--include_path``)."""
    return str(files("lmms_topo_plugin.tasks"))


def task_manager(include_path: str | None = None):
    """lmms-eval's task index with the bundled tasks (and ``include_path``) added."""
    from lmms_eval.tasks import TaskManager

    return TaskManager(include_path=[bundled_tasks_dir(), *([include_path] if include_path else [])])


def task_dict(names: list[str], manager, unknown: Callable[[str], Exception]) -> dict:
    """lmms-eval's task dict of ``names``; ``unknown(name)`` is raised for the first name that is no task or group
    of ``manager`` (each caller names its own option in the error)."""
    from lmms_eval.tasks import get_task_dict

    for name in names:
        if name not in manager.all_tasks:
            raise unknown(name)
    return get_task_dict(names, manager)


def task_documents(task_name: str, include_path: str | None, unknown: Callable[[str], Exception]) -> list[tuple[Any, Any]]:
    """Every ``(task, document)`` of the evaluation split of an lmms-eval task or of each task of a group."""
    return [(task, doc) for task in _leaf_tasks(task_dict([task_name], task_manager(include_path), unknown))
            for doc in task.eval_docs]


def document_prompt(task: Any, doc: Any) -> Prompt:
    """The prompt a task asks of one of its documents: its text and its images."""
    return Prompt.from_text(task.doc_to_text(doc), task.doc_to_visual(doc) or [])


def _leaf_tasks(tasks: dict) -> list[Any]:
    leaves = []
    for value in tasks.values():
        leaves.extend(_leaf_tasks(value) if isinstance(value, dict) else [value])
    return leaves
