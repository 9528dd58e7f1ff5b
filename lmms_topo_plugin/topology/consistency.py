"""Topological consistency of depths and layers from depth bars, and the effective persistence image.

Bars are rows ``[birth, death, last]`` (see :mod:`.zigzag`): alive at depth ``l`` when ``birth <= l <= last``;
their lifetime is ``death - birth``.

* ``survival[l, l']`` (one homology dimension): of the bars alive at ``l``, the fraction alive across the
  whole span between ``l`` and ``l'`` (bars are intervals, so: alive at ``l'`` too). Undefined (NaN) when
  no bar is alive at ``l``.
* Depth consistency ``C_p(l)``: the mean of ``survival[l, l']`` over ``l' != l`` weighted by
  ``|l - l'|^alpha``; ``C(l)`` is the mean over p ∈ {0, 1} of the dimensions with a bar alive at ``l`` (a
  dimension with nothing alive there has nothing to keep and is left out). H0 always has the bar of the
  whole vertex set, alive at every depth, so ``C(l)`` is always defined.
* Layer survival ``s(l)`` of decoder layer ``l`` (``h_l → h_{l+1}``): per dimension, the mean of
  ``survival[l, l+1]`` and ``survival[l+1, l]`` (the defined ones), then the mean over dimensions.
* Layer consistency ``S(l) = s(l) · (C(l) + C(l+1)) / 2``: topology that both crosses this layer and
  persists over depth at its two ends. ``S`` is in [0, 1]; high = prune candidate, importance ``1 - S``.
"""

from __future__ import annotations

import warnings

import numpy as np


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean over ``axis`` ignoring NaN; NaN where every entry is NaN (without a warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def survival_matrix(bars: np.ndarray, num_depths: int) -> np.ndarray:
    """``[D, D]``: fraction of the bars alive at row depth that are alive through column depth."""
    counts = np.zeros((num_depths, num_depths))
    np.add.at(counts, (bars[:, 0], bars[:, 2]), 1.0)
    # spanning[i, j] = number of bars with birth <= i and last >= j
    spanning = np.cumsum(np.cumsum(counts, axis=0)[:, ::-1], axis=1)[:, ::-1]
    low = np.minimum.outer(np.arange(num_depths), np.arange(num_depths))
    high = np.maximum.outer(np.arange(num_depths), np.arange(num_depths))
    alive = np.diag(spanning)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(alive[:, None] > 0, spanning[low, high] / alive[:, None], np.nan)


def depth_consistency(survival: np.ndarray, alpha: float) -> np.ndarray:
    """``C_p(l)``: survival from ``l`` to the other depths, weighted by ``|l - l'|^alpha`` (NaN if undefined)."""
    depths = np.arange(len(survival))
    distance = np.abs(depths[:, None] - depths[None, :]).astype(float)
    weights = np.where(distance > 0, distance**alpha, 0.0)
    return (survival * weights).sum(axis=1) / weights.sum(axis=1)


def layer_survival(survival: np.ndarray) -> np.ndarray:
    """Per layer ``l``: mean of the defined ``survival[l, l+1]`` and ``survival[l+1, l]``."""
    forward = np.diagonal(survival, offset=1)
    backward = np.diagonal(survival, offset=-1)
    return _nanmean(np.stack([forward, backward]), axis=0)


def consistency(bars: dict[int, np.ndarray], num_depths: int, alpha: float) -> dict[str, np.ndarray]:
    """Depth and layer consistency from the depth bars of each dimension (see the module docstring)."""
    per_depth, per_layer = {}, {}
    for dim, dim_bars in bars.items():
        survival = survival_matrix(dim_bars, num_depths)
        per_depth[dim] = depth_consistency(survival, alpha)
        per_layer[dim] = layer_survival(survival)
    depth = _nanmean(np.stack(list(per_depth.values())), axis=0)
    survival = _nanmean(np.stack(list(per_layer.values())), axis=0)
    layer = survival * (depth[:-1] + depth[1:]) / 2
    result = {"depth_consistency": depth, "layer_survival": survival, "layer_consistency": layer}
    result.update({f"depth_consistency_h{dim}": values for dim, values in per_depth.items()})
    return result


def persistence_image(bars: np.ndarray, num_depths: int, sigma: float) -> np.ndarray:
    """EPI ``[D, D]`` on (birth depth, lifetime) ∈ {0..L}²: a Gaussian of width ``sigma`` per bar, weighted
    by its lifetime, centred at (birth, lifetime)."""
    grid = np.arange(num_depths, dtype=float)
    births = bars[:, 0].astype(float)
    lifetimes = (bars[:, 1] - bars[:, 0]).astype(float)
    along_birth = np.exp(-((grid[None, :] - births[:, None]) ** 2) / (2 * sigma**2))
    along_life = np.exp(-((grid[None, :] - lifetimes[:, None]) ** 2) / (2 * sigma**2))
    return (along_birth * lifetimes[:, None]).T @ along_life


def topological_activity(images: list[np.ndarray]) -> np.ndarray:
    """Per birth depth, the sum of the persistence images over lifetime and homology dimension."""
    return sum(image.sum(axis=1) for image in images)
