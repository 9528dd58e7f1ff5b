"""The method registry: pruning methods registered by name with their config class.

A method registers its class (a layer scorer, or a width method such as CoMP) with ``@register_layer_method(name, config_class=..., description=...)``
(PEFT's config per method): the config class is a frozen dataclass whose :func:`~lmms_topo_plugin.config.params.option`
fields are the method's own ``model_args`` keys, with their defaults, ranges and help. Names are validated and
collisions refused, so every method the plugin knows is listed in one place (``available_methods()``), and its
parameters are checked before any model is loaded. Importing :mod:`lmms_topo_plugin.scorers` registers the built-in
methods (this module is inside that package, so they are registered whenever it is imported).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from lmms_topo_plugin.config.params import MethodConfig, Param, parse_config, params_of
from lmms_topo_plugin.errors import ModelArgsError

if TYPE_CHECKING:
    from lmms_topo_plugin.scorers.base import PruningMethod

DENSE_METHOD = "none"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its class, its config class and a one-line description."""

    name: str
    scorer_class: type[PruningMethod]
    config_class: type[MethodConfig]
    description: str = ""

    @property
    def params(self) -> dict[str, Param]:
        """``{model_args key: Param}`` of the method's own parameters."""
        return params_of(self.config_class)

    def parse(self, given: dict[str, Any]) -> MethodConfig:
        """This method's config from its ``model_args`` (strings or values), validated."""
        return parse_config(self.config_class, given, where=f"method={self.name}")

    @property
    def unit(self) -> str:
        """What the method prunes: ``layers`` or ``widths``."""
        return self.scorer_class.unit

    def create(self, config: MethodConfig | None = None, *, seed: int = 0) -> PruningMethod:
        """The method for ``config`` (default: every parameter at its default)."""
        return self.scorer_class(config if config is not None else self.config_class(), seed=seed)


_METHODS: dict[str, MethodSpec] = {}


def register_layer_method(
    name: str, *, config_class: type[MethodConfig] = MethodConfig, description: str = ""
) -> Callable[[type[PruningMethod]], type[PruningMethod]]:
    """Class decorator that registers a method (a :class:`~lmms_topo_plugin.scorers.base.PruningMethod`: a layer
    scorer, or a width method) under ``name`` with its config class."""
    if not _NAME.match(name) or name == DENSE_METHOD:
        raise ValueError(f"invalid method name {name!r}: use lowercase letters, digits and '_', not {DENSE_METHOD!r}")

    def decorate(cls: type[PruningMethod]) -> type[PruningMethod]:
        if name in _METHODS and _METHODS[name].scorer_class is not cls:
            raise ValueError(f"method {name!r} is already registered by {_METHODS[name].scorer_class.__qualname__}")
        _METHODS[name] = MethodSpec(name, cls, config_class, description)
        cls.method_name = name
        return cls

    return decorate


def available_methods() -> list[str]:
    """Every accepted ``method=`` value, ``none`` (dense) first."""
    return [DENSE_METHOD, *sorted(_METHODS)]


def get_method(name: str) -> MethodSpec:
    """The spec registered under ``name``; an error listing the available methods otherwise."""
    try:
        return _METHODS[name]
    except KeyError:
        raise ModelArgsError(
            f"model_args: method={name!r} is unknown; available methods: {', '.join(available_methods())}"
        ) from None


def method_keys() -> dict[str, list[str]]:
    """``{key: [methods that take it]}`` over every registered method's own parameters."""
    owners: dict[str, list[str]] = {}
    for name in sorted(_METHODS):
        for key in _METHODS[name].params:
            owners.setdefault(key, []).append(name)
    return owners
