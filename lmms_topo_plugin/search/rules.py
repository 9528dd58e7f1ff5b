"""The user's bar and goal for a sweep: a rule a configuration must pass, an objective that ranks those that pass.

Rows are the sweep's plain dicts (``method``, ``n_remove``, ``num_layers``, ``metrics``, ``cost``, ``key``, …);
exactly one has ``method == "none"``: the dense reference. Every metric is read as higher-is-better.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

from lmms_topo_plugin.errors import PluginError

DENSE = "none"


def is_dense(row: dict) -> bool:
    """The dense reference: method ``none`` without token pruning (``none[token_method=...]`` is a candidate)."""
    return row["method"] == DENSE and not row.get("token_pruning")
OBJECTIVES = ("layers", "latency", "params", "flops")
PARETO_AXES = ("latency", "removed")

_RULE = re.compile(r"(keep|metric)\s*(>=|>)\s*([-+]?[0-9.]+(?:e[-+]?[0-9]+)?)\s*(%?)")
_RULE_FORMS = ("keep>=X (X a fraction of the dense metric in [0, 1], e.g. 0.95, or a percentage, e.g. 95%) "
               "or metric>=V (an absolute value of --metric); '>' instead of '>=' is strict")


class SweepArgsError(PluginError, ValueError):
    """A sweep command-line value is invalid; the one-line message names the flag and the accepted values."""

    exit_code = 2


@dataclass(frozen=True)
class Rule:
    """``kind="keep"``: metric ≥ ``threshold`` × dense metric; ``kind="metric"``: metric ≥ ``threshold``."""

    kind: Literal["keep", "metric"]
    threshold: float
    strict: bool = False

    def passes(self, value: float, dense_value: float) -> bool:
        """Whether ``value`` clears the bar (NaN never does)."""
        bar = self.threshold * dense_value if self.kind == "keep" else self.threshold
        return value > bar if self.strict else value >= bar

    def describe(self) -> str:
        """The canonical text of the rule; :func:`parse_rule` reads it back to an equal rule."""
        return f"{self.kind}{'>' if self.strict else '>='}{self.threshold!r}"


def parse_rule(text: str) -> Rule:
    """``"keep>=0.95"``, ``"keep>=95%"``, ``"metric>=0.8"`` (or ``>``), whitespace tolerated, to a :class:`Rule`."""
    match = _RULE.fullmatch(text.strip().lower())
    try:
        number = Decimal(match.group(3)) if match else None
    except InvalidOperation:
        number = None
    if number is None or (match.group(4) and match.group(1) != "keep"):
        raise SweepArgsError(f"--rule {text!r} is not understood; accepted forms: {_RULE_FORMS}")
    kind, operator, _, percent = match.groups()
    threshold = float(number / 100 if percent else number)
    if kind == "keep" and not 0 <= threshold <= 1:
        raise SweepArgsError(f"--rule {text!r}: the kept fraction must be in [0, 1]; accepted forms: {_RULE_FORMS}")
    return Rule(kind, threshold, strict=operator == ">")


def parse_objective(text: str) -> str:
    """One of :data:`OBJECTIVES` (case and surrounding whitespace ignored)."""
    objective = text.strip().lower()
    if objective not in OBJECTIVES:
        raise SweepArgsError(f"--objective {text!r} is not one of: {', '.join(OBJECTIVES)}")
    return objective


def check_metric(metric: str, available: set[str]) -> None:
    """Reject a ``--metric`` that the tasks do not produce, naming the ones they do."""
    if metric not in available:
        names = ", ".join(sorted(available)) or "(none)"
        raise SweepArgsError(f"--metric {metric!r} is not produced by the tasks; available: {names}")


def dense_row(rows: list[dict]) -> dict:
    """The one dense reference row (``method == "none"``)."""
    dense = [row for row in rows if is_dense(row)]
    if len(dense) != 1:
        raise ValueError(f"a sweep has exactly one dense row (method={DENSE!r}); found {len(dense)}")
    return dense[0]


def removed_fraction(row: dict) -> float:
    """The fraction of the dense model's decoder layers this configuration removes."""
    return row["n_remove"] / row["num_layers"]


def flops_removed(row: dict, dense: dict) -> float | None:
    """The fraction of the dense model's prefill FLOPs (on the cost prompt) this configuration removes; None for
    rows measured before FLOPs were counted."""
    flops, dense_flops = row["cost"].get("prefill_flops"), dense["cost"].get("prefill_flops")
    return None if flops is None or not dense_flops else 1.0 - flops / dense_flops


def x_value(row: dict, x: str) -> float:
    """The cost axis of a Pareto view: measured prefill seconds (``"latency"``) or removed fraction."""
    if x not in PARETO_AXES:
        raise ValueError(f"x must be one of {PARETO_AXES}, not {x!r}")
    return row["cost"]["prefill_s"] if x == "latency" else removed_fraction(row)


def passing(rows: list[dict], rule: Rule, metric: str) -> list[dict]:
    """The pruned (non-dense) rows whose ``metric`` passes ``rule`` against the dense row, in input order."""
    dense_value = dense_row(rows)["metrics"][metric]
    return [row for row in rows
            if not is_dense(row) and rule.passes(row["metrics"][metric], dense_value)]


_RANKINGS = {  # smallest key wins; the row key makes the choice independent of row order
    "layers": lambda row, metric: (-row["n_remove"], -row["metrics"][metric], row["cost"]["prefill_s"], row["key"]),
    "latency": lambda row, metric: (row["cost"]["prefill_s"], -row["metrics"][metric], row["key"]),
    "params": lambda row, metric: (row["cost"]["parameters"], -row["metrics"][metric], row["key"]),
    "flops": lambda row, metric: (row["cost"]["prefill_flops"], -row["metrics"][metric], row["key"]),
}


def pick_winner(rows: list[dict], rule: Rule, objective: str, metric: str) -> dict | None:
    """The best passing row under ``objective``, or None when nothing passes.

    ``layers``: most removed layers, then higher metric, then lower prefill latency; ``latency``: lowest
    measured prefill latency, then higher metric; ``params``: fewest parameters, then higher metric; ``flops``:
    fewest prefill FLOPs (counted on the cost prompt, whatever the method prunes), then higher metric.
    """
    candidates = passing(rows, rule, metric)
    rank = _RANKINGS[objective]
    return min(candidates, key=lambda row: rank(row, metric), default=None)


def pareto_front(rows: list[dict], metric: str, x: str = "latency") -> list[dict]:
    """The rows (dense included) that no other row beats on both higher ``metric`` and better ``x``, by ``x``.

    Better ``x`` is lower prefill latency (``"latency"``) or a higher removed fraction (``"removed"``).
    """
    sign = 1 if x == "latency" else -1
    points = [(row["metrics"][metric], sign * x_value(row, x)) for row in rows]

    def dominated(point):
        return any(value >= point[0] and cost <= point[1] and (value, cost) != point for value, cost in points)

    front = [row for row, point in zip(rows, points) if not dominated(point)]
    return sorted(front, key=lambda row: x_value(row, x))
