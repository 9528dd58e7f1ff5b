"""What a sweep leaves in ``--out``: the results table (CSV, Markdown), the Pareto plot and the winner record.

Every writer goes through :func:`write_if_changed`: atomic, and a file whose content did not change is not
rewritten (a completed sweep re-run rewrites nothing).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from lmms_topo_plugin.records import WINNER
from lmms_topo_plugin.cache import atomic_write_bytes
from lmms_topo_plugin.search.rules import (
    DENSE, Rule, dense_row, flops_removed, is_dense, pareto_front, passing, removed_fraction, x_value,
)
from lmms_topo_plugin.search.variants import label_of

MB = 1e6
STDERR = " stderr"  # suffix of a metric's stderr column


def _order(row: dict) -> tuple:
    """Dense first, then method, budget and calibration size (the default, None, first)."""
    limit = row["calib_limit"]
    return not is_dense(row), label_of(row), row["budget"], limit is not None, limit or 0


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


RECOVERY_COLUMNS = ("recovery", "recover_steps", "kl_before", "kl_after", "recover_train_s", "recover_cached")


def recovery_columns(row: dict) -> dict:
    """A row's recovery (``recover=kd``) as table columns: the method (``none`` without), its steps, the held-out
    KL against the dense model before and after, the training time and whether the weights came from the cache."""
    record = row.get("recovery")
    if not record:
        return dict.fromkeys(RECOVERY_COLUMNS) | {"recovery": "none"}
    return {"recovery": record["method"], "recover_steps": record["steps"], "kl_before": record["kl_before"],
            "kl_after": record["kl_after"], "recover_train_s": record["train_seconds"],
            "recover_cached": (record.get("cache") or {}).get("hit")}


def _entry(row: dict, dense: dict, metric_names: list[str], metric: str, passes: bool | None) -> dict:
    """One flat table row: configuration, every metric and stderr, costs next to dense, the verdict."""
    cost, dense_cost = row["cost"], dense["cost"]
    entry = {"key": row["key"], "method": row["method"], "variant": label_of(row), "budget": row["budget"],
             "calib_limit": row["calib_limit"],
             "n_remove": row["n_remove"], "num_layers": row["num_layers"], "removed_fraction": removed_fraction(row),
             "removed_layers": list(row["removed_layers"]), "flops_removed": flops_removed(row, dense)}
    for name in metric_names:
        entry[name] = row["metrics"].get(name)
        entry[name + STDERR] = row["stderr"].get(name)
    return entry | {
        "retained": _ratio(row["metrics"].get(metric), dense["metrics"][metric]),
        "prefill_s": cost["prefill_s"], "decode_s_per_token": cost["decode_s_per_token"],
        "prefill_speedup": _ratio(dense_cost["prefill_s"], cost["prefill_s"]),
        "decode_speedup": _ratio(dense_cost["decode_s_per_token"], cost["decode_s_per_token"]),
        "ideal_speedup": row["num_layers"] / cost["num_layers"],
        "memory_mb": cost["peak_memory_bytes"] / MB,
        "memory_ratio": _ratio(cost["peak_memory_bytes"], dense_cost["peak_memory_bytes"]),
        "memory_kind": cost["memory_kind"], "parameters": cost["parameters"], "passes": passes,
    }


def _recovery_cell(entry: dict) -> str:
    if entry["recovery"] in (None, "none"):
        return "—"
    cached = " (cached)" if entry["recover_cached"] else ""
    return (f"{entry['recovery']} {entry['recover_steps']} steps: KL {entry['kl_before']:.3g} → "
            f"{entry['kl_after']:.3g}, {entry['recover_train_s']:.1f} s{cached}")


def results_table(rows: list[dict], metric: str, rule: Rule) -> list[dict]:
    """One flat dict per row, dense first, then by method, budget and calibration size.

    ``retained`` is the row's ``metric`` over the dense one; speedups are dense time over the row's time;
    ``ideal_speedup`` is ``L/L'``; ``passes`` is None for the dense reference, which is not a candidate. When a row
    was recovered (``recover=kd``), every row gets the :func:`recovery_columns` after them.
    """
    dense = dense_row(rows)
    metric_names = sorted({name for row in rows for name in row["metrics"]})
    passed = {row["key"] for row in passing(rows, rule, metric)}
    recovering = any(row.get("recovery") for row in rows)  # the recovery columns only in sweeps that recover
    return [_entry(row, dense, metric_names, metric, None if is_dense(row) else row["key"] in passed)
            | (recovery_columns(row) if recovering else {}) for row in sorted(rows, key=_order)]


def write_if_changed(path: str | Path, data: bytes) -> bool:
    """Write ``data`` atomically unless ``path`` already holds exactly it; True when written."""
    path = Path(path)
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write_bytes(path, data)
    return True


def csv_text(table: list[dict]) -> str:
    """The table as CSV: one header line of the column names; None is empty, lists are written as ``[1, 2]``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()


