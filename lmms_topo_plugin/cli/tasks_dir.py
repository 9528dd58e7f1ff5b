"""``topo-prune tasks-dir``: print the bundled task directory."""

from __future__ import annotations

import argparse

NAME = "tasks-dir"
HELP = "print the bundled task directory (for lmms-eval --include_path)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> int:
    from lmms_topo_plugin.integrations.lmms_eval.tasks import bundled_tasks_dir

    print(bundled_tasks_dir())
    return 0
