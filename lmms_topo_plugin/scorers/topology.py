"""TopoVLM topology-aware layer pruning: remove the layers across which zigzag topology is most consistent.

Decoder layer ``l`` maps ``h_l`` to ``h_{l+1}``; its score compares the point clouds of depths ``l`` and
``l+1`` (see :mod:`lmms_topo_plugin.topology.consistency` for the exact formulas and
:mod:`lmms_topo_plugin.topology.zigzag` for the depth conventions).
"""

from __future__ import annotations

import torch

from ..params import Param
from ..registry import register_layer_method
from ..topology.analysis import MIN_POINTS, analyze_topology, select_epsilon
from ..topology.zigzag import ENGINES, require_dionysus
from .base import LayerScorer, LayerScores

PARAMS = {
    "topo_k": Param(int, 15, "neighbours per point in the symmetrised kNN graph (clamped to N-1)", low=1),
    "topo_alpha": Param(float, 1.0, "weight |l - l'|^alpha of depth pairs in the consistency score", low=0.0, high=4.0),
    "topo_sigma": Param(float, 0.5, "width, in layers, of each bar's Gaussian in the persistence image",
                        check=lambda v: None if v > 0 else "expected a float > 0"),
    "topo_select": Param(str, "topn", "topn: the n most consistent layers; epsilon: those with consistency >= "
                         "topo_epsilon * max, at most n", choices=("topn", "epsilon")),
    "topo_epsilon": Param(float, 0.9, "threshold of topo_select=epsilon, as a fraction of the max consistency",
                          check=lambda v: None if 0 < v <= 1 else "expected a float in (0, 1]"),
    "topo_points": Param(str, "last_token", "point per calibration sample: the last prompt token's state, or the "
                         "mean of its visual tokens' states (every calibration prompt needs an image)",
                         choices=("last_token", "visual_mean")),
    "topo_engine": Param(str, "fast", "dionysus zigzag algorithm: fast (cone) or classic (quadratic; small N)",
                         choices=ENGINES),
}


@register_layer_method(
    "topology",
    params=PARAMS,
    description="TopoVLM: zigzag persistent homology (H0, H1) of kNN flag complexes of the last-token (or "
    "visual-mean) cloud at every depth; remove the layers whose topology is most consistent",
)
class TopologyScorer(LayerScorer):
    needs = ("last_token",)
    min_samples = MIN_POINTS
    default_samples = 256  # the paper uses 512; 256 fits the bundled calib split (320) and costs ~1 s to score

    def __init__(self, *, topo_k: int = 15, topo_alpha: float = 1.0, topo_sigma: float = 0.5,
                 topo_select: str = "topn", topo_epsilon: float = 0.9, topo_points: str = "last_token",
                 topo_engine: str = "fast", seed: int = 0) -> None:
        super().__init__(seed=seed)
        require_dionysus()
        self.needs = (topo_points,)
        self.analysis_params = {"k": topo_k, "alpha": topo_alpha, "sigma": topo_sigma, "engine": topo_engine}
        self.select_rule = topo_select
        self.epsilon = topo_epsilon

    def score(self, stats: dict[str, torch.Tensor], num_layers: int) -> LayerScores:
        (points,) = self.needs
        states = stats[points]
        if states.shape[1] != num_layers + 1:
            raise ValueError(f"{points} holds {states.shape[1]} depths, expected {num_layers + 1}")
        result = analyze_topology(states, **self.analysis_params)
        details = {key: value for key, value in result.items() if key not in ("importance", "params")}
        return LayerScores(result["importance"], details)

    @classmethod
    def report_plots(cls, scores: LayerScores, removed: list[int]) -> dict[str, bytes]:
        """Barcode over depth, EPI heatmap, per-layer consistency with the removed layers marked."""
        from ..topology.plots import barcode_png, consistency_png, epi_png

        details = scores.details
        return {"barcode": barcode_png(details), "epi": epi_png(details), "consistency": consistency_png(details, removed)}

    def select(self, scores: LayerScores, n_remove: int, candidates: list[int]) -> list[int]:
        """topn: the base rule (lowest importance = highest consistency); epsilon: :func:`select_epsilon`."""
        if self.select_rule == "topn":
            return super().select(scores, n_remove, candidates)
        return select_epsilon(scores.details["layer_consistency"], self.epsilon, n_remove, candidates)
