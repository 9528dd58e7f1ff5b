"""Scorers from how little a layer changes its input: ShortGPT block influence and angular distance."""

from __future__ import annotations

import math

import torch

from ..registry import register_layer_method
from .base import LayerScorer, LayerScores


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
