"""``topo-prune methods``: list the layer methods and their own parameters."""

from __future__ import annotations

import argparse

NAME = "methods"
HELP = "list the pruning methods and their parameters"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> int:
    from lmms_topo_plugin.scorers.registry import available_methods, get_method

    print("none: the dense model, through the same wrapper")
    for name in available_methods()[1:]:
        spec = get_method(name)
        print(f"{name}: {spec.description}")
        for key, param in sorted(spec.params.items()):
            print(f"    {key} (default {param.default}): {param.help}; {param.allowed()}")
    return 0
