"""The method registry: layer-pruning methods registered by name with validated parameters.

A method registers its scorer class with ``@register_layer_method(name, params=..., description=...)``.
Names are validated and collisions refused, so every method the plugin knows is listed in one place
(``available_methods()``), and its parameters are checked before any model is loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.config.params import Param, parse_params

if TYPE_CHECKING:
    from lmms_topo_plugin.scorers.base import LayerScorer

DENSE_METHOD = "none"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its scorer class, its own parameters and a one-line description."""

    name: str
    scorer_class: type[LayerScorer]
    params: dict[str, Param] = field(default_factory=dict)
    description: str = ""

    def parse(self, given: dict[str, Any]) -> dict[str, Any]:
        """Validate this method's parameters (given as strings or values)."""
        return parse_params(self.params, given, where=f"method={self.name}")

    def create(self, params: dict[str, Any]) -> LayerScorer:
        return self.scorer_class(**params)


_METHODS: dict[str, MethodSpec] = {}


def register_layer_method(
    name: str, *, params: dict[str, Param] | None = None, description: str = ""
) -> Callable[[type[LayerScorer]], type[LayerScorer]]:
    """Class decorator that registers a :class:`LayerScorer` under ``name``."""
    if not _NAME.match(name) or name == DENSE_METHOD:
        raise ValueError(f"invalid method name {name!r}: use lowercase letters, digits and '_', not {DENSE_METHOD!r}")

    def decorate(cls: type[LayerScorer]) -> type[LayerScorer]:
        if name in _METHODS and _METHODS[name].scorer_class is not cls:
            raise ValueError(f"method {name!r} is already registered by {_METHODS[name].scorer_class.__qualname__}")
        _METHODS[name] = MethodSpec(name, cls, dict(params or {}), description)
        cls.method_name = name
        return cls

    return decorate


def _load_builtin_methods() -> None:
    from lmms_topo_plugin import scorers  # noqa: F401  (importing registers the built-in scorers)


def available_methods() -> list[str]:
    """Every accepted ``method=`` value, ``none`` (dense) first."""
    _load_builtin_methods()
    return [DENSE_METHOD, *sorted(_METHODS)]


def get_method(name: str) -> MethodSpec:
    """The spec registered under ``name``; an error listing the available methods otherwise."""
    _load_builtin_methods()
    try:
        return _METHODS[name]
    except KeyError:
        raise ModelArgsError(
            f"model_args: method={name!r} is unknown; available methods: {', '.join(available_methods())}"
        ) from None


def all_method_params() -> dict[str, Param]:
    """Union of every method's own parameters (so the config parser can recognise their keys)."""
    _load_builtin_methods()
    merged: dict[str, Param] = {}
    for spec in _METHODS.values():
        merged.update(spec.params)
    return merged
