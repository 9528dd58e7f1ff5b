"""TopoVLM topology-aware layer pruning: remove the layers across which zigzag topology is most consistent.

Decoder layer ``l`` maps ``h_l`` to ``h_{l+1}``; its score compares the point clouds of depths ``l`` and
``l+1`` (see :mod:`lmms_topo_plugin.topology.consistency` for the exact formulas and
:mod:`lmms_topo_plugin.topology.zigzag` for the depth conventions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmms_topo_plugin.config.params import MethodConfig, option
from lmms_topo_plugin.scorers.registry import register_layer_method
from lmms_topo_plugin.topology.analysis import SCORES, analyze_topology, select_epsilon
from lmms_topo_plugin.topology.clouds import DEFAULT_K, MIN_POINTS
from lmms_topo_plugin.topology.multiscale import DEFAULT_SCALES
from lmms_topo_plugin.topology.per_depth import METRICS
from lmms_topo_plugin.topology.engines import DEFAULT_ENGINE, DIONYSUS_ENGINES, ENGINES, require_dionysus
from lmms_topo_plugin.scorers.base import LayerScorer, LayerScores

DEFAULT_SCALES_TEXT = ":".join(f"{s:g}" for s in DEFAULT_SCALES)


def parse_scales(text: str) -> tuple[float, ...]:
    """``"0.1:0.25:0.5:1"`` → ``(0.1, 0.25, 0.5, 1.0)``."""
    return tuple(float(part) for part in text.split(":"))


def check_scales(text: str) -> str | None:
    try:
        scales = parse_scales(text)
    except ValueError:
        return "expected quantiles separated by ':' (e.g. 0.1:0.25:0.5:1)"
    if not all(0 < s <= 1 for s in scales) or list(scales) != sorted(set(scales)):
        return "expected increasing quantiles in (0, 1] separated by ':'"
    return None


@dataclass(frozen=True)
class TopologyConfig(MethodConfig):
    """``method=topology``'s own parameters."""

    topo_score: str = option(
        str, "depth_bars",
        "depth_bars: one kNN complex per depth, bars mapped to depths (the first implementation); multiscale: "
        "complexes at several neighbourhood scales, reduced homology, every class of every complex kept, degenerate "
        "depths left out; per_depth: no zigzag, each depth's own persistence diagram compared with the next "
        "depth's (the paper's ablation)", choices=(*SCORES, "per_depth"))
    topo_distance: str = option(str, "bottleneck", "topo_score=per_depth: distance between consecutive depths' "
                                "diagrams", choices=METRICS)
    topo_scales: str = option(str, DEFAULT_SCALES_TEXT, "topo_score=multiscale: quantiles of each depth's kNN edge "
                              "lengths at which its complex is cut, ':'-separated (1 = the whole kNN complex)",
                              check=check_scales)
    topo_weighting: str = option(str, "none", "weight of a bar in the survival fractions: none, or lifetime (the "
                                 "weight of the effective persistence image)", choices=("none", "lifetime"))
    topo_k: int = option(int, DEFAULT_K, "neighbours per point in the symmetrised kNN graph (clamped to N-1)", low=1)
    topo_alpha: float = option(float, 1.0, "weight |l - l'|^alpha of depth pairs in the consistency score",
                               low=0.0, high=4.0)
    topo_sigma: float = option(float, 0.5, "width, in layers, of each bar's Gaussian in the persistence image",
                               check=lambda v: None if v > 0 else "expected a float > 0")
    topo_select: str = option(str, "topn", "topn: the n most consistent layers; epsilon: those with consistency >= "
                              "topo_epsilon * max, at most n", choices=("topn", "epsilon"))
    topo_epsilon: float = option(float, 0.9, "threshold of topo_select=epsilon, as a fraction of the max "
                                 "consistency", check=lambda v: None if 0 < v <= 1 else "expected a float in (0, 1]")
    topo_points: str = option(str, "last_token", "point per calibration sample: the last prompt token's state, the "
                              "mean of its visual tokens' states (every calibration prompt needs an image), or the "
                              "mean of all its prompt tokens' states", choices=("last_token", "visual_mean",
                                                                                "prompt_mean"))
    topo_engine: str = option(str, DEFAULT_ENGINE, "zigzag barcode engine: quiver (numpy, no dionysus), or "
                              "dionysus' fast (cone) or classic (quadratic; small N): all give the same bars",
                              choices=ENGINES)


