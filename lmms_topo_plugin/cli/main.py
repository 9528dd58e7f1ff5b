"""``topo-prune``: helper commands around the lmms-eval plugin.

Each command is one module of this folder: ``NAME``, ``HELP``, ``add_arguments(parser)``, ``run(args)`` and, where
re-running resumes or restarts cleanly, ``ON_INTERRUPT``.
"""

from __future__ import annotations

import argparse
import os
import sys

from lmms_topo_plugin.cli import (
    analyze, build_demo_model, example_image, export, install_topology, methods, onnx_generate, prune, push, regimes,
    sweep, tasks_dir,
)
from lmms_topo_plugin.failures import interrupts_reported_by_caller, report_failure, report_interrupt

COMMANDS = {module.NAME: module for module in (
    tasks_dir, methods, build_demo_model, prune, analyze, sweep, export, onnx_generate, example_image, push,
    install_topology, regimes)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="topo-prune", description="``topo-prune``: helper commands around the lmms-eval plugin.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        module.add_arguments(commands.add_parser(name, help=module.HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; any failure prints one line on stderr and returns its exit code (lmms_topo_plugin.errors).

    Tracebacks go to the debug log: ``LOGURU_LEVEL=DEBUG topo-prune ...`` shows them. Ctrl-C prints one line
    saying what re-running does (the command's ``ON_INTERRUPT``; the others start over) and returns 130.
    """
    command = None
    try:
        from loguru import logger

        args = build_parser().parse_args(argv)
        command = args.command
        logger.remove()
        logger.add(sys.stderr, level=os.environ.get("LOGURU_LEVEL", "INFO"))
        with interrupts_reported_by_caller():
            return COMMANDS[command].run(args)
    except KeyboardInterrupt:
        what = f"{command} interrupted" if command else "interrupted"
        again = getattr(COMMANDS.get(command), "ON_INTERRUPT", "re-running starts over")
        return report_interrupt(f"topo-prune: {what}; {again}")
    except Exception as error:
        return report_failure(error, f"topo-prune {command}" if command else "topo-prune", "topo-prune")


if __name__ == "__main__":
    sys.exit(main())
