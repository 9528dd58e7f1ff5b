"""lmms-eval in-process: which metrics the tasks produce, and one evaluation of a model already in memory.

Metric names follow lmms-eval's results: ``<task or group>/<metric>``, with ``,<filter>`` appended when the
filter is not lmms-eval's default ``none`` (``topo_synth/exact_match``, ``gsm8k/exact_match,strict-match``).
"""

from __future__ import annotations

from typing import Any

from lmms_topo_plugin.integrations.lmms_eval.tasks import task_dict

DEFAULT_FILTER = "none"


def metric_name(task: str, metric: str, filter_name: str = DEFAULT_FILTER) -> str:
    return f"{task}/{metric}" if filter_name == DEFAULT_FILTER else f"{task}/{metric},{filter_name}"


def load_tasks(tasks: list[str], manager) -> dict:
    """lmms-eval's task dict (:func:`~.tasks.task_manager`'s ``manager``); an unknown task or group is a one-line
    error naming ``--tasks``."""
    from lmms_topo_plugin.search.rules import SweepArgsError

    def unknown(name: str) -> SweepArgsError:
        return SweepArgsError(f"--tasks: {name!r} is not a known lmms-eval task or group "
                              "(list them with `lmms-eval tasks`; add a directory with --include_path)")

    return task_dict(tasks, manager, unknown)


def available_metrics(task_dict: dict) -> set[str]:
    """Every metric name the evaluation of ``task_dict`` reports: each task's metrics × filters, each group's
    aggregate metrics."""
    names: set[str] = set()
    for key, value in task_dict.items():
        if isinstance(value, dict):
            for aggregate in getattr(key, "config", {}).get("aggregate_metric_list") or []:
                for filter_name in aggregate.get("filter_list") or [DEFAULT_FILTER]:
                    names.add(metric_name(key.group_name, aggregate["metric"], filter_name))
            names |= available_metrics(value)
        else:
            config = value.config
            filters = [item["name"] for item in config.filter_list or []] or [DEFAULT_FILTER]
            for metric in config.metric_list or []:
                names.update(metric_name(config.task, metric["metric"], name) for name in filters)
    return names


def flatten_results(results: dict) -> tuple[dict[str, float], dict[str, float | None]]:
    """``(metrics, stderr)`` keyed by :func:`metric_name` from ``simple_evaluate``'s return value."""
    metrics: dict[str, float] = {}
    stderr: dict[str, float | None] = {}
    for task, values in results["results"].items():
        for key, value in values.items():
            if "," not in key or "_stderr" in key.split(",")[0] or not isinstance(value, (int, float)):
                continue
            metric, filter_name = key.split(",", 1)
            name = metric_name(task, metric, filter_name)
            metrics[name] = float(value)
            error = values.get(f"{metric}_stderr,{filter_name}")
            stderr[name] = float(error) if isinstance(error, (int, float)) else None
    return metrics, stderr


def evaluate(lm: Any, tasks: list[str], manager, limit: int | float | None) -> dict | None:
    """Run lmms-eval's ``simple_evaluate`` on ``lm`` (an lmms model object); ``None`` on ranks other than 0.

    With several processes the documents are split across ranks; results are gathered with torch.distributed
    (lmms-eval's ``torchrun`` backend: accelerate reports a single process for CPU ranks under torchrun).
    """
    from lmms_eval.evaluator import simple_evaluate

    from lmms_topo_plugin.distributed import is_distributed

    return simple_evaluate(model=lm, tasks=list(tasks), limit=limit, task_manager=manager, log_samples=False,
                           verbosity="WARNING", batch_size=lm.batch_size,
                           distributed_executor_backend="torchrun" if is_distributed() else "accelerate")
