"""``topo-prune regimes``: the three pruning regimes of docs/methods/domain-aware.md, read off a finished sweep.

Per budget, over the sweep's layer methods: the spread of the metric (max − min), the agreement of the
methods' choices (mean pairwise Jaccard overlap of their removed layers), the best method, and a regime by
this rule, in order (both thresholds are parameters):

1. **continuity-dominated**: ``spacing`` was evaluated at that budget and beats every other method by more than
   ``spacing_margin`` (evenly spread removals win over any ranking);
2. **ranking-sensitive**: the spread is at least ``sensitive_spread`` (which layers are chosen matters);
3. **converging**: otherwise (the methods end up within ``sensitive_spread`` of each other).

Written next to the sweep: ``regimes.json``, ``regimes.md`` and ``regimes.png`` (the metric against the budget,
one line per method, each budget's regime shaded).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.search.rules import is_dense
from lmms_topo_plugin.search.variants import label_of

REGIMES = ("ranking-sensitive", "converging", "continuity-dominated")
COLOURS = {"ranking-sensitive": "#f4cccc", "converging": "#d9ead3", "continuity-dominated": "#cfe2f3"}
SPACING = "spacing"


@dataclass(frozen=True)
class RegimeRule:
    sensitive_spread: float = 0.10
    spacing_margin: float = 0.01

    def classify(self, values: dict[str, float]) -> str:
        spacing = [value for method, value in values.items() if method.split(" ")[0] == SPACING]
        others = [value for method, value in values.items() if method.split(" ")[0] != SPACING]
        if spacing and others and min(spacing) > max(others) + self.spacing_margin:
            return "continuity-dominated"
        return "ranking-sensitive" if max(values.values()) - min(values.values()) >= self.sensitive_spread else "converging"


def read_sweep_rows(folder: Path) -> list[dict[str, Any]]:
    """The rows of the last sweep into ``folder``: its ``results.csv`` keys, each row from ``configs/``."""
    try:
        with open(folder / "results.csv", newline="", encoding="utf-8") as handle:
            keys = [entry["key"] for entry in csv.DictReader(handle)]
    except OSError as error:
        raise ModelArgsError(f"regimes: cannot read {folder / 'results.csv'} (written by topo-prune sweep): "
                             f"{error.strerror}") from None
    rows = {row["key"]: row for row in (json.loads(path.read_text()) for path in (folder / "configs").glob("*.json"))}
    return [rows[key] for key in keys if key in rows]


def jaccard(first: list[int], second: list[int]) -> float:
    union = set(first) | set(second)
    return len(set(first) & set(second)) / len(union) if union else 1.0


def budget_table(rows: list[dict], metric: str, rule: RegimeRule) -> list[dict[str, Any]]:
    """One entry per budget with at least two methods: values, spread, overlap, best method(s) and regime."""
    by_budget: dict[float, dict[str, dict]] = {}
    for row in rows:
        if not is_dense(row):
            label = label_of(row) if row["calib_limit"] is None else (
                f"{label_of(row)} (calibration {row['calib_limit']})")
            by_budget.setdefault(row["budget"], {})[label] = row
    table = []
    for budget, members in sorted(by_budget.items()):
        if len(members) < 2:
            continue
        values = {method: row["metrics"][metric] for method, row in sorted(members.items())}
        best = max(values.values())
        table.append({
            "budget": budget, "n_remove": sorted({row["n_remove"] for row in members.values()}), "values": values,
            "spread": best - min(values.values()),
            "layer_overlap": sum(jaccard(a["removed_layers"], b["removed_layers"])
                                 for a, b in combinations(members.values(), 2)) / (len(members) * (len(members) - 1) / 2),
            "best": [method for method, value in values.items() if value == best],
            "regime": rule.classify(values),
        })
    return table


def markdown(table: list[dict], metric: str, rule: RegimeRule, dense: float) -> str:
    methods = sorted({method for entry in table for method in entry["values"]})
    header = ["budget", "layers removed", *methods, "spread", "layer overlap", "best", "regime"]
    lines = [header, ["---:", "---:", *["---:"] * len(methods), "---:", "---:", "---", "---"]]
    for entry in table:
        cells = [f"{entry['values'][m]:.3f}" if m in entry["values"] else "—" for m in methods]
        lines.append([f"{entry['budget']:g}", "/".join(map(str, entry["n_remove"])), *cells, f"{entry['spread']:.3f}",
                      f"{entry['layer_overlap']:.2f}", ", ".join(entry["best"]), entry["regime"]])
    body = "\n".join("| " + " | ".join(cells) + " |" for cells in lines)
    return (f"# Pruning regimes: {metric} (dense {dense:.3f})\n\nRule: continuity-dominated when spacing beats every "
            f"other method by more than {rule.spacing_margin:g}; else ranking-sensitive when the spread (max − min) "
            f"is at least {rule.sensitive_spread:g}; else converging. Layer overlap: mean pairwise Jaccard overlap "
            f"of the methods' removed layers.\n\n{body}\n")


def regimes_png(table: list[dict], metric: str, dense: float) -> bytes:
    """The metric against the budget per method, each budget's regime shaded (half-way to its neighbours)."""
    from lmms_topo_plugin.plotting import figure_png, subplots

    budgets = [entry["budget"] for entry in table]
    edges = [budgets[0] - (budgets[1] - budgets[0]) / 2 if len(budgets) > 1 else budgets[0] - 0.05]
    edges += [(a + b) / 2 for a, b in zip(budgets, budgets[1:])]
    edges += [budgets[-1] + (budgets[-1] - edges[-1])]
    figure, axis = subplots(figsize=(9, 5))
    shaded = set()
    for entry, low, high in zip(table, edges, edges[1:]):
        label = None if entry["regime"] in shaded else entry["regime"]
        shaded.add(entry["regime"])
        axis.axvspan(low, high, color=COLOURS[entry["regime"]], alpha=0.8, label=label, linewidth=0)
    for method in sorted({method for entry in table for method in entry["values"]}):
        points = [(entry["budget"], entry["values"][method]) for entry in table if method in entry["values"]]
        axis.plot(*zip(*points), marker="o", label=method, linewidth=2.5 if method.startswith("domain") else 1.5)
    axis.axhline(dense, color="black", linestyle="--", linewidth=1, label="dense")
    axis.set_xlabel("budget (fraction of decoder layers removed)")
    axis.set_ylabel(metric)
    axis.set_xticks(budgets)
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize="small")
    axis.set_title(f"{metric} against budget, regimes shaded")
    return figure_png(figure)