@register_layer_method(
    "topology",
    config_class=TopologyConfig,
    description="TopoVLM: zigzag persistent homology (H0, H1) of kNN flag complexes of the last-token (or "
    "visual-mean) cloud at every depth; remove the layers whose topology is most consistent",
)
class TopologyScorer(LayerScorer):
    needs = ("last_token",)
    min_samples = MIN_POINTS
    version = 3  # 2: scores carry diagnostics; 3: depth_bars counts a dimension destroyed across a layer as 0
    default_samples = 256  # the paper uses 512; 256 fits the bundled calib split (320) and costs ~1 s to score

    def __init__(self, config: TopologyConfig, *, seed: int = 0) -> None:
        super().__init__(config, seed=seed)
        self.needs = (config.topo_points,)
        if config.topo_score == "per_depth":
            self.analysis_params = {"k": config.topo_k, "metric": config.topo_distance}
        else:
            if config.topo_engine in DIONYSUS_ENGINES:
                require_dionysus()
            self.analysis_params = {"k": config.topo_k, "alpha": config.topo_alpha, "sigma": config.topo_sigma,
                                    "engine": config.topo_engine, "score": config.topo_score,
                                    "scales": parse_scales(config.topo_scales), "weighting": config.topo_weighting}
        self.select_rule = config.topo_select
        self.epsilon = config.topo_epsilon

    def score(self, stats: dict[str, torch.Tensor], num_layers: int) -> LayerScores:
        (points,) = self.needs
        states = stats[points]
        if states.shape[1] != num_layers + 1:
            raise ValueError(f"{points} holds {states.shape[1]} depths, expected {num_layers + 1}")
        if "metric" in self.analysis_params:
            from lmms_topo_plugin.topology.per_depth import per_depth_importance

            result = per_depth_importance(states, **self.analysis_params)
            result["layer_consistency"] = [1.0 - value for value in result["importance"]]
        else:
            result = analyze_topology(states, **self.analysis_params)
        details = {key: value for key, value in result.items() if key != "importance"}
        return LayerScores(result["importance"], details)

    @classmethod
    def report_plots(cls, scores: LayerScores, removed: list[int], *, protected: tuple[int, ...] | list[int] = ()
                     ) -> dict[str, bytes]:
        """Zigzag scores: barcode over depth, EPI heatmap, per-layer consistency with the removed layers marked,
        and the diagnostics; per-depth scores: the diagram distance across each layer."""
        from lmms_topo_plugin.topology import plots

        details = scores.details
        if "layer_distance" in details:
            return {"distances": plots.layer_distance_png(details, removed, protected)}
        figures = {"barcode": plots.barcode_png(details), "epi": plots.epi_png(details),
                   "consistency": plots.consistency_png(details, removed, protected)}
        if "diagnostics" in details:
            figures["diagnostics"] = plots.diagnostics_png(details)
        return figures

    def signal_hint(self, scores: LayerScores) -> str:
        """Constant topology scores come from too few points for loops to form (a (nearly) complete kNN graph fills
        every loop) or from a kNN graph too sparse to hold loops."""
        params = scores.details.get("params", {})
        points, k = params.get("num_points"), params.get("k")
        if points and k and k >= points - 1:  # topo_k was clamped: only more samples change the complexes
            return (f"raise calib_limit ({points} samples were scored, so topo_k was clamped to N-1 = {k} and every "
                    "kNN graph was complete), then topo_k if need be")
        if points and k and 2 * k >= points - 1:  # at least half of the others are neighbours: few loops stay open
            return (f"raise calib_limit ({points} samples were scored; with topo_k={k} of {points - 1} possible "
                    "neighbours the kNN graphs are nearly complete)")
        samples = f" ({points} samples were scored)" if points else ""
        neighbours = f" ({k} neighbours per point were used)" if k else ""
        return f"raise calib_limit{samples} or topo_k{neighbours}"

    def select(self, scores: LayerScores, n_remove: int, candidates: list[int]) -> list[int]:
        """topn: the base rule (lowest importance = highest consistency); epsilon: :func:`select_epsilon`."""
        if self.select_rule == "topn":
            return super().select(scores, n_remove, candidates)
        return select_epsilon(scores.details["layer_consistency"], self.epsilon, n_remove, candidates)
