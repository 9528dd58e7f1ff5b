"""From per-depth point clouds to JSON-ready topology scores, and the ε selection rule."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from loguru import logger

from lmms_topo_plugin.topology.clouds import DEFAULT_K, check_states, effective_k
from lmms_topo_plugin.topology.complexes import knn_flag_complex
from lmms_topo_plugin.topology.consistency import (
    classes_at, consistency, group_dim, persistence_image, topological_activity,
)
from lmms_topo_plugin.topology.diagnostics import depth_health, diagnostics
from lmms_topo_plugin.topology.multiscale import DEFAULT_SCALES, multiscale_bars
from lmms_topo_plugin.topology.engines import DEFAULT_ENGINE, raw_barcode
from lmms_topo_plugin.topology.zigzag import bars_to_depths, build_zigzag, depth_rows

def _json(values: np.ndarray) -> list:
    """Nested lists of floats (or ints) with NaN as ``None``."""
    if values.dtype.kind in "iu":
        return values.tolist()
    return np.where(np.isnan(values), None, values.astype(object)).tolist()


SCORES = ("depth_bars", "multiscale")


def analyze_topology(
    states: torch.Tensor, *, k: int = DEFAULT_K, alpha: float = 1.0, sigma: float = 0.5, engine: str = DEFAULT_ENGINE,
    score: str = "depth_bars", scales: Sequence[float] = DEFAULT_SCALES, weighting: str = "none",
) -> dict:
    """Scores of every decoder layer from the clouds ``states[:, l]`` of depths ``l = 0..L``.

    ``score``: ``depth_bars`` (one kNN complex per depth, bars mapped to depths, one-depth bars dropped: the
    first implementation; a dimension whose classes at a depth all live within it has survival 0 there, see
    :mod:`.consistency`) or ``multiscale`` (:mod:`.multiscale`: complexes at ``scales``, reduced H0, every class
    of every complex kept, degenerate depths left out). ``weighting``: ``lifetime`` weights each bar by its
    lifetime in the survival fractions.

    Returns JSON-ready lists: ``importance`` (``1 - layer_consistency``, per layer), ``layer_consistency``,
    ``layer_survival`` (per layer), ``depth_consistency`` (+ one per bar group, ``None`` where undefined),
    ``topological_activity`` (per depth), ``bars_h0``/``bars_h1`` (``[birth, death, last]`` depths, all scales),
    ``epi_h0``/``epi_h1`` (``[birth depth][lifetime]``), ``diagnostics`` and ``params`` (with the k used).
    """
    check_states(states)
    if score not in SCORES:
        raise ValueError(f"unknown topology score {score!r}; expected one of {', '.join(SCORES)}")
    num_points, num_depths = states.shape[0], states.shape[1]
    k = effective_k(k, num_points)
    health = depth_health(states)
    if score == "multiscale":
        groups, raw_counts = multiscale_bars(states, k, scales, engine)
        excluded = tuple(depth for depth, bad in enumerate(health["degenerate"]) if bad)
        classes = None  # every class of every complex is a bar already
    else:
        complexes = [knn_flag_complex(states[:, depth], k) for depth in range(num_depths)]
        raw = raw_barcode(build_zigzag(complexes), engine)
        raw_counts = {dim: len(dim_raw) for dim, dim_raw in raw.items()}
        groups = {f"h{dim}": bars_to_depths(dim_raw, num_depths) for dim, dim_raw in raw.items()}
        # the one-depth bars dropped above still say which depths have classes: a dimension with classes at a
        # depth but no bar alive there was destroyed across it (survival 0), not silent
        classes = {f"h{dim}": classes_at(depth_rows(dim_raw, num_depths), num_depths) for dim, dim_raw in raw.items()}
        excluded = ()
    scores = consistency(groups, num_depths, alpha, weighting=weighting, excluded_depths=excluded, classes=classes)
    bars = {dim: np.concatenate([b for name, b in groups.items() if group_dim(name) == dim]) for dim in (0, 1)}
    report = diagnostics(states, bars, raw_counts, scores, list(groups), health)
    for warning in report["warnings"]:
        logger.warning(f"topology: {warning}")
    layer = np.nan_to_num(scores["layer_consistency"], nan=0.0)
    images = {dim: persistence_image(dim_bars, num_depths, sigma) for dim, dim_bars in bars.items()}
    params = {"score": score, "num_points": num_points, "k": k, "alpha": alpha, "sigma": sigma, "engine": engine,
              "weighting": weighting}
    if score == "multiscale":
        params["scales"] = list(scales)
    result = {"params": params, "importance": _json(1.0 - layer)}
    result.update({name: _json(values) for name, values in scores.items()})
    result["layer_consistency"] = _json(layer)
    result["topological_activity"] = _json(topological_activity(list(images.values())))
    result.update({f"bars_h{dim}": _json(dim_bars) for dim, dim_bars in bars.items()})
    result.update({f"epi_h{dim}": _json(image) for dim, image in images.items()})
    result["diagnostics"] = report
    return result


def select_epsilon(layer_consistency: list[float], epsilon: float, n_max: int, candidates: list[int]) -> list[int]:
    """Candidates with consistency >= ``epsilon`` · (max over all layers), at most ``n_max`` of the most
    consistent (ties to the lower layer), sorted."""
    threshold = epsilon * max(layer_consistency)
    passing = [layer for layer in candidates if layer_consistency[layer] >= threshold]
    ranked = sorted(passing, key=lambda layer: (-layer_consistency[layer], layer))
    return sorted(ranked[:n_max])
