"""The per-depth point clouds every topology score starts from: their checks, and ``k`` clamped to ``N - 1``."""

from __future__ import annotations

import torch
from loguru import logger

from lmms_topo_plugin.errors import NonFiniteError

MIN_POINTS = 3
# neighbours per point: chosen on the bundled benchmark's dev split among 5 / 15 / 25 (15 is the paper's best;
# bench/bench_topology_ablations.py, README "Topology ablations")
DEFAULT_K = 5


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
