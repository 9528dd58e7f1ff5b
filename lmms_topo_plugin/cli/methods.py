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


def method_entries() -> list[tuple[str, str, str, dict]]:
    """``(name, unit, description, {key: Param})`` of every registered method (``none`` excluded), in
    ``available_methods()`` order: what this command prints and the generated ``model_args`` reference lists."""
    from lmms_topo_plugin.scorers.registry import available_methods, get_method

    return [(name, spec.unit, spec.description, spec.params)
            for name, spec in ((name, get_method(name)) for name in available_methods()[1:])]


def token_entries() -> list[tuple[str, str, dict]]:
    """``(name, summary, {key: Param})`` of every visual-token pruner, without the ``token_method`` key itself."""
    from lmms_topo_plugin.config.params import params_of
    from lmms_topo_plugin.tokens import TOKEN_METHODS

    return [(name, pruner.summary, {key: param for key, param in params_of(pruner.config_class).items()
                                    if key != "token_method"}) for name, pruner in TOKEN_METHODS.items()]


def run(args: argparse.Namespace) -> int:
    print("method= (sparsity= is the fraction of decoder layers for a layer method, of the dense prefill FLOPs for a "
          "width method)")
    print("none: the dense model, through the same wrapper")
    for name, unit, description, params in method_entries():
        print(f"{name} ({unit}): {description}")
        print("\n".join(parameter_lines(params)) or "    (no parameters of its own)")
    print("\ntoken_method= (visual-token pruning during prefill; with a layer method or alone)")
    for name, summary, params in token_entries():
        print(f"{name}: {summary}")
        print("\n".join(parameter_lines(params)))
    return 0
