"""Declarative parameter specs: parse ``key=value`` strings into typed, range-checked values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

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

    def allowed(self) -> str:
        """A short human description of the allowed values."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.type is bool:
            return "true or false"
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
            raise ModelArgsError(f"model_args: {name}={raw!r} is out of range; expected {self.allowed()}")
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


def parse_params(specs: dict[str, Param], given: dict[str, Any], *, where: str) -> dict[str, Any]:
    """Parse ``given`` against ``specs``; unknown keys are an error naming the allowed keys."""
    unknown = sorted(set(given) - set(specs))
    if unknown:
        raise ModelArgsError(
            f"model_args: unknown key {unknown[0]!r} for {where}; allowed keys: {', '.join(sorted(specs))}"
        )
    return {name: spec.parse(name, given[name]) if name in given else spec.default for name, spec in specs.items()}
