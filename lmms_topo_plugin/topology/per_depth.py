"""Per-depth persistence: the ablation baseline of the zigzag method (ordinary PH of each depth on its own).

For every depth ``l = 0..L`` the cloud ``states[:, l]`` gets a Vietoris–Rips-type filtration (gudhi, Z/2
coefficients) and its H0/H1 persistence diagram; decoder layer ``l`` (``h_l → h_{l+1}``) is scored by the
distance between the diagrams of depths ``l`` and ``l + 1``. ``depth_diagrams`` → ``layer_distances`` →
``per_depth_importance`` (JSON-ready, what a scorer calls).

Complexes. ``"knn"`` (default) filters the flag complex of the symmetrised ``k``-NN graph — the very complex
``K_l`` the zigzag method uses (same ``complexes.knn_indices``/``symmetrised_edges``, same ``k``) — by edge
length (vertices at 0, an edge at its length, a triangle at its longest edge), so the ablation changes only
"zigzag across depths" into "per-depth diagrams compared by a distance". ``"rips"`` is the textbook
Vietoris–Rips filtration truncated at ``max_edge_length`` = the ``max_edge_quantile`` quantile of the
normalised pairwise distances (full Rips to dimension 2 on 512 points is far too big).

Scale. Hidden-state norms grow with depth, so raw diagrams grow with depth too and consecutive-depth distances
would mostly measure that growth. ``scale="median"`` divides each depth's distances by its median pairwise
distance (robust to the few huge-norm outlier samples LLM states have; a rotation plus uniform scaling then
leaves the diagram unchanged). A depth whose median is 0 (more than half the pairs coincide) uses the mean
instead, and one whose points all coincide (e.g. ``h_0`` of the last token when every prompt ends alike) is
left unscaled: its diagram is a single essential H0 class anyway.

Distances. Bottleneck (gudhi) or Wasserstein (hera; POT is not needed) per homology dimension, averaged over
the dimensions; essential classes are capped at one common value by default (see ``layer_distances``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from lmms_topo_plugin.topology.clouds import DEFAULT_K, check_states, effective_k
from lmms_topo_plugin.topology.complexes import knn_indices, squared_distances, symmetrised_edges

if TYPE_CHECKING:
    import gudhi

COMPLEXES = ("knn", "rips")
SCALES = ("median", "none")
METRICS = ("bottleneck", "wasserstein")
ESSENTIAL = ("drop", "cap")
FIELD = 2
MAX_EDGE_QUANTILE = 0.2


def _check_dims(dims: Sequence[int]) -> tuple[int, ...]:
    dims = tuple(int(dim) for dim in dims)
    if not dims or len(set(dims)) != len(dims) or min(dims) < 0:
        raise ValueError(f"dims must be distinct non-negative homology dimensions, got {dims}")
    return dims


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def normalised_distances(points: torch.Tensor, scale: str = "median") -> tuple[np.ndarray, float]:
    """Pairwise distances ``[N, N]`` (float64, symmetric, zero diagonal) divided by the depth's scale, and
    that scale (see the module docstring)."""
    n = points.shape[0]
    upper = np.triu(squared_distances(points).numpy().astype(np.float64), 1)
    distances = np.sqrt(upper + upper.T)
    factor = 1.0
    if scale == "median":
        pairs = distances[np.triu_indices(n, 1)]
        for candidate in (np.median(pairs), pairs.mean()):
            if candidate > 0:
                factor = float(candidate)
                break
    return distances / factor, factor


def _knn_tree(points: torch.Tensor, distances: np.ndarray, k: int, max_dimension: int) -> gudhi.SimplexTree:
    """The symmetrised ``k``-NN flag complex filtered by edge length (vertices at 0)."""
    n = points.shape[0]
    edges = symmetrised_edges(knn_indices(points, k))
    import gudhi  # imported on use: the plugin's import stays light

    tree = gudhi.SimplexTree()
    tree.insert_batch(np.arange(n, dtype=np.int64)[None, :], np.zeros(n))
    tree.insert_batch(np.ascontiguousarray(edges.T), distances[edges[:, 0], edges[:, 1]])
    tree.expansion(max_dimension)
    return tree


def _diagrams(tree: gudhi.SimplexTree, dims: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Z/2 persistence of ``tree``: per dimension ``[P, 2]`` rows ``[birth, death]`` sorted, ``inf`` if
    essential; zero-length bars are dropped (gudhi's ``min_persistence=0``)."""
    tree.compute_persistence(homology_coeff_field=FIELD, persistence_dim_max=True)
    result = {}
    for dim in dims:
        bars = np.asarray(tree.persistence_intervals_in_dimension(dim), dtype=np.float64).reshape(-1, 2)
        result[dim] = bars[np.lexsort((bars[:, 1], bars[:, 0]))]
    return result


