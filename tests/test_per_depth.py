"""Per-depth persistence (the zigzag ablation): diagrams of known shapes, layer distances, invariances."""

import itertools
import json
import math

import gudhi.hera
import numpy as np
import pytest
import torch

from lmms_topo_plugin.errors import NonFiniteError

from lmms_topo_plugin.topology.per_depth import (
    depth_diagrams,
    diagram_distance,
    layer_distances,
    per_depth_importance,
)

COMPLEXES = [("knn", {"k": 8}), ("rips", {"max_edge_quantile": 0.5})]
METRICS = ["bottleneck", "wasserstein"]


def circle(n=60, dim=5, radius=3.0, seed=0):
    """``n`` evenly spaced points on a circle, rotated into ``R^dim``."""
    angles = 2 * math.pi * torch.arange(n, dtype=torch.float64) / n
    flat = torch.zeros(n, dim, dtype=torch.float64)
    flat[:, 0], flat[:, 1] = radius * torch.cos(angles), radius * torch.sin(angles)
    return (flat @ rotation(dim, seed)).float()


def rotation(dim, seed):
    q, _ = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
    return q


def noisy_circle(n=50, dim=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return circle(n, dim, seed=seed) + 0.15 * torch.randn(n, dim, generator=generator)


def stack(*clouds):
    return torch.stack(clouds, dim=1)


def brute_force(a, b, order=None):
    """Bottleneck (``order=None``) or ``order``-Wasserstein distance over all matchings, L∞ ground cost."""
    left = list(map(tuple, a)) + [None] * len(b)
    right = list(map(tuple, b)) + [None] * len(a)

    def cost(p, q):
        if p is None and q is None:
            return 0.0
        if p is None or q is None:
            p = p or q
            return (p[1] - p[0]) / 2
        return max(abs(p[0] - q[0]), abs(p[1] - q[1]))

    best = math.inf
    for perm in itertools.permutations(range(len(right))):
        costs = [cost(left[i], right[j]) for i, j in enumerate(perm)]
        value = max(costs) if order is None else sum(c**order for c in costs) ** (1 / order)
        best = min(best, value)
    return best


def test_circle_has_one_long_h1_bar():
    diagram = depth_diagrams(stack(circle(), circle()), complex="rips", max_edge_quantile=1.0)[0]
    persistence = diagram[1][:, 1] - diagram[1][:, 0]
    assert (persistence > 0.5).sum() == 1
    # dies when the inscribed equilateral triangle enters: chord sqrt(3) r over the median chord sqrt(2) r
    assert diagram[1][np.argmax(persistence), 1] == pytest.approx(math.sqrt(1.5), abs=0.03)
    assert np.isinf(diagram[0][:, 1]).sum() == 1 and np.isfinite(diagram[1][:, 1]).all()
    # the 8-NN flag complex never fills the circle: one essential H1 class, no long finite one
    knn = depth_diagrams(stack(circle(), circle()), complex="knn", k=8)[0][1]
    assert np.isinf(knn[:, 1]).sum() == 1
    finite = knn[np.isfinite(knn[:, 1])]
    assert (finite[:, 1] - finite[:, 0] < 0.1).all()


def test_two_clusters_merge_at_the_normalised_gap():
    generator = torch.Generator().manual_seed(1)
    blob = 0.05 * torch.randn(30, 4, generator=generator)
    shift = torch.tensor([10.0, 0, 0, 0])
    cloud = torch.cat([blob, blob.flip(0) + shift + 0.01])
    points = cloud.double().numpy()
    pairwise = np.linalg.norm(points[:, None] - points[None], axis=-1)
    gap = pairwise[:30, 30:].min() / np.median(pairwise[np.triu_indices(60, 1)])
    h0 = depth_diagrams(stack(cloud, cloud), complex="rips", max_edge_quantile=1.0, dims=(0,))[0][0]
    finite = np.sort(h0[np.isfinite(h0[:, 1]), 1])
    assert finite[-1] == pytest.approx(gap, rel=1e-4)
    assert finite[-2] < 0.1 * gap and np.isinf(h0[:, 1]).sum() == 1
    # the 5-NN graph never joins the clusters: two essential components
    result = per_depth_importance(stack(cloud, cloud), k=5, dims=(0,))
    assert result["essential_h0"] == [2, 2]


def test_collapsed_depth_is_one_essential_class():
    states = stack(torch.ones(20, 3), noisy_circle(20, 3))
    for complex_, options in COMPLEXES:
        diagram = depth_diagrams(states, complex=complex_, **options)[0]
        assert diagram[0].tolist() == [[0.0, math.inf]] and diagram[1].shape == (0, 2)


@pytest.mark.parametrize("complex_,options", COMPLEXES)
@pytest.mark.parametrize("metric", METRICS)
def test_identity_isometry_and_random_layers(complex_, options, metric):
    x = noisy_circle()
    moved = (x.double() @ rotation(6, 7) * 3.7 + 5.0).float()
    other = torch.randn(50, 6, generator=torch.Generator().manual_seed(3))
    states = stack(x, x.clone(), moved, other)
    diagrams = depth_diagrams(states, complex=complex_, **options)
    distances = layer_distances(diagrams, metric)
    assert distances["h0"][0] == distances["h1"][0] == distances["mean"][0] == 0.0
    assert distances["mean"][1] < 1e-4
    assert distances["mean"][2] > 100 * max(distances["mean"][1], 1e-6)
    assert np.allclose(distances["mean"], (distances["h0"] + distances["h1"]) / 2)
    result = per_depth_importance(states, metric=metric, complex=complex_, **options)
    assert result["importance"][0] == 0.0 and result["importance"][1] < 1e-3 and result["importance"][2] == 1.0


def test_uniform_scaling_matters_only_without_normalisation():
    x = noisy_circle()
    states = stack(x, 3 * x)
    assert layer_distances(depth_diagrams(states))["mean"][0] < 1e-5
    assert layer_distances(depth_diagrams(states, scale="none"))["mean"][0] > 0.1


@pytest.mark.parametrize("complex_,options", COMPLEXES)
def test_sample_order_does_not_matter(complex_, options):
    generator = torch.Generator().manual_seed(5)
    states = stack(noisy_circle(seed=1), torch.randn(50, 6, generator=generator), noisy_circle(seed=2) ** 2)
    permuted = states[torch.randperm(50, generator=generator)]
    for metric in METRICS:
        for essential in ("drop", "cap"):
            a = layer_distances(depth_diagrams(states, complex=complex_, **options), metric, essential=essential)
            b = layer_distances(depth_diagrams(permuted, complex=complex_, **options), metric, essential=essential)
            for key in a:
                np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-6)


