"""CoMP's figures for the run report: what each layer kept, and the stages that led there."""

from __future__ import annotations

from typing import Any, Mapping

from lmms_topo_plugin.plotting import figure_png, integer_ticks, subplots
from lmms_topo_plugin.scorers.comp.config import MODES

MODE_COLOURS = dict(zip(MODES, ("#2ca02c", "#1f77b4", "#9467bd", "#ff7f0e")))


def kept_shares(kept: Mapping[str, list[int]], dense: Mapping[str, int], tower: str) -> dict[str, dict[int, float]]:
    """``{"attn": {layer: share}, "mlp": {...}}``: the share of each layer's head groups and channels kept in
    ``tower`` (a layout that cannot prune a kind, e.g. ``uniform`` vision heads, has no entries for it)."""
    shares: dict[str, dict[int, float]] = {"attn": {}, "mlp": {}}
    for name, units in kept.items():
        parts = name.split(".")
        if parts[0] == tower:
            shares[parts[2]][int(parts[1])] = len(units) / dense[name]
    return shares


def widths_figure(kept: Mapping[str, list[int]], dense: Mapping[str, int], layout: str, token_keep: float | None):
    """Per layer of the decoder and of the vision tower, the share of head groups and MLP channels kept."""
    towers = [tower for tower in ("text", "vision") if any(name.startswith(f"{tower}.") for name in kept)]
    figure, axes = subplots(1, len(towers), figsize=(5 * len(towers), 3.4), squeeze=False)
    for axis, tower in zip(axes[0], towers):
        shares = kept_shares(kept, dense, tower)
        for (part, label, colour), offset in zip((("attn", "head groups", "#1f77b4"),
                                                  ("mlp", "MLP channels", "#ff7f0e")), (-0.2, 0.2)):
            if shares[part]:
                axis.bar([layer + offset for layer in shares[part]], list(shares[part].values()), 0.4, label=label,
                         color=colour)
        axis.set_ylim(0, 1.05)
        axis.set_xlabel("decoder layer" if tower == "text" else "vision-tower layer")
        axis.set_ylabel("share kept")
        integer_ticks(axis)
        axis.legend(loc="lower right", fontsize=8)
    extra = [f"projector channels kept {len(kept['projector']) / dense['projector']:.0%}"] if "projector" in kept else []
    extra += [f"visual tokens kept {token_keep:.0%}"] if token_keep is not None else []
    figure.suptitle(f"method=comp, comp_widths={layout}" + (f" ({'; '.join(extra)})" if extra else ""), fontsize=10)
    return figure


def stages_figure(history: list[dict[str, Any]], rate: float):
    """Validation KL against the share of dense FLOPs removed, one point per stage coloured by its mode (explored
    stages hollow)."""
    figure, axis = subplots(figsize=(6, 3.4))
    rates = [0.0, *(row["rate"] for row in history)]
    losses = [0.0, *(row["loss"] for row in history)]
    axis.plot(rates, losses, color="#7f7f7f", linewidth=1, zorder=1)
    for mode in MODES:
        rows = [row for row in history if row["mode"] == mode]
        for explored in (False, True):
            chosen = [row for row in rows if (row["why"] == "explore") == explored]
            if chosen:
                axis.scatter([row["rate"] for row in chosen], [row["loss"] for row in chosen], zorder=2,
                             facecolors="none" if explored else MODE_COLOURS[mode], edgecolors=MODE_COLOURS[mode],
                             label=f"{mode}{' (explored)' if explored else ''}")
    axis.axvline(rate, color="#d62728", linestyle="--", linewidth=1, label=f"reached {rate:.1%}")
    axis.set_xlabel("share of dense prefill FLOPs removed")
    axis.set_ylabel("validation KL to dense")
    axis.legend(fontsize=7)
    return figure


def comp_figures(plan: Mapping[str, Any]) -> dict[str, bytes]:
    """``widths`` and, when the stages were scored (``mps``), ``stages``, from a comp run's report plan."""
    actions = {action["kind"]: action for action in plan["actions"]}
    widths, summary = actions["slice_widths"], plan["scores"]
    dense = summary["dense_units"]
    figures = {"widths": figure_png(widths_figure(widths["kept"], dense, widths["layout"], summary["token_keep"]))}
    if summary["history"] and all(row["loss"] == row["loss"] for row in summary["history"]):  # NaN: not scored
        figures["stages"] = figure_png(stages_figure(summary["history"], summary["rate"]))
    return figures