def _depth_persistence(
    points: torch.Tensor, *, complex: str, k: int, max_edge_quantile: float, scale: str, dims: tuple[int, ...]
) -> tuple[dict[int, np.ndarray], dict]:
    """Diagrams of one depth's cloud, and its scale, Rips threshold (``None`` for knn) and complex size."""
    distances, factor = normalised_distances(points, scale)
    max_dimension = max(dims) + 1
    threshold = None
    if complex == "knn":
        tree = _knn_tree(points, distances, k, max_dimension)
    else:
        # exact duplicates only add zero-length H0 bars (dropped) but would fill the complex with 0-simplices
        distinct = distances[np.ix_(*2 * [~np.triu(distances == 0, 1).any(axis=0)])]
        pairs = distinct[np.triu_indices(len(distinct), 1)]
        threshold = float(np.quantile(pairs, max_edge_quantile)) if pairs.size else 0.0
        import gudhi

        rips = gudhi.RipsComplex(distance_matrix=distinct, max_edge_length=threshold)
        tree = rips.create_simplex_tree(max_dimension=max_dimension)
    sizes = [int(size) for size in tree.num_simplices_by_dimension()]
    info = {"scale": factor, "threshold": threshold, "num_simplices": sizes}
    return _diagrams(tree, dims), info


def _all_depths(states, *, complex, k, max_edge_quantile, scale, dims):
    check_states(states)
    _choice("complex", complex, COMPLEXES)
    _choice("scale", scale, SCALES)
    dims = _check_dims(dims)
    if not 0.0 < max_edge_quantile <= 1.0:
        raise ValueError(f"max_edge_quantile must lie in (0, 1], got {max_edge_quantile}")
    if complex == "knn":
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        k = effective_k(k, states.shape[0])
    outputs = [
        _depth_persistence(states[:, depth], complex=complex, k=k, max_edge_quantile=max_edge_quantile,
                           scale=scale, dims=dims)
        for depth in range(states.shape[1])
    ]
    return [diagram for diagram, _ in outputs], [info for _, info in outputs], k


def depth_diagrams(
    states: torch.Tensor,
    *,
    complex: str = "knn",
    k: int = DEFAULT_K,
    max_edge_quantile: float = MAX_EDGE_QUANTILE,
    scale: str = "median",
    dims: Sequence[int] = (0, 1),
) -> list[dict[int, np.ndarray]]:
    """Persistence diagram of every depth ``l = 0..L`` of ``states [N, L+1, d]``: ``{dim: [P, 2]}`` with rows
    ``[birth, death]`` (``inf`` for essential classes) in normalised distance units.

    ``complex="knn"`` uses the symmetrised ``k``-NN flag complex (``k`` clamped to ``N - 1``);
    ``complex="rips"`` the Rips complex up to the ``max_edge_quantile`` quantile of the pairwise distances.
    """
    diagrams, _, _ = _all_depths(states, complex=complex, k=k, max_edge_quantile=max_edge_quantile, scale=scale,
                                 dims=dims)
    return diagrams


def _prepared(diagrams: list[dict[int, np.ndarray]], dims: tuple[int, ...], essential: str) -> list[list]:
    """Per depth and dim, the diagram as the distance sees it: essential points dropped, or their death
    capped at the largest finite value of all the diagrams; points on the diagonal removed."""
    finite = np.concatenate([np.empty(0)] + [d[dim][np.isfinite(d[dim])] for d in diagrams for dim in dims])
    cap = float(finite.max()) if finite.size else 0.0
    prepared = []
    for diagram in diagrams:
        row = []
        for dim in dims:
            bars = diagram[dim]
            if essential == "drop":
                bars = bars[np.isfinite(bars[:, 1])]
            else:
                bars = np.where(np.isinf(bars), cap, bars)
            row.append(np.ascontiguousarray(bars[bars[:, 1] > bars[:, 0]]))
        prepared.append(row)
    return prepared


def diagram_distance(a: np.ndarray, b: np.ndarray, metric: str = "bottleneck", *, order: float = 1.0,
                     delta: float = 0.01) -> float:
    """Bottleneck (gudhi, near-exact) or ``order``-Wasserstein (hera, L∞ ground metric, relative error
    ``delta``) distance of two diagrams; exactly 0 for equal ones."""
    import gudhi
    import gudhi.hera

    if a.shape == b.shape and np.array_equal(a, b):
        return 0.0
    if metric == "bottleneck":
        return float(gudhi.bottleneck_distance(a, b))
    return float(gudhi.hera.wasserstein_distance(a, b, order=order, internal_p=math.inf, delta=delta))