def test_knn_filtration_on_the_complete_graph_is_rips():
    states = stack(noisy_circle(30, 4, seed=4), noisy_circle(30, 4, seed=5))
    knn = depth_diagrams(states, complex="knn", k=29)
    rips = depth_diagrams(states, complex="rips", max_edge_quantile=1.0)
    for a, b in zip(knn, rips):
        for dim in (0, 1):
            np.testing.assert_allclose(a[dim], b[dim], rtol=1e-9)


def test_distances_match_brute_force_matchings():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = (np.sort(rng.uniform(0, 1, (rng.integers(1, 4), 2)), axis=1) for _ in range(2))
        exact = brute_force(a, b)
        assert diagram_distance(a, b, "bottleneck") == pytest.approx(exact, abs=1e-12)
        assert gudhi.hera.bottleneck_distance(a, b, delta=1e-6) == pytest.approx(exact, rel=1e-5)
        assert diagram_distance(a, b, "wasserstein") == pytest.approx(brute_force(a, b, order=1), rel=0.011)
        assert diagram_distance(a, b, "wasserstein", order=2.0) == pytest.approx(brute_force(a, b, 2), rel=0.011)


def test_essential_points_drop_or_cap():
    first = {0: np.array([[0.0, 2.0], [0.0, math.inf]]), 1: np.empty((0, 2))}
    second = {0: np.array([[0.0, 2.0], [0.0, math.inf]]), 1: np.array([[0.5, math.inf]])}
    dropped = layer_distances([first, second], "bottleneck", essential="drop")
    capped = layer_distances([first, second], "bottleneck", essential="cap")
    assert dropped["h0"][0] == capped["h0"][0] == 0.0 and dropped["h1"][0] == 0.0
    assert capped["h1"][0] == pytest.approx((2.0 - 0.5) / 2)


def test_result_is_json_ready():
    states = stack(noisy_circle(seed=1), noisy_circle(seed=2), noisy_circle(seed=3))
    result = json.loads(json.dumps(per_depth_importance(states, complex="rips", metric="wasserstein")))
    assert len(result["importance"]) == len(result["layer_distance_h1"]) == 2
    assert len(result["diagram_points_h0"]) == len(result["depth_scale"]) == len(result["edge_threshold"]) == 3
    assert result["params"]["metric"] == "wasserstein" and result["params"]["complex"] == "rips"
    assert max(result["importance"]) == 1.0 and result["diagram_points_h0"] == [49, 49, 49]


def test_bad_input_is_refused_with_the_reason():
    good = stack(noisy_circle(), noisy_circle(seed=1))
    with pytest.raises(ValueError, match="shape"):
        depth_diagrams(good[:, 0])
    with pytest.raises(ValueError, match="at least"):
        depth_diagrams(good[:2])
    broken = good.clone()
    broken[3, 1, 2] = float("nan")
    with pytest.raises(NonFiniteError, match="non-finite.*depth 1"):
        per_depth_importance(broken)
    for bad in ({"complex": "alpha"}, {"scale": "mean"}, {"max_edge_quantile": 0.0}, {"dims": ()}, {"k": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            depth_diagrams(good, **bad)
    diagrams = depth_diagrams(good, dims=(0,))
    with pytest.raises(ValueError, match="dimensions"):
        layer_distances(diagrams)
    with pytest.raises(ValueError, match="metric"):
        layer_distances(diagrams, "sliced", dims=(0,))
    with pytest.raises(ValueError, match="2 depths"):
        layer_distances(diagrams[:1], dims=(0,))
