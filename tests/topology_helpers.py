"""Shared by the topology tests: the dionysus skip marker and random zigzags of flag complexes."""

import importlib.util
import itertools
import os

import numpy as np
import pytest

from lmms_topo_plugin.topology.complexes import FlagComplex, triangles

# The cross-checks against dionysus belong to the end-to-end tier, whose setup builds dionysus (`scripts/dev.py
# test -m e2e`); CI runs that tier, and there a missing dionysus fails instead of skipping.
_skip_without_dionysus = pytest.mark.skipif(
    importlib.util.find_spec("dionysus") is None and not os.environ.get("CI"),
    reason="dionysus is not installed (topo-prune install-topology)",
)


def needs_dionysus(test):
    """Mark ``test`` as a dionysus cross-check: the end-to-end tier, skipped where dionysus is missing (not in CI)."""
    return pytest.mark.e2e(_skip_without_dionysus(test))


def random_complexes(generator, n, num_depths, density=0.5, flip=0.25):
    """A walk of random graphs on ``n`` vertices (each depth flips some edges of the last) as flag complexes."""
    pairs = list(itertools.combinations(range(n), 2))
    present = generator.random(len(pairs)) < density
    complexes = []
    for _ in range(num_depths):
        edges = np.array([p for p, keep in zip(pairs, present) if keep], dtype=np.int64).reshape(-1, 2)
        complexes.append(FlagComplex(n, edges, triangles(edges, n)))
        present ^= generator.random(len(pairs)) < flip
    return complexes