def layer_distances(
    diagrams: list[dict[int, np.ndarray]],
    metric: str = "bottleneck",
    dims: Sequence[int] = (0, 1),
    *,
    essential: str = "cap",
    order: float = 1.0,
    delta: float = 0.01,
) -> dict[str, np.ndarray]:
    """Distance between the diagrams of depths ``l`` and ``l + 1`` for every decoder layer ``l``.

    Returns ``{"h<dim>": [L], ..., "mean": [L]}`` (mean over ``dims``). Essential points: ``"cap"`` (default)
    sets every ``inf`` death to one cap common to all depths (the largest finite value of all the diagrams),
    so essential classes count like long bars instead of making distances infinite: the single H0 class
    every depth has matches itself at cost 0 (as good as dropped), while the others — for ``knn`` the cycles
    the k-NN complex never fills, i.e. the homology the zigzag tracks; for ``rips`` the classes still alive
    at the truncation — count. ``"drop"`` compares the finite parts only.
    """
    _choice("metric", metric, METRICS)
    _choice("essential", essential, ESSENTIAL)
    dims = _check_dims(dims)
    if len(diagrams) < 2:
        raise ValueError(f"need diagrams of at least 2 depths, got {len(diagrams)}")
    missing = sorted({dim for diagram in diagrams for dim in dims if dim not in diagram})
    if missing:
        raise ValueError(f"diagrams lack homology dimensions {missing}")
    prepared = _prepared(diagrams, dims, essential)
    values = np.array([
        [diagram_distance(before, after, metric, order=order, delta=delta) for before, after in zip(lower, upper)]
        for lower, upper in zip(prepared[:-1], prepared[1:])
    ]).reshape(len(diagrams) - 1, len(dims))
    result = {f"h{dim}": values[:, column] for column, dim in enumerate(dims)}
    result["mean"] = values.mean(axis=1)
    return result


def _json(values) -> list:
    """Floats with NaN/inf as ``None``."""
    return [float(value) if math.isfinite(value) else None for value in np.asarray(values, dtype=float).tolist()]


def per_depth_importance(
    states: torch.Tensor,
    *,
    k: int = DEFAULT_K,
    metric: str = "bottleneck",
    complex: str = "knn",
    max_edge_quantile: float = MAX_EDGE_QUANTILE,
    scale: str = "median",
    dims: Sequence[int] = (0, 1),
    essential: str = "cap",
    order: float = 1.0,
) -> dict:
    """Layer scores from per-depth persistence, JSON-ready.

    ``importance`` (per decoder layer) is the mean-over-dims distance between the diagrams before and after
    the layer divided by its largest value (a big change = important, kept; ~0 = removable). Also
    ``layer_distance`` (unnormalised mean) and ``layer_distance_h<dim>``; per depth ``diagram_points_h<dim>``
    (finite points), ``essential_h<dim>`` (infinite ones), ``depth_scale``, ``num_simplices`` (by dimension)
    and ``edge_threshold`` (rips only); ``params`` (with the k actually used).
    """
    _choice("metric", metric, METRICS)
    _choice("essential", essential, ESSENTIAL)
    dims = _check_dims(dims)
    diagrams, infos, k_used = _all_depths(states, complex=complex, k=k, max_edge_quantile=max_edge_quantile,
                                          scale=scale, dims=dims)
    distances = layer_distances(diagrams, metric, dims, essential=essential, order=order)
    mean = distances["mean"]
    top = np.nanmax(mean) if np.isfinite(mean).any() else np.nan
    importance = mean / top if top > 0 else np.where(np.isnan(mean), np.nan, 0.0)
    result = {
        "params": {"method": "per_depth", "complex": complex, "k": k_used if complex == "knn" else None,
                   "max_edge_quantile": max_edge_quantile if complex == "rips" else None, "scale": scale,
                   "metric": metric, "order": order if metric == "wasserstein" else None, "dims": list(dims),
                   "essential": essential, "homology_coeff_field": FIELD},
        "importance": _json(importance),
        "layer_distance": _json(mean),
    }
    for dim in dims:
        result[f"layer_distance_h{dim}"] = _json(distances[f"h{dim}"])
    for dim in dims:
        result[f"diagram_points_h{dim}"] = [int(np.isfinite(d[dim][:, 1]).sum()) for d in diagrams]
        result[f"essential_h{dim}"] = [int(np.isinf(d[dim][:, 1]).sum()) for d in diagrams]
    result["depth_scale"] = _json([info["scale"] for info in infos])
    result["num_simplices"] = [info["num_simplices"] for info in infos]
    if complex == "rips":
        result["edge_threshold"] = _json([info["threshold"] for info in infos])
    return result
