"""``topo-prune methods``: list the pruning methods and the visual-token pruners with their own parameters (default,
allowed values, meaning), from the same typed configs that check ``model_args``."""

from __future__ import annotations

import argparse

NAME = "methods"
HELP = "list the pruning methods and visual-token pruners with their parameters, defaults and ranges"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def parameter_lines(params: dict) -> list[str]:
    """One indented line per parameter: its key, default (none stated where it has none), meaning and allowed
    values."""
    return [f"    {key}{'' if param.default is None else f' (default {param.default})'}: {param.help}; "
            f"{param.allowed()}" for key, param in sorted(params.items())]


def run(args: argparse.Namespace) -> int:
    from lmms_topo_plugin.config.params import params_of
    from lmms_topo_plugin.scorers.registry import available_methods, get_method
    from lmms_topo_plugin.tokens import TOKEN_METHODS

    print("method= (sparsity= is the fraction of decoder layers for a layer method, of the dense prefill FLOPs for a "
          "width method)")
    print("none: the dense model, through the same wrapper")
    for name in available_methods()[1:]:
        spec = get_method(name)
        print(f"{name} ({spec.unit}): {spec.description}")
        print("\n".join(parameter_lines(spec.params)) or "    (no parameters of its own)")
    print("\ntoken_method= (visual-token pruning during prefill; with a layer method or alone)")
    for name, pruner in TOKEN_METHODS.items():
        print(f"{name}: {pruner.summary}")
        print("\n".join(parameter_lines({key: param for key, param in params_of(pruner.config_class).items()
                                          if key != "token_method"})))
    return 0
