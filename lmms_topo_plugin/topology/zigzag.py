"""The intersection zigzag of per-depth complexes (the input of every barcode engine, :mod:`.engines`) and its
bars mapped to depths.

Positions. Depths ``0..L`` give the zigzag ``K_0 ⊇ K_0∩K_1 ⊆ K_1 ⊇ … ⊆ K_L`` on positions ``0..2L``:
position ``2l`` is ``K_l``, position ``2l+1`` is ``K_l ∩ K_{l+1}``. Every change happens at a half-integer
time: the simplices of ``K_l`` missing from ``K_{l+1}`` are removed at ``2l + 0.5``, those of ``K_{l+1}``
missing from ``K_l`` are added at ``2l + 1.5``, and ``K_0`` is built at ``-0.5``. As no position falls on an
operation time, a bar from time ``b`` to time ``d`` is alive exactly on positions ``b + 0.5 .. d - 0.5``
(``2L`` when it never dies), whatever open or closed ends the engine reports.

Depths. Position ``i`` maps to depth ``i // 2 + i % 2``, so depth ``l`` holds ``K_{l-1} ∩ K_l`` and ``K_l``.
A bar alive on positions ``p..q`` has birth depth ``depth(p)`` and death depth ``depth(q)``; bars with
``depth(p) == depth(q)`` are dropped, and ``death - birth`` (>= 1) is the bar's lifetime. A bar is *alive at
depth l* when its class exists in ``K_l`` itself (position ``2l``): that is depths ``birth..q // 2``. So the
birth end is closed, and the death end is closed when ``q`` is even (the class dies on leaving ``K_death``,
by a removal) and open when ``q`` is odd (it dies while ``K_death`` is built, by an insertion: every H0
death is of this kind). A depth bar is the row ``[birth, death, last]`` with ``last = q // 2`` its last
alive depth (``death`` or ``death - 1``); a bar that never dies has ``death = last = L``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lmms_topo_plugin.topology.complexes import FlagComplex

@dataclass(frozen=True)
class ZigzagInput:
    """Every simplex of the zigzag (vertex rows, ``-1``-padded to 3 columns) and its add/remove times."""

    num_depths: int
    simplices: np.ndarray  # [S, 3] int64
    times: np.ndarray  # [M] float, add/remove times of all simplices, back to back
    offsets: np.ndarray  # [S + 1]: times of simplex s are times[offsets[s]:offsets[s + 1]]

    def simplex_lists(self) -> list[list[int]]:
        dims = (self.simplices >= 0).sum(axis=1)
        rows = self.simplices.tolist()
        return [row[:size] for row, size in zip(rows, dims.tolist())]

    def time_lists(self) -> list[list[float]]:
        flat = self.times.tolist()
        bounds = self.offsets.tolist()
        return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _runs(keys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique keys over depths, with the times at which each enters and leaves the zigzag.

    ``keys[l]`` are the (unique) integer codes of the simplices of ``K_l``. Returns ``(unique keys, times,
    offsets)``: each maximal run of consecutive depths ``a..b`` holding a key adds it at ``2a - 0.5`` and,
    unless ``b`` is the last depth, removes it at ``2b + 0.5``.
    """
    last = len(keys) - 1
    depth = np.concatenate([np.full(len(k), l, dtype=np.int64) for l, k in enumerate(keys)])
    code = np.concatenate(keys)
    order = np.lexsort((depth, code))
    code, depth = code[order], depth[order]
    new_key = np.ones(len(code), dtype=bool)
    new_key[1:] = code[1:] != code[:-1]
    starts = new_key.copy()
    starts[1:] |= depth[1:] != depth[:-1] + 1
    ends = np.append(starts[1:], True) & (depth < last)
    # events of entry e: its add (slot 2e) before its removal (slot 2e + 1)
    slots = np.concatenate([2 * np.flatnonzero(starts), 2 * np.flatnonzero(ends) + 1])
    values = np.concatenate([2.0 * depth[starts] - 0.5, 2.0 * depth[ends] + 0.5])
    sort = np.argsort(slots, kind="stable")
    entry_of_event = slots[sort] // 2
    key_index = np.cumsum(new_key) - 1
    counts = np.bincount(key_index[entry_of_event], minlength=int(new_key.sum()))
    return code[new_key], values[sort], np.concatenate([[0], np.cumsum(counts)])


def build_zigzag(complexes: Sequence[FlagComplex]) -> ZigzagInput:
    """The intersection zigzag of ``complexes`` (all on the same vertices, one per depth)."""
    n = complexes[0].num_vertices
    if any(c.num_vertices != n for c in complexes):
        raise ValueError("every depth must have the same number of points")
    edge_keys = [c.edges[:, 0] * n + c.edges[:, 1] for c in complexes]
    tri_keys = [(c.triangles[:, 0] * n + c.triangles[:, 1]) * n + c.triangles[:, 2] for c in complexes]
    edges, edge_times, edge_offsets = _runs(edge_keys)
    tris, tri_times, tri_offsets = _runs(tri_keys)
    pad = np.full(n, -1, dtype=np.int64)
    vertex_rows = np.stack([np.arange(n, dtype=np.int64), pad, pad], axis=1)
    edge_rows = np.stack([edges // n, edges % n, np.full(len(edges), -1, dtype=np.int64)], axis=1)
    tri_rows = np.stack([tris // (n * n), tris // n % n, tris % n], axis=1)
    simplices = np.concatenate([vertex_rows, edge_rows, tri_rows])
    times = np.concatenate([np.full(n, -0.5), edge_times, tri_times])
    offsets = np.concatenate([np.arange(n + 1), n + edge_offsets[1:], n + edge_offsets[-1] + tri_offsets[1:]])
    return ZigzagInput(len(complexes), simplices, times, offsets)


def position_to_depth(position: np.ndarray) -> np.ndarray:
    """Zigzag position ``i`` → depth ``i // 2 + i % 2`` (``K_{l-1} ∩ K_l`` and ``K_l`` are depth ``l``)."""
    return position // 2 + position % 2


def depth_rows(raw: np.ndarray, num_depths: int) -> np.ndarray:
    """Raw bars (operation times) → rows ``[birth, death, last alive depth]`` of every bar, unfiltered, unsorted."""
    p = np.rint(raw[:, 0] + 0.5).astype(np.int64)  # first and last alive positions
    q = np.full(len(raw), 2 * (num_depths - 1), dtype=np.int64)
    dies = np.isfinite(raw[:, 1])
    q[dies] = np.rint(raw[dies, 1] - 0.5)
    return np.stack([position_to_depth(p), position_to_depth(q), q // 2], axis=1)


def bars_to_depths(raw: np.ndarray, num_depths: int) -> np.ndarray:
    """Raw bars (operation times) → depth bars ``[B, 3]`` (birth, death, last alive depth), sorted;
    bars with one depth dropped."""
    bars = depth_rows(raw, num_depths)
    bars = bars[bars[:, 0] < bars[:, 1]]
    return bars[np.lexsort(bars.T[::-1])]
