"""Per-depth complexes: symmetrised k-nearest-neighbour graph and its flag complex up to dimension 2.

Simplices are vertex-index sets (vertex ``i`` is sample ``i``), stored as sorted integer rows: edges
``[E, 2]`` with ``i < j`` and triangles ``[T, 3]`` with ``i < j < w``, both in lexicographic order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class FlagComplex:
    """The 2-skeleton of a graph's clique complex on ``num_vertices`` vertices."""

    num_vertices: int
    edges: np.ndarray  # [E, 2] int64, i < j
    triangles: np.ndarray  # [T, 3] int64, i < j < w


def squared_distances(points: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances ``[N, N]`` by the Gram trick (float32, centred first)."""
    x = points.float()
    x = x - x.mean(dim=0, keepdim=True)
    norms = torch.linalg.vector_norm(x, dim=1).square()
    return torch.addmm(norms[:, None] + norms[None, :], x, x.T, alpha=-2.0).clamp_(min=0.0)


def knn_indices(points: torch.Tensor, k: int) -> np.ndarray:
    """The ``k`` nearest other points of every point, ``[N, k]`` in index order; ties go to lower indices."""
    return nearest_neighbours(squared_distances(points), k)


def nearest_neighbours(distances: torch.Tensor, k: int) -> np.ndarray:
    """:func:`knn_indices` from the squared distances ``[N, N]`` (not modified)."""
    distances = distances.clone()
    distances.fill_diagonal_(float("inf"))
    kth = torch.topk(distances, k, dim=1, largest=False).values[:, -1:]
    closer = distances < kth
    # of the points tied at the k-th distance, keep the lowest indices that complete k
    tied = distances == kth
    keep = closer | (tied & (tied.cumsum(dim=1) <= k - closer.sum(dim=1, keepdim=True)))
    return keep.nonzero()[:, 1].reshape(-1, k).numpy().astype(np.int64)


def symmetrised_edges(neighbours: np.ndarray) -> np.ndarray:
    """Undirected edges ``{i, j}`` with ``j`` among the neighbours of ``i`` or ``i`` among those of ``j``."""
    n, k = neighbours.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    cols = neighbours.reshape(-1)
    low, high = np.minimum(rows, cols), np.maximum(rows, cols)
    keys = np.unique(low * n + high)
    return np.stack([keys // n, keys % n], axis=1)


def triangles(edges: np.ndarray, num_vertices: int) -> np.ndarray:
    """All 3-cliques ``i < j < w`` of the graph with the given sorted edges."""
    if len(edges) == 0:
        return np.empty((0, 3), dtype=np.int64)
    adjacency = np.zeros((num_vertices, num_vertices), dtype=bool)
    adjacency[edges[:, 0], edges[:, 1]] = True
    # upper neighbours of j as a CSR slice: rows of ``edges`` whose first vertex is j
    starts = np.searchsorted(edges[:, 0], np.arange(num_vertices + 1))
    i, j = edges[:, 0], edges[:, 1]
    counts = starts[j + 1] - starts[j]
    first = np.repeat(i, counts)
    second = np.repeat(j, counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    third = edges[np.repeat(starts[j], counts) + offsets, 1]
    closed = adjacency[first, third]
    return np.stack([first[closed], second[closed], third[closed]], axis=1)


def knn_flag_complex(points: torch.Tensor, k: int) -> FlagComplex:
    """Flag complex (to dimension 2) of the symmetrised ``k``-NN graph of the rows of ``points``."""
    n = points.shape[0]
    edges = symmetrised_edges(knn_indices(points, k))
    return FlagComplex(n, edges, triangles(edges, n))