def write_regimes(folder: Path, metric: str | None = None, rule: RegimeRule = RegimeRule(),
                  out: Path | None = None) -> dict[str, Any]:
    """Read the sweep in ``folder``, write ``regimes.{json,md,png}`` into ``out`` (default ``folder``)."""
    from lmms_topo_plugin.cache import atomic_write_bytes, atomic_write_json

    rows = read_sweep_rows(folder)
    if metric is None:
        metric = json.loads((folder / "pareto.json").read_text())["metric"]
    dense = next((row for row in rows if is_dense(row)), None)
    if dense is None or metric not in dense["metrics"]:
        known = ", ".join(sorted(dense["metrics"])) if dense else "none"
        raise ModelArgsError(f"regimes: --metric {metric!r} is not in the sweep's results; it has {known}")
    table = budget_table(rows, metric, rule)
    if not table:
        raise ModelArgsError(f"regimes: {folder} has no budget with two or more methods to compare")
    out = out or folder
    report = {"metric": metric, "dense": dense["metrics"][metric], "rule": vars(rule), "budgets": table}
    atomic_write_json(out / "regimes.json", report)
    atomic_write_bytes(out / "regimes.md", markdown(table, metric, rule, report["dense"]).encode())
    atomic_write_bytes(out / "regimes.png", regimes_png(table, metric, report["dense"]))
    return report
