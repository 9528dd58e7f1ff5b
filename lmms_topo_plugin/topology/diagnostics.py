"""What a topology result rests on: per homology dimension, the bars before and after the depth mapping, their
lifetimes and their share of the score; per depth, whether the cloud is degenerate; and warnings in words.

Two measured traps motivate it (issue 13): with the ``depth_bars`` score H0 has one bar over every depth, so its
survival is 1 at every layer and the ranking comes from H1 alone; and every calibration prompt ends with the
same template token, so the last-token cloud at depth 0 is one point and its complex is decided by tie-breaking.
"""

from __future__ import annotations

import numpy as np
import torch

from lmms_topo_plugin.topology.consistency import group_dim, nanmean

MIN_RANK = 2
RANK_CAP = 8  # ranks are measured up to this: enough to tell a degenerate cloud, at O(N·d) per depth


def capped_rank(cloud: torch.Tensor, generator: torch.Generator) -> int:
    """``min(rank, RANK_CAP)`` of the centred cloud ``[N, d]`` (float64): the rank of its projection on
    ``RANK_CAP`` random Gaussian directions, equal to the capped rank with probability 1."""
    centred = cloud - cloud.mean(dim=0)
    directions = torch.randn(cloud.shape[1], RANK_CAP, generator=generator, dtype=torch.float64)
    return int(torch.linalg.matrix_rank(centred @ directions))


def depth_health(states: torch.Tensor) -> dict[str, list]:
    """Per depth: distinct points, rank of the centred cloud (capped at ``RANK_CAP``), and ``degenerate`` (fewer
    than 3 distinct points or rank < 2: a cloud whose kNN complex is decided by ties, not by shape)."""
    distinct, ranks = [], []
    generator = torch.Generator().manual_seed(0)
    for depth in range(states.shape[1]):
        cloud = states[:, depth].double()
        distinct.append(int(torch.unique(cloud, dim=0).shape[0]))
        ranks.append(capped_rank(cloud, generator))
    degenerate = [count < 3 or rank < MIN_RANK for count, rank in zip(distinct, ranks)]
    return {"distinct_points": distinct, "rank": ranks, "degenerate": degenerate}


def degenerate_warning(depth: int, health: dict, num_points: int) -> str:
    where = "h_0, input of decoder layer 0" if depth == 0 else f"h_{depth}, output of decoder layer {depth - 1}"
    shape = (f"all {num_points} points coincide" if health["distinct_points"][depth] == 1 else
             f"{health['distinct_points'][depth]} distinct points, rank {health['rank'][depth]}")
    return f"depth {depth} ({where}) is degenerate: {shape}"


def score_shares(scores: dict[str, np.ndarray], groups: list[str]) -> dict[int, float | None]:
    """Each dimension's share of the summed layer consistency: at layer ``l`` a group contributes its term of
    the mean survival ``s(l)`` times the depth factor of ``S(l)``; ``None`` when the summed score is 0."""
    survival = np.stack([scores[f"layer_survival_{group}"] for group in groups])
    defined = np.isfinite(survival)
    depth = scores["depth_consistency"]
    factor = nanmean(np.stack([depth[:-1], depth[1:]]), axis=0)
    terms = np.nan_to_num(survival) / np.maximum(defined.sum(axis=0), 1) * np.nan_to_num(factor)
    total = terms.sum()
    dims = sorted({group_dim(group) for group in groups})
    if total <= 0:
        return {dim: None for dim in dims}
    return {dim: float(sum(terms[i].sum() for i, g in enumerate(groups) if group_dim(g) == dim) / total)
            for dim in dims}


def dimension_summary(dim: int, raw_bars: int, bars: np.ndarray, scores: dict, groups: list[str],
                      num_depths: int) -> dict:
    """Bar counts, lifetime histogram (index ``i`` = lifetime ``i + 1`` depths) and whether the dimension's layer
    survival is constant (it then cannot rank layers)."""
    lifetimes = bars[:, 1] - bars[:, 0]
    survival = np.stack([scores[f"layer_survival_{group}"] for group in groups if group_dim(group) == dim])
    per_layer = nanmean(survival, axis=0)
    finite = per_layer[np.isfinite(per_layer)]
    return {
        "raw_bars": int(raw_bars),
        "kept_bars": int(len(bars)),
        "one_depth_bars": int((lifetimes == 0).sum()),
        "lifetime_counts": np.bincount(lifetimes[lifetimes > 0] - 1, minlength=num_depths - 1).tolist(),
        "constant": bool(len(finite) == 0 or np.ptp(finite) < 1e-9),
        "layer_survival": [float(v) if np.isfinite(v) else None for v in per_layer],
    }


def diagnostics(states: torch.Tensor, bars: dict[int, np.ndarray], raw_counts: dict[int, int], scores: dict,
                groups: list[str], health: dict) -> dict:
    """The ``diagnostics`` block of a topology result (JSON-ready), with its warnings."""
    num_points, num_depths = states.shape[0], states.shape[1]
    shares = score_shares(scores, groups)
    dims = {f"h{dim}": {**dimension_summary(dim, raw_counts[dim], bars[dim], scores, groups, num_depths),
                        "score_share": shares[dim]} for dim in sorted(bars)}
    warnings = [degenerate_warning(depth, health, num_points)
                for depth, bad in enumerate(health["degenerate"]) if bad]
    for name, summary in dims.items():
        if summary["constant"]:
            values = [v for v in summary["layer_survival"] if v is not None]
            what = f"is {values[0]:.3f} at every layer" if values else "is undefined at every layer (no bars)"
            warnings.append(f"{name.upper()} carries no signal: its layer survival {what}")
    undefined = [layer for layer, value in enumerate(scores["layer_consistency"]) if not np.isfinite(value)]
    if undefined:
        warnings.append(f"layers {undefined}: no bar at either end (or a degenerate end); scored as consistency 0 "
                        "(kept)")
    return {"dims": dims, "depths": health, "warnings": warnings}
