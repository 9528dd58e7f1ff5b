"""Declarative parameter specs: typed config fields that carry their default, range and help, and the parsing of
``key=value`` strings into them."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence, TypeVar

from lmms_topo_plugin.errors import ModelArgsError

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class Param:
    """One user-facing parameter: its type, default, allowed range or choices, and help text."""

    type: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    high_inclusive: bool = True
    choices: Sequence[Any] | None = None
    check: Callable[[Any], str | None] | None = None
    why: str | None = None  # said after an out-of-range error: why the limit is there

    def allowed(self) -> str:
        """A short human description of the allowed values."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.type is bool:
            return "true or false"
        if self.low is not None and self.high is None:
            return f"{self.article} {self.type.__name__} >= {self.low}"
        if self.low is not None or self.high is not None:
            low = "-inf" if self.low is None else self.low
            high = "inf" if self.high is None else self.high
            return f"{self.article} {self.type.__name__} in [{low}, {high}{']' if self.high_inclusive else ')'}"
        return f"{self.article} {self.type.__name__}"

    @property
    def article(self) -> str:
        return "an" if self.type.__name__[0] in "aeiou" else "a"

    def parse(self, name: str, raw: Any) -> Any:
        """Convert ``raw`` (a string from the command line or a Python value) and validate it."""
        if raw is None:
            return None
        try:
            value = _convert(self.type, raw)
        except (TypeError, ValueError):
            raise ModelArgsError(f"model_args: {name}={raw!r} is not valid; expected {self.allowed()}") from None
        if self.choices is not None and value not in self.choices:
            raise ModelArgsError(f"model_args: {name}={raw!r} is not valid; expected {self.allowed()}")
        out_of_range = (self.low is not None and value < self.low) or (
            self.high is not None and (value > self.high or (not self.high_inclusive and value >= self.high))
        )
        if out_of_range:
            why = f" ({self.why})" if self.why else ""
            raise ModelArgsError(f"model_args: {name}={raw!r} is out of range; expected {self.allowed()}{why}")
        if self.check is not None and (problem := self.check(value)):
            raise ModelArgsError(f"model_args: {name}={raw!r} is not valid; {problem}")
        return value


def _convert(kind: type, raw: Any) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(raw)
    if kind is int:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError(raw)
        return int(str(raw).strip()) if isinstance(raw, str) else int(raw)
    if kind is float:
        if isinstance(raw, bool):
            raise ValueError(raw)
        value = float(raw)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(raw)
        return value
    return kind(raw)


def parse_model_args_text(text: str, where: str = "model_args") -> dict[str, str]:
    """``"a=1,b=x"`` → ``{"a": "1", "b": "x"}``: the command line's ``--model-args`` and a sweep variant's
    ``name[a=1,b=x]``; ``where`` starts the error line (an item without ``=``, a key given twice)."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key or not value:
            raise ModelArgsError(f"{where}: {item!r} is not key=value")
        if key in pairs:
            raise ModelArgsError(f"{where}: sets {key} twice")
        pairs[key] = value
    return pairs


def option(type: type, default: Any, help: str, **limits: Any) -> Any:
    """A config dataclass field whose ``model_args`` key is the field's name: its type, default, allowed values
    (``low``/``high``/``high_inclusive``/``choices``/``check``, as :class:`Param`) and help, written once."""
    return dataclasses.field(default=default, metadata={"param": Param(type, default, help, **limits)})


def params_of(config_class: type) -> dict[str, Param]:
    """``{model_args key: Param}`` of a config dataclass built with :func:`option`."""
    return {field.name: field.metadata["param"] for field in dataclasses.fields(config_class) if "param" in field.metadata}


Config = TypeVar("Config")


def parse_config(config_class: type[Config], given: dict[str, Any], *, where: str) -> Config:
    """An instance of ``config_class`` from ``given`` (strings from the command line or Python values), every value
    converted and range-checked; a key the class does not have is an error naming its keys."""
    specs = params_of(config_class)
    unknown = sorted(set(given) - set(specs))
    if unknown:
        raise ModelArgsError(f"model_args: unknown key {unknown[0]!r} for {where}{did_you_mean(unknown[0], specs)}; "
                             f"allowed keys: {', '.join(sorted(specs))}")
    return config_class(**{name: specs[name].parse(name, value) for name, value in given.items()})


def did_you_mean(key: str, allowed: Iterable[str]) -> str:
    """`` (did you mean 'method'?)`` when ``key`` is close to one of ``allowed``, else nothing."""
    close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class MethodConfig:
    """A layer method's own parameters: none here; a method with parameters subclasses it (frozen, with
    :func:`option` fields) and registers the subclass with its scorer."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
