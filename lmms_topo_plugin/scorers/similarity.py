"""Scorers from how little a layer changes its input: ShortGPT block influence and angular distance."""

from __future__ import annotations

import math

import torch

from lmms_topo_plugin.scorers.registry import register_layer_method
from lmms_topo_plugin.scorers.base import LayerScorer, LayerScores


@register_layer_method(
    "block_influence",
    description="ShortGPT block influence 1 - cos(h_l, h_{l+1}) averaged over all real tokens; remove the lowest",
)
class BlockInfluence(LayerScorer):
    needs = ("token_cosine",)

    def score(self, stats: dict[str, torch.Tensor], num_layers: int) -> LayerScores:
        cosine = stats["token_cosine"].tolist()
        return LayerScores([1.0 - c for c in cosine], {"mean_token_cosine": cosine})


def depth_distance_matrix(states: torch.Tensor) -> torch.Tensor:
    """``[D, D]``: mean over samples of arccos(cos(h_i, h_j)) / pi for the depth states ``[N, D, d]``."""
    unit = torch.nn.functional.normalize(states.double(), dim=-1)
    cosine = torch.einsum("nid,njd->nij", unit, unit).clamp(-1.0, 1.0)
    return (torch.arccos(cosine) / math.pi).mean(dim=0)


@register_layer_method(
    "angular",
    description="angular distance of the last token between h_l and h_{l+n} (Gromov et al.); "
    "remove the contiguous block of n layers with the smallest distance",
)
class AngularDistance(LayerScorer):
    needs = ("last_token",)

    def score(self, stats: dict[str, torch.Tensor], num_layers: int) -> LayerScores:
        matrix = depth_distance_matrix(stats["last_token"]).tolist()
        per_layer = [matrix[l][l + 1] for l in range(num_layers)]
        return LayerScores(per_layer, {"angular_distance": per_layer, "depth_distance_matrix": matrix})

    def select(self, scores: LayerScores, n_remove: int, candidates: list[int]) -> list[int]:
        """The run of ``n_remove`` consecutive candidate layers whose ends (h_start, h_start+n) are closest."""
        if n_remove == 0:
            return []
        matrix = scores.details["depth_distance_matrix"]
        allowed = set(candidates)
        starts = [s for s in range(len(matrix) - n_remove) if allowed.issuperset(range(s, s + n_remove))]
        best = min(starts, key=lambda s: (matrix[s][s + n_remove], s))
        return list(range(best, best + n_remove))

    @classmethod
    def report_plots(cls, scores: LayerScores, removed: list[int], *, protected: tuple[int, ...] | list[int] = ()
                     ) -> dict[str, bytes]:
        """``scores``: the distance across every possible block (replaces the generic per-layer chart, which
        is not what angular selects on); none for scores without the depth distance matrix."""
        matrix = scores.details.get("depth_distance_matrix")
        if not matrix:
            return {}
        from lmms_topo_plugin.plotting import figure_png

        return {"scores": figure_png(angular_block_figure(matrix, removed, protected))}


def _count(n: int) -> str:
    return "single decoder layer" if n == 1 else f"{n} consecutive decoder layers"


def angular_block_figure(matrix: list[list[float]], removed: list[int], protected: tuple[int, ...] | list[int] = ()):
    """Distance d(h_s, h_{s+n}) per block start s: for the removed n (the chosen block shaded; the starts whose
    block would hold a ``protected`` layer, by ``keep_first_last``, hatched: no choice) and for every n."""
    import numpy as np

    from lmms_topo_plugin.plotting import integer_ticks, subplots

    distance = np.asarray(matrix, dtype=float)
    num_layers = len(distance) - 1
    n = len(removed)
    blocks = np.full((num_layers, num_layers), np.nan)  # [n - 1, start]
    for size in range(1, num_layers + 1):
        starts = np.arange(num_layers - size + 1)
        blocks[size - 1, starts] = distance[starts, starts + size]
    figure, axes = subplots(2 if n else 1, 1, figsize=(max(8, 0.45 * num_layers + 3), 8.5 if n else 4.8),
                            squeeze=False)
    axes = axes[:, 0]
    if n:
        start = min(removed)
        top = axes[0]
        starts = np.arange(num_layers - n + 1)
        top.axvspan(start - 0.45, max(removed) + 0.45, color="red", alpha=0.15, linewidth=0,
                    label=f"removed: decoder layer {start}" if n == 1 else
                    f"removed block: decoder layers {start}–{max(removed)}")
        barred = [s for s in starts if any(s <= layer < s + n for layer in protected)]
        for i, s in enumerate(barred):
            top.axvspan(s - 0.45, s + 0.45, facecolor="none", edgecolor="0.5", hatch="//", linewidth=0,
                        label="start not allowed: its block would hold layer "
                        f"{' or '.join(map(str, sorted(protected)))}, protected (keep_first_last)" if i == 0 else None)
        top.plot(starts, blocks[n - 1, starts], marker="o", label=rf"$d(h_s, h_{{s+{n}}})$ of the block starting at s")
        top.scatter([start], [blocks[n - 1, start]], color="red", zorder=3, s=60,
                    label=rf"chosen start s = {start}: $d(h_{{{start}}}, h_{{{start + n}}})$ = "
                    f"{blocks[n - 1, start]:.3f}")
        block = "layer s maps" if n == 1 else f"layers s..s+{n - 1} map"
        top.set_title(f"angular: removes the {_count(n)} whose ends are closest\n"
                      rf"({block} $h_s \to h_{{s+{n}}}$; this run removed {sorted(removed)})")
        top.set(xlabel="block start s = first removed decoder layer",
                ylabel="angular distance\n(arccos of cosine / π, mean over samples)", xlim=(-0.6, num_layers - 0.4))
        integer_ticks(top)
        top.legend(fontsize=8, loc="best")
    heat = axes[-1]
    shown = heat.imshow(blocks, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest",
                        extent=(-0.5, num_layers - 0.5, 0.5, num_layers + 0.5))
    figure.colorbar(shown, ax=heat, label=r"angular distance $d(h_s, h_{s+n})$")
    best = [int(np.nanargmin(row)) for row in blocks]
    heat.scatter(best, np.arange(1, num_layers + 1), marker="o", facecolors="white", edgecolors="black", s=30,
                 label="smallest distance for this n (all layers allowed)")
    if n:
        heat.scatter([min(removed)], [n], marker="s", facecolors="none", edgecolors="red", s=140, linewidths=2,
                     label="the block this run removed")
    heat.set_title("every block size n: distance between the block's input and output" if n else
                   "angular: to remove n layers it removes the block s..s+n-1 of smallest distance (dots);\n"
                   "this run removed no layers")
    heat.set(xlabel="block start s = first removed decoder layer", ylabel="block size n (layers removed)")
    integer_ticks(heat, y=True)
    heat.legend(fontsize=8, loc="upper right")
    figure.subplots_adjust(hspace=0.5)
    return figure
