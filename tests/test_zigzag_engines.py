"""The dionysus-free "quiver" zigzag engine gives exactly dionysus' bars (multisets per dimension)."""

import itertools
import sys

import numpy as np
import pytest
import torch

from lmms_topo_plugin.topology.complexes import knn_flag_complex
from lmms_topo_plugin.topology.synthetic import drifting_clouds
from lmms_topo_plugin.topology.engines import raw_barcode
from lmms_topo_plugin.topology.zigzag import ZigzagInput, build_zigzag

from topology_helpers import needs_dionysus, random_complexes


def zigzag_of(depths):
    """ZigzagInput of per-depth sets of simplices (vertex tuples; vertices may come and go too)."""
    simplices = sorted(set().union(*depths), key=lambda s: (len(s), s))
    rows, times, offsets = [], [], [0]
    for simplex in simplices:
        held = [simplex in depth for depth in depths]
        for l, inside in enumerate(held):
            if inside and (l == 0 or not held[l - 1]):
                times.append(2.0 * l - 0.5)
            if inside and l + 1 < len(held) and not held[l + 1]:
                times.append(2.0 * l + 0.5)
        rows.append(list(simplex) + [-1] * (3 - len(simplex)))
        offsets.append(len(times))
    return ZigzagInput(len(depths), np.array(rows, dtype=np.int64).reshape(-1, 3), np.array(times),
                       np.array(offsets, dtype=np.int64))


def closure(simplices):
    return {face for s in simplices for size in range(1, len(s) + 1) for face in itertools.combinations(s, size)}


def sorted_rows(array):
    return array[np.lexsort(array.T[::-1])]


def assert_same_bars(zigzag, engines=("classic",)):
    quiver = raw_barcode(zigzag, "quiver")
    for engine in engines:
        other = raw_barcode(zigzag, engine)
        for dim in (0, 1):
            assert np.array_equal(sorted_rows(quiver[dim]), sorted_rows(other[dim])), (engine, dim)
    return quiver


@needs_dionysus
def test_quiver_equals_classic_on_random_zigzags():
    generator = np.random.default_rng(11)
    seen = {"h1": 0, "reentry": 0, "no_edges": 0, "pair": 0, "single": 0}
    for trial in range(400):
        n = int(generator.integers(2, 12))
        num_depths = int(generator.integers(1, 9)) if trial % 4 else 2
        density = (0.05, 0.5, 0.8)[trial % 3]
        zigzag = build_zigzag(random_complexes(generator, n, num_depths, density=density))
        bars = assert_same_bars(zigzag)
        seen["h1"] += len(bars[1]) > 0
        seen["reentry"] += bool(np.any(np.diff(zigzag.offsets) > 2))
        seen["no_edges"] += len(zigzag.simplices) == n
        seen["pair"] += num_depths == 2
        seen["single"] += num_depths == 1
    assert seen["h1"] > 100 and seen["reentry"] > 100 and seen["no_edges"] > 5
    assert seen["pair"] > 50 and seen["single"] > 10


@needs_dionysus
def test_quiver_equals_classic_when_vertices_come_and_go():
    generator = np.random.default_rng(5)
    for _ in range(150):
        n, num_depths = int(generator.integers(1, 8)), int(generator.integers(1, 7))
        depths = []
        for _ in range(num_depths):
            vertices = [v for v in range(n) if generator.random() < 0.8]
            cliques = [c for size in (2, 3) for c in itertools.combinations(vertices, size) if generator.random() < 0.6]
            depths.append(closure([(v,) for v in vertices] + cliques))
        if not any(depths):
            continue
        assert_same_bars(zigzag_of(depths))


@needs_dionysus
def test_quiver_equals_classic_on_hand_made_zigzags():
    triangle, hollow = closure([(0, 1, 2)]), closure([(0, 1), (1, 2), (0, 2)])
    square = closure([(0, 1), (1, 2), (2, 3), (0, 3)])
    cases = [
        [hollow, triangle, hollow, triangle, hollow],  # a triangle leaving and re-entering
        [hollow, hollow - {(0, 1)}, hollow],  # an edge leaving and re-entering: the cycle dies and is reborn
        [square | closure([(0, 2)]), square, square | closure([(1, 3)])],  # one cycle, two diagonals
        [closure([(0,), (1,)]), closure([(0, 1)]), closure([(0,), (1,)])],  # H0 merges and splits, no H1
        [closure([(0,)]), closure([(1,)]), closure([(0,)])],  # disjoint neighbours: every class dies at once
        [triangle],
    ]
    for depths in cases:
        assert_same_bars(zigzag_of(depths))


@needs_dionysus
@pytest.mark.parametrize("seed", [3, 4])
def test_quiver_equals_fast_and_classic_on_point_clouds(seed):
    states = drifting_clouds(11, 120, 48, transition=6, angle=0.3, seed=seed)
    zigzag = build_zigzag([knn_flag_complex(states[:, depth], 5) for depth in range(11)])
    bars = assert_same_bars(zigzag, engines=("classic", "fast"))
    assert len(bars[0]) > 50 and len(bars[1]) > 20


@needs_dionysus
@pytest.mark.parametrize("n,k,engines", [(96, 6, ("classic", "fast")), (160, 8, ("classic", "fast")),
                                         (320, 10, ("fast",))])
def test_quiver_equals_dionysus_on_gaussian_clouds(n, k, engines):
    # independent clouds per depth: short-lived edges re-enter often, hundreds of H0 and H1 bars
    states = torch.randn(n, 9, 32, generator=torch.Generator().manual_seed(n))
    zigzag = build_zigzag([knn_flag_complex(states[:, depth], k) for depth in range(9)])
    bars = assert_same_bars(zigzag, engines=engines)
    assert len(bars[0]) > 300 and len(bars[1]) > 300 and np.diff(zigzag.offsets).max() >= 6


def test_quiver_runs_without_dionysus(monkeypatch):
    monkeypatch.setitem(sys.modules, "dionysus", None)  # `import dionysus` now raises ImportError
    zigzag = zigzag_of([closure([(0, 1), (1, 2), (0, 2)]), closure([(0, 1, 2)])])
    bars = raw_barcode(zigzag, "quiver")
    assert bars[0].tolist() == [[-0.5, np.inf]]
    assert bars[1].tolist() == [[-0.5, 1.5]]  # the cycle of K_0 lives on K_0 and K_0 ∩ K_1, dies entering K_1


def test_quiver_rejects_other_layouts():
    zigzag = ZigzagInput(2, np.array([[0, -1, -1]]), np.array([0.0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="layout"):
        raw_barcode(zigzag, "quiver")
