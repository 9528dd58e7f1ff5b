"""Topological consistency of depths and layers from depth bars, and the effective persistence image.

Bars are rows ``[birth, death, last]`` (see :mod:`.zigzag`): alive at depth ``l`` when ``birth <= l <= last``;
their lifetime is ``death - birth``.

Scores are computed per *group* of bars: one per homology dimension (``h0``, ``h1``), and per dimension and
scale for the multi-scale score (``h0@0.25``; see :mod:`.multiscale`).

* ``survival[l, l']`` (one group): of the bars alive at ``l``, the fraction (optionally weighted by lifetime)
  alive across the whole span between ``l`` and ``l'`` (bars are intervals, so: alive at ``l'`` too).
  Undefined (NaN) when no bar is alive at ``l``, and at excluded (degenerate) depths.
* Depth consistency ``C_g(l)``: the mean of the defined ``survival[l, l']`` over ``l' != l`` weighted by
  ``|l - l'|^alpha``; ``C(l)`` is the mean over the groups where it is defined (a group with nothing alive
  at ``l`` has nothing to keep and is left out). In the ``depth_bars`` score H0 always has the bar of the
  whole vertex set, alive at every depth, so ``C(l)`` is always defined there.
* Destroyed, not undefined: where no (kept) bar of a group is alive at ``l`` but the complex of depth ``l`` has
  classes of that dimension (bars the depth mapping dropped because they live within one depth), every class of
  ``l`` is destroyed by both neighbouring layers: ``survival[l, l'] = 0`` for ``l' != l`` (``classes_at``). The
  ``depth_bars`` score passes these depths; without them a dimension destroyed by a layer was left out of the
  means, so replacing the cloud read as an identity (the whole-vertex-set H0 bar survives everything).
* Layer survival ``s(l)`` of decoder layer ``l`` (``h_l → h_{l+1}``): per group, the mean of the defined
  ``survival[l, l+1]`` and ``survival[l+1, l]``, then the mean over groups.
* Layer consistency ``S(l) = s(l) · (C(l) + C(l+1)) / 2`` (the defined ends): topology that both crosses this
  layer and persists over depth at its two ends. ``S`` is in [0, 1]; high = prune candidate. NaN when no
  group says anything about the layer; the analysis turns that into a warning.
"""

from __future__ import annotations

import warnings

import numpy as np


def nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean over ``axis`` ignoring NaN; NaN where every entry is NaN (without a warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def group_dim(name: str) -> int:
    """The homology dimension of a group of bars: ``h1`` and ``h1@0.25`` are dimension 1."""
    return int(name[1:].split("@")[0])


def bar_weights(bars: np.ndarray, weighting: str) -> np.ndarray:
    """Each bar's weight in the survival fractions: 1 (``none``) or its lifetime in depths (``lifetime``, the
    weight the effective persistence image gives it; a bar alive in one complex only weighs 1)."""
    if weighting == "none":
        return np.ones(len(bars))
    if weighting == "lifetime":
        return np.maximum(bars[:, 1] - bars[:, 0], 1).astype(float)
    raise ValueError(f"unknown bar weighting {weighting!r}; expected none or lifetime")


def classes_at(bars: np.ndarray, num_depths: int) -> np.ndarray:
    """``[D]`` bool: depths ``l`` at which some bar is alive (``birth <= l <= last``): the depths whose complex has a
    class, when ``bars`` are every row of :func:`~.zigzag.depth_rows` (one-depth bars included)."""
    depths = np.arange(num_depths)
    return ((bars[:, 0][:, None] <= depths) & (depths <= bars[:, 2][:, None])).any(axis=0)


def survival_matrix(bars: np.ndarray, num_depths: int, weights: np.ndarray | None = None,
                    classes: np.ndarray | None = None) -> np.ndarray:
    """``[D, D]``: (weighted) fraction of the bars alive at row depth that are alive through column depth.

    A row with no bar alive is undefined (NaN), unless ``classes`` (``[D]`` bool, :func:`classes_at`) says the
    depth has classes all the same: they were all destroyed within that depth, so the row is 0 off the diagonal."""
    counts = np.zeros((num_depths, num_depths))
    np.add.at(counts, (bars[:, 0], bars[:, 2]), 1.0 if weights is None else weights)
    # spanning[i, j] = number of bars with birth <= i and last >= j
    spanning = np.cumsum(np.cumsum(counts, axis=0)[:, ::-1], axis=1)[:, ::-1]
    low = np.minimum.outer(np.arange(num_depths), np.arange(num_depths))
    high = np.maximum.outer(np.arange(num_depths), np.arange(num_depths))
    alive = np.diag(spanning)
    with np.errstate(invalid="ignore", divide="ignore"):
        survival = np.where(alive[:, None] > 0, spanning[low, high] / alive[:, None], np.nan)
    if classes is not None:
        destroyed = np.flatnonzero(classes & (alive <= 0))
        survival[destroyed] = 0.0
        survival[destroyed, destroyed] = 1.0
    return survival


def depth_consistency(survival: np.ndarray, alpha: float) -> np.ndarray:
    """``C_p(l)``: survival from ``l`` to the other depths, weighted by ``|l - l'|^alpha``; NaN entries (excluded
    depths) are left out, and ``C_p(l)`` is NaN when nothing is left."""
    depths = np.arange(len(survival))
    distance = np.abs(depths[:, None] - depths[None, :]).astype(float)
    weights = np.where((distance > 0) & np.isfinite(survival), distance**alpha, 0.0)
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (np.nan_to_num(survival) * weights).sum(axis=1) / total, np.nan)


def layer_survival(survival: np.ndarray) -> np.ndarray:
    """Per layer ``l``: mean of the defined ``survival[l, l+1]`` and ``survival[l+1, l]``."""
    forward = np.diagonal(survival, offset=1)
    backward = np.diagonal(survival, offset=-1)
    return nanmean(np.stack([forward, backward]), axis=0)


def consistency(groups: dict[str, np.ndarray], num_depths: int, alpha: float, *, weighting: str = "none",
                excluded_depths: tuple[int, ...] = (), classes: dict[str, np.ndarray] | None = None
                ) -> dict[str, np.ndarray]:
    """Depth and layer consistency from groups of depth bars (one group per homology dimension, and per scale
    for the multi-scale score; see the module docstring). Depths in ``excluded_depths`` (degenerate clouds) are
    left out of every survival fraction, so the layers next to them have no survival (NaN). ``classes``: per
    group, the depths whose complex has a class of it (:func:`classes_at`); where no bar is alive at such a depth,
    its survival is 0 (destroyed), not undefined."""
    per_depth, per_layer = {}, {}
    for name, group in groups.items():
        survival = survival_matrix(group, num_depths, bar_weights(group, weighting), (classes or {}).get(name))
        survival[list(excluded_depths), :] = np.nan
        survival[:, list(excluded_depths)] = np.nan
        per_depth[name] = depth_consistency(survival, alpha)
        per_layer[name] = layer_survival(survival)
    depth = nanmean(np.stack(list(per_depth.values())), axis=0)
    survival = nanmean(np.stack(list(per_layer.values())), axis=0)
    layer = survival * nanmean(np.stack([depth[:-1], depth[1:]]), axis=0)
    result = {"depth_consistency": depth, "layer_survival": survival, "layer_consistency": layer}
    result.update({f"depth_consistency_{name}": values for name, values in per_depth.items()})
    result.update({f"layer_survival_{name}": values for name, values in per_layer.items()})
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
