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


class StatedDefaults(argparse.HelpFormatter):
    """Each option's help ends with its default, unless the help states it already (or it has none to state)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.required or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def versions() -> str:
    """``topo-prune X (lmms-eval Y, transformers Z, torch W)``: what a bug report needs first."""
    from importlib.metadata import PackageNotFoundError, version

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    others = ", ".join(f"{name} {of(name)}" for name in ("lmms-eval", "transformers", "torch", "onnxruntime"))
    return f"topo-prune {of('lmms-topo-plugin')} ({others})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="topo-prune", description="Helper commands around the lmms-eval plugin "
                                     "lmms-topo-plugin: prune, search, export, publish.", formatter_class=StatedDefaults)
    parser.add_argument("--version", action="version", version=versions())
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, module in COMMANDS.items():
        description = module.HELP[0].upper() + module.HELP[1:] + "."
        module.add_arguments(commands.add_parser(name, help=module.HELP, description=description,
                                                 formatter_class=StatedDefaults))
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
