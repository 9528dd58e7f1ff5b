"""From per-depth point clouds to JSON-ready topology scores, and the ε selection rule."""

from __future__ import annotations

import numpy as np
import torch
from loguru import logger

from ..errors import NonFiniteError
from .complexes import knn_flag_complex
from .consistency import consistency, persistence_image, topological_activity
from .zigzag import zigzag_barcode

MIN_POINTS = 3


def check_states(states: torch.Tensor) -> None:
    """Refuse clouds ``[N, L+1, d]`` that are too small or hold NaN/inf (naming the depth and layer)."""
    if states.dim() != 3 or states.shape[1] < 2:
        raise ValueError(f"expected point clouds [N, L+1, d] with L >= 1, got shape {tuple(states.shape)}")
    if states.shape[0] < MIN_POINTS:
        raise ValueError(f"topology needs at least {MIN_POINTS} calibration samples, got {states.shape[0]}")
    for depth in range(states.shape[1]):
        if torch.isfinite(states[:, depth]).all():
            continue
        where = "the embedded prompt h_0, input of decoder layer 0" if depth == 0 else (
            f"h_{depth}, output of decoder layer {depth - 1}")
        raise NonFiniteError(f"topology: non-finite hidden states (NaN or inf) at depth {depth} ({where})")


def effective_k(k: int, num_points: int) -> int:
    """``k`` clamped to ``N - 1`` (with a warning): a point has only ``N - 1`` neighbours."""
    if k < num_points:
        return k
    logger.warning(f"topology: topo_k={k} >= {num_points} samples; using k={num_points - 1} (complete graphs)")
    return num_points - 1


def _json(values: np.ndarray) -> list:
    """Nested lists of floats (or ints) with NaN as ``None``."""
    if values.dtype.kind in "iu":
        return values.tolist()
    return np.where(np.isnan(values), None, values.astype(object)).tolist()


def analyze_topology(
    states: torch.Tensor, *, k: int = 15, alpha: float = 1.0, sigma: float = 0.5, engine: str = "fast"
) -> dict:
    """Scores of every decoder layer from the clouds ``states[:, l]`` of depths ``l = 0..L``.

    Returns JSON-ready lists: ``importance`` (``1 - layer_consistency``, per layer), ``layer_consistency``,
    ``layer_survival`` (per layer), ``depth_consistency`` (+ ``_h0``/``_h1``, ``None`` where undefined),
    ``topological_activity`` (per depth), ``bars_h0``/``bars_h1`` (``[birth, death, last]`` depths), ``epi_h0``/
    ``epi_h1`` (``[birth depth][lifetime]``), and ``params`` (with the k actually used).
    """
    check_states(states)
    num_points, num_depths = states.shape[0], states.shape[1]
    k = effective_k(k, num_points)
    complexes = [knn_flag_complex(states[:, depth], k) for depth in range(num_depths)]
    bars = zigzag_barcode(complexes, engine)
    scores = consistency(bars, num_depths, alpha)
    images = {dim: persistence_image(dim_bars, num_depths, sigma) for dim, dim_bars in bars.items()}
    result = {
        "params": {"k": k, "alpha": alpha, "sigma": sigma, "engine": engine},
        "importance": _json(1.0 - scores["layer_consistency"]),
    }
    result.update({name: _json(values) for name, values in scores.items()})
    result["topological_activity"] = _json(topological_activity(list(images.values())))
    result.update({f"bars_h{dim}": _json(dim_bars) for dim, dim_bars in bars.items()})
    result.update({f"epi_h{dim}": _json(image) for dim, image in images.items()})
    return result


def select_epsilon(layer_consistency: list[float], epsilon: float, n_max: int, candidates: list[int]) -> list[int]:
    """Candidates with consistency >= ``epsilon`` · (max over all layers), at most ``n_max`` of the most
    consistent (ties to the lower layer), sorted."""
    threshold = epsilon * max(layer_consistency)
    passing = [layer for layer in candidates if layer_consistency[layer] >= threshold]
    ranked = sorted(passing, key=lambda layer: (-layer_consistency[layer], layer))
    return sorted(ranked[:n_max])
