"""Calibration-free baselines every comparison carries: random layers and evenly spaced layers."""

from __future__ import annotations

import torch

from lmms_topo_plugin.scorers.registry import register_layer_method
from lmms_topo_plugin.scorers.base import LayerScorer, LayerScores


@register_layer_method("random", description="uniformly random layers, reproducible with seed=")
class RandomLayers(LayerScorer):
    def score(self, stats: dict[str, torch.Tensor], num_layers: int) -> LayerScores:
        generator = torch.Generator().manual_seed(self.seed)
        return LayerScores(torch.rand(num_layers, generator=generator, dtype=torch.float64).tolist())


def evenly_spaced(candidates: list[int], n_remove: int) -> list[int]:
    """``n_remove`` entries spread evenly over ``candidates`` with no two neighbours taken."""
    span = len(candidates)
    if n_remove == 0:
        return []
    if 2 * n_remove - 1 > span:
        raise ValueError(f"cannot pick {n_remove} non-adjacent layers among {span}")
    step = span / n_remove
    if step >= 2:
        picks = [int((i + 0.5) * step) for i in range(n_remove)]
    else:  # span == 2n - 1: every other candidate
        picks = list(range(0, span, 2))
    return [candidates[p] for p in picks]


@register_layer_method(
    "spacing", description="n layers evenly spaced over depth, never two adjacent (spacing-aware baseline)"
)
class SpacedLayers(LayerScorer):
    def score(self, stats: dict[str, torch.Tensor], num_layers: int) -> LayerScores:
        return LayerScores(None)

    def max_removable(self, num_candidates: int) -> int:
        return (num_candidates + 1) // 2

    def select(self, scores: LayerScores, n_remove: int, candidates: list[int]) -> list[int]:
        return evenly_spaced(candidates, n_remove)
