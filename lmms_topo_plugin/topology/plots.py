"""Figures of an :func:`~lmms_topo_plugin.topology.analysis.analyze_topology` result, as PNG bytes or files.

Each ``*_figure`` builds a matplotlib :class:`~matplotlib.figure.Figure` (no pyplot) and the matching ``*_png``
renders it. Depth ``l`` is the cloud of ``h_l``, the input of decoder layer ``l``; layer ``l`` maps ``h_l`` to
``h_{l+1}``. Bars are ``[birth, death, last]`` rows in depths (see :mod:`.zigzag`).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from lmms_topo_plugin.cache import atomic_write_bytes
from lmms_topo_plugin.plotting import figure_png, integer_ticks, subplots
from lmms_topo_plugin.topology.diagnostics import RANK_CAP

DIMS = (0, 1)
DIM_NAMES = {0: "connected components", 1: "loops"}
LINE_LIMIT = 80  # up to this many bars a panel draws one line per bar; above, blocks of identical bars
LABEL_SHARE = 0.025  # a block of identical bars is labelled with its count when it holds this share of the bars


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _num_depths(result: dict) -> int:
    return len(result["depth_consistency"])


def _cloud_text(result: dict) -> str:
    """``depths h_0 … h_L (of N samples), k = …`` from what the result holds (``params`` may be absent)."""
    last = _num_depths(result) - 1
    params = result.get("params") or {}
    text = rf"depths $h_0 \ldots h_{{{last}}}$"
    if params.get("num_points"):
        text += f" of {params['num_points']} samples"
    if params.get("k"):
        text += f", kNN graphs with k = {params['k']}"
    return text


def _depth_axis(axis, num_depths: int) -> None:
    axis.set_xlim(-0.4, num_depths - 0.6)
    axis.set_xlabel(r"depth $l$ (cloud of $h_l$, input of decoder layer $l$)")
    integer_ticks(axis)


# --- barcode --------------------------------------------------------------------------------------------------


def sorted_bars(bars) -> np.ndarray:
    """Bars ``[n, 3]`` sorted by birth, then lifetime, then last alive depth."""
    rows = np.asarray(bars, dtype=np.int64).reshape(-1, 3)
    return rows[np.lexsort((rows[:, 2], rows[:, 1] - rows[:, 0], rows[:, 0]))]


def _end_markers(axis, rows: np.ndarray, y: np.ndarray, last_depth: int, colour: str, size: float) -> None:
    """The death end of each bar: filled = alive at its death depth, hollow = dead on entering it,
    triangle = still alive at the last depth."""
    deaths, lasts = rows[:, 1], rows[:, 2]
    kinds = [(lasts == last_depth, ">", colour), ((lasts == deaths) & (lasts < last_depth), "o", colour),
             (lasts < deaths, "o", "white")]
    for mask, marker, face in kinds:
        if mask.any():
            axis.scatter(deaths[mask], y[mask], s=size, marker=marker, facecolors=face, edgecolors=colour,
                         linewidths=1, zorder=3)


def _draw_barcode(axis, bars, dim: int, num_depths: int) -> None:
    colour = f"C{dim}"
    rows = sorted_bars(bars)
    total = len(rows)
    name = f"H{dim} ({DIM_NAMES.get(dim, f'dimension {dim}')})"
    if total == 0:
        axis.text(0.5, 0.5, f"no H{dim} bars", transform=axis.transAxes, ha="center", va="center", color="0.4")
        axis.set_yticks([])
        axis.set_title(f"{name}: 0 bars")
        _depth_axis(axis, num_depths)
        return
    if total <= LINE_LIMIT:
        y = np.arange(total) + 0.5
        width = float(np.clip(150 / total, 0.8, 3.0))
        segments = np.stack([np.stack([rows[:, 0], y], axis=1), np.stack([rows[:, 1], y], axis=1)], axis=1)
        axis.add_collection(LineCollection(segments, colors=colour, linewidths=width, capstyle="butt"))
        _end_markers(axis, rows, y, num_depths - 1, colour, size=float(np.clip(2400 / total, 12, 40)))
        axis.set_title(f"{name}: {_plural(total, 'bar')}")
        axis.set_ylabel("bar count (one row per bar,\nsorted by birth, then lifetime)")
    else:
        groups, counts = np.unique(rows, axis=0, return_counts=True)  # lexicographic = birth, lifetime, last
        order = np.lexsort((groups[:, 2], groups[:, 1] - groups[:, 0], groups[:, 0]))
        groups, counts = groups[order], counts[order]
        bottoms = np.cumsum(counts) - counts
        axis.barh(bottoms, groups[:, 1] - groups[:, 0], left=groups[:, 0], height=counts, align="edge",
                  color=colour, alpha=0.45, edgecolor=colour, linewidth=0.6)
        middles = bottoms + counts / 2
        _end_markers(axis, groups, middles, num_depths - 1, colour, size=20)
        for (birth, death, _), count, middle in zip(groups, counts, middles):
            if count >= LABEL_SHARE * total:
                axis.text((birth + death) / 2, middle, str(count), ha="center", va="center", fontsize=7)
        axis.set_title(f"{name}: {total} bars, drawn as {len(groups)} blocks of identical bars")
        axis.set_ylabel("bar count (block height = number of identical\nbars, sorted by birth, then lifetime)")
    axis.set_ylim(0, total)
    integer_ticks(axis, y=True)
    axis.grid(axis="x", color="0.9", linewidth=0.8)
    axis.set_axisbelow(True)
    _depth_axis(axis, num_depths)


def barcode_figure(result: dict) -> Figure:
    """H0 and H1 zigzag bars over depth, birth to death, with a legend of the death-end markers."""
    num_depths = _num_depths(result)
    figure, axes = subplots(1, 2, figsize=(13, 5))
    for axis, dim in zip(axes, DIMS):
        _draw_barcode(axis, result.get(f"bars_h{dim}", []), dim, num_depths)
    figure.suptitle(f"Zigzag barcode over {_cloud_text(result)}\neach bar is a component (H0) or loop (H1) of the "
                    "kNN complex, from the depth where it appears to the depth where it dies")
    handles = [
        Line2D([], [], color="0.3", linewidth=2, label="bar: alive from its birth depth on"),
        Line2D([], [], linestyle="", marker="o", color="0.3", label="alive at its death depth, gone after it"),
        Line2D([], [], linestyle="", marker="o", color="0.3", markerfacecolor="white",
               label="dead on entering its death depth"),
        Line2D([], [], linestyle="", marker=">", color="0.3", label=f"still alive at the last depth {num_depths - 1}"),
    ]
    figure.legend(handles=handles, loc="lower center", ncol=4, frameon=False, bbox_to_anchor=(0.5, -0.06))
    figure.subplots_adjust(top=0.83, wspace=0.3)
    return figure


def barcode_png(result: dict) -> bytes:
    """:func:`barcode_figure` as PNG bytes."""
    return figure_png(barcode_figure(result))


# --- EPI ------------------------------------------------------------------------------------------------------


def epi_figure(result: dict) -> Figure:
    """Effective persistence images (birth depth × lifetime) of H0 and H1, with labelled colour bars."""
    figure, axes = subplots(1, 2, figsize=(12, 5))
    sigma = (result.get("params") or {}).get("sigma")
    for axis, dim in zip(axes, DIMS):
        image = np.asarray(result[f"epi_h{dim}"], dtype=float)
        shown = axis.imshow(image.T, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest")
        figure.colorbar(shown, ax=axis, label="lifetime-weighted bar density")
        bars = len(result.get(f"bars_h{dim}", []))
        axis.set_title(f"H{dim} ({DIM_NAMES[dim]}): {_plural(bars, 'bar')}")
        axis.set_xlabel(r"birth depth $l$ (cloud of $h_l$)")
        axis.set_ylabel("lifetime (depths from birth to death)")
        integer_ticks(axis, y=True)
        if not image.any():
            axis.text(0.5, 0.5, "no bars", transform=axis.transAxes, ha="center", va="center", color="white")
    width = f" of width σ = {sigma:g} depth" if sigma else ""
    figure.suptitle("EPI: effective persistence image of the zigzag barcode\neach bar is a Gaussian"
                    f"{width} at (birth depth, lifetime), weighted by its lifetime")
    figure.subplots_adjust(top=0.84, wspace=0.25)
    return figure


def epi_png(result: dict) -> bytes:
    """:func:`epi_figure` as PNG bytes."""
    return figure_png(epi_figure(result))


# --- consistency ----------------------------------------------------------------------------------------------


PROTECTED_LABEL = "protected (keep_first_last)"


def _mark_layers(axis, removed: list[int] | None, protected=()) -> None:
    """Removed layers shaded red; ``protected`` ones (no method may remove them) hatched grey."""
    for i, layer in enumerate(removed or []):
        axis.axvspan(layer - 0.4, layer + 0.4, color="red", alpha=0.15, linewidth=0,
                     label="removed layer" if i == 0 else None)
    for i, layer in enumerate(sorted(protected)):
        axis.axvspan(layer - 0.4, layer + 0.4, facecolor="0.85", edgecolor="0.45", hatch="//", linewidth=0,
                     label=PROTECTED_LABEL if i == 0 else None)


def consistency_figure(result: dict, removed: list[int] | None = None, protected=()) -> Figure:
    """Per decoder layer: consistency and survival (removed layers marked, ``protected`` ones hatched); per
    depth: topological activity."""
    consistency = [np.nan if v is None else v for v in result["layer_consistency"]]
    survival = [np.nan if v is None else v for v in result["layer_survival"]]
    layers = np.arange(len(consistency))
    figure, (top, bottom) = subplots(2, 1, figsize=(10, 7.5))
    _mark_layers(top, removed, protected)
    top.plot(layers, consistency, marker="o", label="layer consistency S(l) (high = prune candidate)")
    top.plot(layers, survival, linestyle="--", marker=".", label="layer survival s(l): bars crossing the layer")
    if removed:
        top.scatter(removed, [consistency[l] for l in removed], color="red", zorder=3, label="S(l) of a removed layer")
    top.set_title(r"Per decoder layer: decoder layer $l$ maps $h_l \to h_{l+1}$")
    top.set(xlabel=r"decoder layer $l$", ylabel="score", xlim=(-0.6, len(layers) - 0.4), ylim=(-0.02, 1.3),
            yticks=[0, 0.25, 0.5, 0.75, 1])
    integer_ticks(top)
    top.legend(loc="upper center", ncol=2, fontsize=8)
    activity = [0.0 if v is None else v for v in result["topological_activity"]]
    bottom.bar(range(len(activity)), activity, color="C2")
    bottom.set_title("Per depth: topological activity (EPI mass of the bars born at this depth, H0 + H1)")
    bottom.set(ylabel="topological activity", xlim=(-0.6, len(activity) - 0.4))
    bottom.set_xlabel(r"depth $l$ (cloud of $h_l$, input of decoder layer $l$)")
    integer_ticks(bottom)
    figure.subplots_adjust(hspace=0.45)
    return figure


def consistency_png(result: dict, removed: list[int] | None = None, protected=()) -> bytes:
    """:func:`consistency_figure` as PNG bytes."""
    return figure_png(consistency_figure(result, removed, protected))


# --- per-depth persistence -------------------------------------------------------------------------------------


def layer_distance_figure(result: dict, removed: list[int] | None = None, protected=()) -> Figure:
    """``topo_score=per_depth``: per decoder layer, the diagram distance between depths ``l`` and ``l+1`` (per
    homology dimension and their mean); small = removable. Removed layers shaded, ``protected`` ones hatched."""
    figure, axis = subplots(1, 1, figsize=(10, 4.5))
    _mark_layers(axis, removed, protected)
    layers = np.arange(len(result["layer_distance"]))
    for dim in DIMS:
        values = result.get(f"layer_distance_h{dim}")
        if values is not None:
            axis.plot(layers, [np.nan if v is None else v for v in values], marker=".", linestyle="--",
                      label=f"H{dim} ({DIM_NAMES[dim]})")
    axis.plot(layers, [np.nan if v is None else v for v in result["layer_distance"]], marker="o", color="black",
              label="mean over dimensions (the score)")
    metric = (result.get("params") or {}).get("metric", "diagram")
    axis.set_title(rf"Per-depth persistence: {metric} distance between the diagrams of $h_l$ and $h_{{l+1}}$")
    axis.set(xlabel=r"decoder layer $l$ (maps $h_l \to h_{l+1}$)", ylabel=f"{metric} distance (normalised scale)",
             xlim=(-0.6, len(layers) - 0.4))
    integer_ticks(axis)
    axis.legend(loc="best", fontsize=8)
    return figure


def layer_distance_png(result: dict, removed: list[int] | None = None, protected=()) -> bytes:
    """:func:`layer_distance_figure` as PNG bytes."""
    return figure_png(layer_distance_figure(result, removed, protected))


# --- diagnostics ----------------------------------------------------------------------------------------------


def _wrapped_warnings(warnings: list[str], width: int = 120) -> str:
    if not warnings:
        return "no warnings"
    return "\n".join(textwrap.fill(str(w), width, initial_indent="• ", subsequent_indent="   ") for w in warnings)


def diagnostics_figure(result: dict) -> Figure:
    """``result["diagnostics"]``: bars kept per dimension, lifetimes, score shares, per-depth cloud health,
    and the warnings."""
    diagnostics = result["diagnostics"]
    dims = diagnostics.get("dims", {})
    names = sorted(dims)
    labels = [name.upper() for name in names]
    text = _wrapped_warnings(diagnostics.get("warnings") or [])
    lines = text.count("\n") + 1
    text_height = 0.45 + 0.17 * lines  # inches
    figure = Figure(figsize=(13, 7.6 + text_height))
    grid = figure.add_gridspec(3, 2, height_ratios=[3, 3, text_height], hspace=0.55, wspace=0.25, top=0.9,
                               bottom=0.02)
    counts_axis, share_axis = figure.add_subplot(grid[0, 0]), figure.add_subplot(grid[0, 1])
    life_axis, depth_axis = figure.add_subplot(grid[1, 0]), figure.add_subplot(grid[1, 1])
    text_axis = figure.add_subplot(grid[2, :])

    positions = np.arange(len(names))
    raw = [dims[n].get("raw_bars", 0) for n in names]
    kept = [dims[n].get("kept_bars", 0) for n in names]
    colours, handles = [f"C{i}" for i in range(len(names))], []
    for offset, values, label, alpha in ((-0.2, raw, "raw bars (zigzag output)", 0.35),
                                         (0.2, kept, "kept bars (mapped to depths)", 1.0)):
        drawn = counts_axis.bar(positions + offset, values, width=0.4, color=colours, alpha=alpha,
                                edgecolor=colours, hatch="//" if alpha < 1 else None)
        counts_axis.bar_label(drawn, fontsize=8)
        handles.append(Patch(facecolor="0.5", alpha=alpha, hatch="//" if alpha < 1 else None, label=label))
    counts_axis.set(xticks=positions, xticklabels=labels, ylabel="bars", title="Bars per dimension: raw vs kept")
    counts_axis.margins(y=0.15)
    counts_axis.legend(handles=handles, fontsize=8)

    width = 0.8 / max(len(names), 1)
    peak = 0
    for i, name in enumerate(names):
        histogram = list(dims[name].get("lifetime_counts") or [])
        peak = max([peak, *histogram])
        lifetimes = np.arange(1, len(histogram) + 1)
        life_axis.bar(lifetimes + (i - (len(names) - 1) / 2) * width, histogram, width=width, color=f"C{i}",
                      label=labels[i])
    if peak >= 20:
        life_axis.set_yscale("log")
    else:
        integer_ticks(life_axis, x=False, y=True)
    life_axis.set(xlabel="lifetime (depths from birth to death)", title="Lifetimes of the kept bars",
                  ylabel="bars" + (" (log scale)" if peak >= 20 else ""))
    integer_ticks(life_axis)
    if names:
        life_axis.legend(fontsize=8)

    shares = [dims[n].get("score_share") for n in names]
    share_axis.bar(positions, [s or 0.0 for s in shares], width=0.5, color=colours)
    for position, share, name in zip(positions, shares, names):
        note = "n/a" if share is None else f"{share:.0%}"
        if dims[name].get("constant"):
            note += "\nconstant over layers\n(no information)"
        share_axis.text(position, (share or 0.0) + 0.03, note, ha="center", va="bottom", fontsize=8,
                        color="darkred" if dims[name].get("constant") else "black")
    share_axis.set(xticks=positions, xticklabels=labels, ylim=(0, 1.3), ylabel="share of the final score",
                   title="Each dimension's share of the final score")
    share_axis.set_yticks([0, 0.25, 0.5, 0.75, 1])

    per_depth = diagnostics.get("depths", {})
    distinct = per_depth.get("distinct_points") or []
    rank = per_depth.get("rank") or []
    degenerate = per_depth.get("degenerate") or []
    depth_axis.plot(range(len(distinct)), distinct, marker="o", label="distinct points")
    depth_axis.plot(range(len(rank)), rank, marker="s", linestyle="--", label=f"rank of the cloud (up to {RANK_CAP})")
    marked = [depth for depth, flag in enumerate(degenerate) if flag]
    for i, depth in enumerate(marked):
        depth_axis.axvspan(depth - 0.4, depth + 0.4, color="red", alpha=0.2, linewidth=0,
                           label="degenerate depth" if i == 0 else None)
    depth_axis.set(ylabel="count", title=f"Per depth: the cloud of $h_l$ ({_plural(len(marked), 'degenerate depth')})")
    _depth_axis(depth_axis, max(len(distinct), len(rank), len(degenerate), 1))
    depth_axis.set_xlabel(r"depth $l$ (cloud of $h_l$)")
    depth_axis.set_ylim(0, 1.3 * max([*distinct, *rank, 1]))
    depth_axis.legend(fontsize=8, loc="upper center", ncol=3)

    text_axis.axis("off")
    count = len(diagnostics.get("warnings") or [])
    text_axis.set_title(f"Warnings ({count})", loc="left")
    text_axis.text(0, 1, text, transform=text_axis.transAxes, va="top", ha="left", fontsize=9, family="monospace",
                   color="darkred" if count else "0.3")
    figure.suptitle(f"Topology diagnostics: what the scores are built from ({_cloud_text(result)})")
    return figure


def diagnostics_png(result: dict) -> bytes:
    """:func:`diagnostics_figure` as PNG bytes."""
    return figure_png(diagnostics_figure(result))


def write_topology_plots(result: dict, out_dir: str | Path, removed: list[int] | None = None) -> list[Path]:
    """Write ``topology_barcode.png``, ``topology_epi.png``, ``topology_consistency.png`` and, when the result
    has ``diagnostics``, ``topology_diagnostics.png`` to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "topology_barcode.png": barcode_png(result),
        "topology_epi.png": epi_png(result),
        "topology_consistency.png": consistency_png(result, removed),
    }
    if "diagnostics" in result:
        figures["topology_diagnostics.png"] = diagnostics_png(result)
    for name, png in figures.items():
        atomic_write_bytes(out / name, png)
    return [out / name for name in figures]