def write_csv(table: list[dict], path: str | Path) -> bool:
    """Write :func:`csv_text` to ``path`` (``results.csv``); True when written."""
    return write_if_changed(path, csv_text(table).encode())


def _count(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n:,}"


def _value(entry: dict, name: str) -> str:
    value, stderr = entry[name], entry[name + STDERR]
    if value is None:
        return "—"
    return f"{value:.3f}" if stderr is None else f"{value:.3f} ± {stderr:.3f}"


def _times(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _config(entry: dict) -> list[str]:
    """The method, budget and calibration cells (the dense row has neither budget nor calibration)."""
    if entry["variant"] == DENSE:
        return ["dense", "—", "—"]
    limit = entry["calib_limit"]
    return [entry["variant"], f"{entry['budget']:g}", "default" if limit is None else str(limit)]


def _markdown_row(entry: dict, metric_names: list[str], winner_key: str | None) -> list[str]:
    cells = _config(entry)
    if entry["key"] == winner_key:
        cells[0] += " ★"
    retained = "—" if entry["retained"] is None else f"{entry['retained']:.1%}"
    passes = {None: "—", True: "yes", False: "no"}[entry["passes"]]
    flops = "—" if entry["flops_removed"] is None else f"{entry['flops_removed']:.1%}"
    return cells + [f"{entry['n_remove']}/{entry['num_layers']}", flops] + [_value(entry, n) for n in metric_names] + [
        retained, f"{entry['prefill_s'] * 1e3:.1f}", _times(entry["prefill_speedup"]),
        f"{entry['decode_s_per_token'] * 1e3:.2f}", _times(entry["decode_speedup"]), _times(entry["ideal_speedup"]),
        f"{entry['memory_mb']:.1f}", _times(entry["memory_ratio"]), _count(entry["parameters"]),
    ] + ([_recovery_cell(entry)] if "recovery" in entry else []) + [passes]


def _headline(table: list[dict], metric: str, rule: Rule, objective: str, winner: dict | None) -> str:
    """One line: the rule, the objective and the winner (or that nothing passes)."""
    head = f"Rule `{rule.describe()}` on `{metric}`, objective `{objective}`: "
    if winner is None:
        return head + "no configuration passes the rule."
    entry = next(entry for entry in table if entry["key"] == winner["key"])
    method, budget, limit = _config(entry)
    layers = ", ".join(map(str, entry["removed_layers"]))
    retained = "" if entry["retained"] is None else f" = {entry['retained']:.1%} of dense"
    return (head + f"winner ★ **{method} @ {budget}** (calibration {limit}), removes layers {layers} "
            f"({entry['n_remove']}/{entry['num_layers']}), {entry[metric]:.3f}{retained}.")


def render_markdown(table: list[dict], metric: str, rule: Rule, objective: str, winner: dict | None) -> str:
    """``results.md``: a title, the headline and one table row per configuration (``metric``'s column first)."""
    metric_names = [metric] + [name for name in table[0] if name + STDERR in table[0] and name != metric]
    header = (["method", "budget", "calibration", "removed", "FLOPs removed"] + metric_names +
              ["retained", "prefill ms", "prefill speedup", "decode ms/token", "decode speedup", "ideal L/L'",
               f"memory MB ({table[0]['memory_kind']})", "memory ratio", "parameters"] +
              (["recovery (held-out KL to dense)"] if "recovery" in table[0] else []) + ["passes"])
    winner_key = None if winner is None else winner["key"]
    lines = [header, ["---"] + ["---:"] * (len(header) - 1)]
    lines += [_markdown_row(entry, metric_names, winner_key) for entry in table]
    body = "\n".join("| " + " | ".join(cells) + " |" for cells in lines)
    return f"# Sweep results: {metric}\n\n{_headline(table, metric, rule, objective, winner)}\n\n{body}\n"


def render_skipped(skipped: list[dict]) -> str:
    """A section listing the configurations the sweep could not run (a budget beyond a method's reach)."""
    if not skipped:
        return ""
    lines = [f"- {label_of(item)} @ {item['budget']:g}: {item['reason']}" for item in skipped]
    return "\nNot evaluated:\n\n" + "\n".join(lines) + "\n"


def write_markdown(markdown: str, path: str | Path) -> bool:
    """Write ``results.md``; True when written."""
    return write_if_changed(path, markdown.encode())


def _series(rows: list[dict]) -> dict[str, list[dict]]:
    """The pruned rows grouped into one plotted line per method (per method and calibration size if it varies)."""
    pruned = [row for row in rows if not is_dense(row)]
    limits = {}
    for row in pruned:
        limits.setdefault(label_of(row), set()).add(row["calib_limit"])
    series = {}
    for row in sorted(pruned, key=_order):
        label = label_of(row)
        if len(limits[label]) > 1:
            label += f" (calibration {'default' if row['calib_limit'] is None else row['calib_limit']})"
        series.setdefault(label, []).append(row)
    return series


_PANELS = (("latency", "measured prefill latency (ms)", 1e3),
           ("removed", "removed fraction of decoder layers", 1.0))


def _panel(axis, rows: list[dict], metric: str, winner: dict | None, x: str, scale: float) -> None:
    """One Pareto view: the method lines, the front, dense and the winner, ``x`` scaled by ``scale``."""
    def point(row):
        return x_value(row, x) * scale, row["metrics"][metric]

    for name, members in _series(rows).items():
        axis.plot(*zip(*sorted(map(point, members))), marker="o", markersize=5, label=name)
    axis.plot(*zip(*map(point, pareto_front(rows, metric, x))), color="grey", linestyle=":", linewidth=1.5,
              label="Pareto front")
    dense = dense_row(rows)
    axis.axhline(dense["metrics"][metric], color="black", linestyle="--", linewidth=1, label="dense metric")
    axis.plot(*point(dense), marker="*", markersize=16, color="black", linestyle="none", label="dense")
    if winner is not None:
        axis.plot(*point(winner), marker="o", markersize=18, markerfacecolor="none", markeredgecolor="red",
                  markeredgewidth=2, linestyle="none", label="winner")


LOG_SPREAD = 10.0  # the latency panel goes to a log axis when the slowest prefill is more than this × the fastest


def latency_spread(rows: list[dict]) -> float:
    """The slowest measured prefill latency over the fastest (1.0 when there is nothing to compare)."""
    latencies = [x_value(row, "latency") for row in rows]
    return max(latencies) / min(latencies) if latencies and min(latencies) > 0 else 1.0


def _log_latency_axis(axis, spread: float) -> None:
    """A log x axis with plain millisecond tick labels at 1, 2 and 5 of each decade."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_xscale("log")
    axis.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.set_xlabel(f"measured prefill latency (ms, log scale: the latencies span {spread:.0f}×)")


def pareto_figure(rows: list[dict], metric: str, winner: dict | None):
    """Two panels, ``metric`` against measured prefill latency and against the removed fraction.

    One line per method, the Pareto front dotted, dense as a star with a dashed horizontal line, the winner circled.
    Latency is measured, so one noisy configuration can be many times slower than the rest; on a linear axis it
    squeezes every other point against the left edge. So when the slowest latency is more than
    :data:`LOG_SPREAD` (10) times the fastest, the latency panel's x axis is log-scaled (plain millisecond tick
    labels, the spread named in the axis label). A log axis was chosen over clipping at a robust bound: every
    point stays where its true value is, and a legitimately large spread (token pruning beside dense, say) is
    not mistaken for an outlier.
    """
    from lmms_topo_plugin.plotting import subplots

    figure, axes = subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for axis, (x, label, scale) in zip(axes, _PANELS):
        _panel(axis, rows, metric, winner, x, scale)
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    spread = latency_spread(rows)
    if spread > LOG_SPREAD:
        _log_latency_axis(axes[0], spread)
    axes[0].set_ylabel(metric)
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize="small")
    figure.suptitle(f"{metric} against measured prefill latency and removed layers")
    return figure


def pareto_png(rows: list[dict], metric: str, winner: dict | None) -> bytes:
    """:func:`pareto_figure` as PNG bytes (``pareto.png``)."""
    from lmms_topo_plugin.plotting import figure_png

    return figure_png(pareto_figure(rows, metric, winner))


def winner_record(winner: dict, rows: list[dict], rule: Rule, objective: str, metric: str, context: dict) -> dict:
    """``winner.json``: the winning configuration, the dense metrics, the choice, and the sweep's ``context``.

    ``context`` (model and calibration fingerprints, method parameters, versions, model_args) is merged in at
    the top level; a key that would overwrite the record's own fields is refused.
    """
    dense = dense_row(rows)
    record = WINNER.stamp({
        "winner": {name: label_of(winner) if name == "variant" else winner.get(name) for name in (
            "key", "method", "variant", "budget", "calib_limit", "n_remove", "num_layers", "removed_layers",
            "method_params", "token_pruning", "calibration", "metrics", "stderr", "cost", "eval_s")}
        | ({"widths": winner["widths"], "search": winner["search"]} if winner.get("widths") else {})
        | ({key: winner[key] for key in ("recovery", "recovery_args")} if winner.get("recovery_args") else {}),
        "dense": {name: dense[name] for name in ("metrics", "stderr", "cost")},
        "rule": rule.describe(), "objective": objective, "metric": metric,
    })
    if clash := sorted(record.keys() & context.keys()):
        raise ValueError(f"context keys {clash} would overwrite the winner record's own fields")
    return record | context


def write_winner(record: dict, path: str | Path) -> bool:
    """Write ``winner.json`` (indented JSON); True when written."""
    return write_if_changed(path, (json.dumps(record, indent=2) + "\n").encode())
