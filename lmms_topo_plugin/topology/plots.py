"""Figures of an :func:`~lmms_topo_plugin.topology.analysis.analyze_topology` result, as PNG bytes or files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..cache import atomic_write_bytes
from ..plotting import figure_png, subplots

DIMS = (0, 1)


def barcode_png(result: dict) -> bytes:
    """H0 and H1 bars over depth, birth to death; a filled end is alive at the death depth, a hollow one not."""
    num_depths = len(result["depth_consistency"])
    figure, axes = subplots(1, 2, figsize=(11, 4), sharex=True)
    for axis, dim in zip(axes, DIMS):
        bars = result[f"bars_h{dim}"]
        for row, (birth, death, last) in enumerate(bars):
            axis.plot([birth, death], [row, row], color=f"C{dim}", linewidth=1.5, solid_capstyle="butt")
            axis.plot([death], [row], marker="o", markersize=3, color=f"C{dim}",
                      markerfacecolor=f"C{dim}" if last == death else "white")
        axis.set(title=f"H{dim} zigzag barcode ({len(bars)} bars)", xlabel="depth l (h_l)", ylabel="bar",
                 xlim=(-0.5, num_depths - 0.5))
    return figure_png(figure)


def epi_png(result: dict) -> bytes:
    """Effective persistence images (birth depth × lifetime) of H0 and H1."""
    figure, axes = subplots(1, 2, figsize=(11, 4.5))
    for axis, dim in zip(axes, DIMS):
        image = axis.imshow(np.asarray(result[f"epi_h{dim}"]).T, origin="lower", aspect="auto", cmap="viridis")
        axis.set(title=f"EPI H{dim}", xlabel="birth depth", ylabel="lifetime (layers)")
        figure.colorbar(image, ax=axis)
    return figure_png(figure)


def consistency_png(result: dict, removed: list[int] | None = None) -> bytes:
    """Per-layer consistency (removed layers marked) and per-depth topological activity."""
    layers = range(len(result["layer_consistency"]))
    figure, (top, bottom) = subplots(2, 1, figsize=(10, 6), sharex=True)
    top.plot(layers, result["layer_consistency"], marker="o", label="layer consistency S(l)")
    top.plot(layers, result["layer_survival"], linestyle="--", label="layer survival s(l)")
    for layer in removed or []:
        top.axvline(layer, color="red", alpha=0.25, linewidth=6)
    if removed:
        top.scatter(removed, [result["layer_consistency"][l] for l in removed], color="red", zorder=3,
                    label="removed")
    top.set(ylabel="score", title="decoder layer l: h_l → h_{l+1}")
    top.legend(loc="best")
    bottom.bar(range(len(result["topological_activity"])), result["topological_activity"], color="C2")
    bottom.set(xlabel="layer l / depth l", ylabel="topological activity")
    return figure_png(figure)


def write_topology_plots(result: dict, out_dir: str | Path, removed: list[int] | None = None) -> list[Path]:
    """Write ``topology_barcode.png``, ``topology_epi.png`` and ``topology_consistency.png`` to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "topology_barcode.png": barcode_png(result),
        "topology_epi.png": epi_png(result),
        "topology_consistency.png": consistency_png(result, removed),
    }
    for name, png in figures.items():
        atomic_write_bytes(out / name, png)
    return [out / name for name in figures]
