"""Topology-aware scoring: complexes, the intersection zigzag, bar→depth mapping, scores, EPI, engines, scorer."""

import itertools
import json
import math
import sys

import numpy as np
import pytest
import torch

from lmms_topo_plugin.config.prune import PruneConfig, general_params
from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.scorers.registry import get_method
from lmms_topo_plugin.scorers.base import LayerScores
from lmms_topo_plugin.topology import analyze_topology, select_epsilon, write_topology_plots
from lmms_topo_plugin.topology.complexes import (
    FlagComplex,
    knn_flag_complex,
    knn_indices,
    symmetrised_edges,
    triangles,
)
from lmms_topo_plugin.topology.consistency import consistency, persistence_image, survival_matrix, topological_activity
from lmms_topo_plugin.topology.synthetic import drifting_clouds
from lmms_topo_plugin.topology.per_depth import per_depth_importance
from lmms_topo_plugin.topology.engines import raw_barcode
from lmms_topo_plugin.topology.zigzag import bars_to_depths, build_zigzag, position_to_depth

from topology_helpers import needs_dionysus, random_complexes


def bars(*rows):
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


# --- complexes -----------------------------------------------------------------------------------------------


def test_knn_on_a_line_and_ties_to_lower_index():
    points = torch.tensor([[0.0], [1.0], [3.0], [3.0], [10.0]])
    assert knn_indices(points, 1).tolist() == [[1], [0], [3], [2], [2]]  # 10 is tied between 2 and 3
    assert knn_indices(points, 2).tolist() == [[1, 2], [0, 2], [1, 3], [1, 2], [2, 3]]


def test_symmetrised_edges_take_the_union_of_directions():
    neighbours = np.array([[1], [0], [1], [2]])
    assert symmetrised_edges(neighbours).tolist() == [[0, 1], [1, 2], [2, 3]]


def test_triangles_are_exactly_the_3_cliques():
    generator = np.random.default_rng(0)
    for _ in range(20):
        n = int(generator.integers(3, 12))
        pairs = [p for p in itertools.combinations(range(n), 2) if generator.random() < 0.5]
        edges = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
        present = set(pairs)
        expected = [t for t in itertools.combinations(range(n), 3)
                    if all(p in present for p in itertools.combinations(t, 2))]
        assert triangles(edges, n).tolist() == [list(t) for t in expected]


def test_flag_complex_of_coinciding_and_duplicate_points():
    same = knn_flag_complex(torch.ones(6, 4), 2)  # every distance 0: neighbours are the lowest indices
    assert same.edges.tolist() == [[0, 1], [0, 2], [0, 3], [0, 4], [0, 5], [1, 2], [1, 3], [1, 4], [1, 5]]
    assert same.triangles.tolist() == [[0, 1, 2], [0, 1, 3], [0, 1, 4], [0, 1, 5]]
    doubled = knn_flag_complex(torch.randn(5, 3).repeat(2, 1), 1)
    assert {tuple(e) for e in doubled.edges.tolist()} == {(i, i + 5) for i in range(5)}


# --- the zigzag and its bars ----------------------------------------------------------------------------------


def test_zigzag_times_follow_runs_of_depths():
    edges = [[[0, 1], [1, 2]], [[0, 1]], [[0, 1], [1, 2]], [[1, 2]]]
    complexes = [FlagComplex(3, np.array(e, dtype=np.int64), np.empty((0, 3), dtype=np.int64)) for e in edges]
    zigzag = build_zigzag(complexes)
    assert zigzag.simplex_lists() == [[0], [1], [2], [0, 1], [1, 2]]
    assert zigzag.time_lists() == [[-0.5], [-0.5], [-0.5], [-0.5, 4.5], [-0.5, 0.5, 3.5]]


def test_positions_map_to_depths_and_bars_keep_their_alive_depths():
    assert position_to_depth(np.arange(7)).tolist() == [0, 1, 1, 2, 2, 3, 3]
    raw = np.array([[-0.5, math.inf], [0.5, 1.5], [1.5, 4.5], [0.5, 5.5], [-0.5, 1.5], [2.5, 3.5]])
    # positions 0..6, alive on b+0.5..d-0.5: (0..6) (1..1 dropped) (2..4) (1..5) (0..1) (3..3 dropped)
    assert bars_to_depths(raw, 4).tolist() == [[0, 1, 0], [0, 3, 3], [1, 2, 2], [1, 3, 2]]


# --- consistency and EPI ----------------------------------------------------------------------------------------


def test_survival_counts_bars_alive_over_the_whole_span():
    survival = survival_matrix(bars([0, 3, 3], [0, 1, 1], [2, 3, 2]), 4)
    # alive: depth 0 {a, b}, 1 {a, b}, 2 {a, c}, 3 {a}
    assert survival[0].tolist() == [1.0, 1.0, 0.5, 0.5]
    assert survival[2].tolist() == [0.5, 0.5, 1.0, 0.5]
    assert survival[3].tolist() == [1.0, 1.0, 1.0, 1.0]


def test_consistency_on_hand_made_bars():
    h0 = bars([0, 3, 3], [0, 1, 1])
    result = consistency({"h0": h0, "h1": bars()}, 4, alpha=1.0)
    assert result["depth_consistency_h0"] == pytest.approx([3.5 / 6, 2.5 / 4, 1.0, 1.0])
    assert np.isnan(result["depth_consistency_h1"]).all()  # no H1 bars: left out of the mean
    assert result["depth_consistency"] == pytest.approx([3.5 / 6, 2.5 / 4, 1.0, 1.0])
    assert result["layer_survival"] == pytest.approx([1.0, 0.75, 1.0])
    c = result["depth_consistency"]
    assert result["layer_consistency"] == pytest.approx([(c[0] + c[1]) / 2, 0.75 * (c[1] + c[2]) / 2, 1.0])
    assert consistency({"h0": h0, "h1": bars()}, 4, alpha=0.0)["depth_consistency_h0"][0] == pytest.approx(2 / 3)
    # an H1 bar alive at depth 1 only (its death end at 2 is open): H1 counts where it has bars
    mixed = consistency({"h0": h0, "h1": bars([1, 2, 1])}, 4, alpha=1.0)
    assert mixed["depth_consistency"][1] == pytest.approx((2.5 / 4 + 0.0) / 2)
    assert mixed["layer_survival"] == pytest.approx([0.5, 0.375, 1.0])


def test_persistence_image_and_activity():
    image = persistence_image(bars([2, 5, 5]), 7, sigma=0.1)
    assert np.unravel_index(image.argmax(), image.shape) == (2, 3)
    assert image.max() == pytest.approx(3.0)  # weighted by the lifetime
    activity = topological_activity([image, persistence_image(bars([0, 1, 0]), 7, sigma=0.1)])
    assert activity == pytest.approx([1.0, 0, 3.0, 0, 0, 0, 0], abs=1e-6)
    assert persistence_image(bars(), 4, sigma=0.5).shape == (4, 4)


def test_select_epsilon_rule():
    scores = [0.9, 0.5, 0.85, 0.2, 0.95, 1.0]
    assert select_epsilon(scores, 0.8, 10, [1, 2, 3, 4]) == [2, 4]
    assert select_epsilon(scores, 0.8, 1, [1, 2, 3, 4]) == [4]
    assert select_epsilon(scores, 1.0, 3, [1, 2, 3, 4]) == []


# --- engines ------------------------------------------------------------------------------------------------------


def sorted_rows(array):
    return array[np.lexsort(array.T[::-1])]


@needs_dionysus
def test_fast_and_classic_engines_agree_on_random_zigzags():
    generator = np.random.default_rng(7)
    nonempty_h1 = 0
    for _ in range(200):
        n, num_depths = int(generator.integers(3, 12)), int(generator.integers(2, 9))
        zigzag = build_zigzag(random_complexes(generator, n, num_depths))
        fast, classic = raw_barcode(zigzag, "fast"), raw_barcode(zigzag, "classic")
        for dim in (0, 1):
            assert np.array_equal(sorted_rows(fast[dim]), sorted_rows(classic[dim]))
        nonempty_h1 += len(fast[1]) > 0
    assert nonempty_h1 > 50


@needs_dionysus
@pytest.mark.parametrize("seed", [3, 4])
def test_fast_and_classic_engines_agree_on_point_clouds(seed):
    states = drifting_clouds(11, 120, 48, transition=6, angle=0.3, seed=seed)
    zigzag = build_zigzag([knn_flag_complex(states[:, depth], 5) for depth in range(11)])
    fast, classic = raw_barcode(zigzag, "fast"), raw_barcode(zigzag, "classic")
    assert len(fast[0]) > 50 and len(fast[1]) > 20
    for dim in (0, 1):
        assert np.array_equal(sorted_rows(fast[dim]), sorted_rows(classic[dim]))
    fast_scores, classic_scores = (analyze_topology(states, k=5, engine=engine) for engine in ("fast", "classic"))
    assert fast_scores.pop("params")["engine"] == "fast"
    assert classic_scores.pop("params")["engine"] == "classic"
    assert fast_scores == classic_scores


# --- the whole analysis -----------------------------------------------------------------------------------------


@needs_dionysus
@pytest.mark.parametrize("transition,seed", [(4, 0), (9, 1), (6, 2)])
def test_abrupt_transition_is_the_least_consistent_layer(transition, seed):
    states = drifting_clouds(13, 160, 96, transition=transition, seed=seed)
    result = analyze_topology(states)
    importance = result["importance"]
    assert int(np.argmax(importance)) == transition - 1
    assert importance[transition - 1] > max(v for i, v in enumerate(importance) if i != transition - 1) + 0.05


@needs_dionysus
def test_result_is_json_ready_and_complete():
    result = analyze_topology(drifting_clouds(5, 40, 16, seed=4), k=5)
    assert json.loads(json.dumps(result)) == result
    assert len(result["importance"]) == len(result["layer_consistency"]) == 4
    assert len(result["depth_consistency"]) == len(result["topological_activity"]) == 5
    assert np.array(result["epi_h0"]).shape == (5, 5)
    assert [0, 4, 4] in result["bars_h0"]  # the component of all points lives at every depth


@needs_dionysus
def test_degenerate_clouds():
    states = drifting_clouds(5, 30, 8, seed=5)
    states[10:20] = states[:10]  # duplicate points
    states[:, 2] = 1.0  # every point coincides at depth 2
    # all 30 points tied at depth 2: each point's 4 neighbours are the lowest other indices
    coincident = knn_flag_complex(states[:, 2], 4)
    expected_edges = sorted({(a, b) for a, b in itertools.combinations(range(5), 2)}
                            | {(j, i) for j in range(4) for i in range(5, 30)})
    assert [tuple(edge) for edge in coincident.edges.tolist()] == expected_edges
    result = analyze_topology(states, k=4)
    classic = analyze_topology(states, k=4, engine="classic")  # the quadratic algorithm, on the same ties
    assert result.pop("params")["engine"] == "quiver" and classic.pop("params")["engine"] == "classic"
    assert result == classic
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in result["layer_consistency"])
    small = analyze_topology(drifting_clouds(4, 5, 8, seed=6), k=15)  # N <= k: k clamped to N - 1
    assert small["params"]["k"] == 4
    assert small["importance"] == [0.0, 0.0, 0.0]  # complete graphs at every depth: nothing changes


def test_bad_clouds_are_refused_with_the_reason():
    states = torch.randn(8, 5, 4)
    states[3, 2, 1] = float("nan")
    with pytest.raises(FloatingPointError, match=r"depth 2 \(h_2, output of decoder layer 1\)"):
        analyze_topology(states)
    states[3, 0, 1] = float("inf")
    with pytest.raises(FloatingPointError, match="depth 0 .*input of decoder layer 0"):
        analyze_topology(states)
    with pytest.raises(ValueError, match="at least 3 calibration samples, got 2"):
        analyze_topology(torch.randn(2, 5, 4))


@needs_dionysus
def test_plots_are_written(tmp_path):
    result = analyze_topology(drifting_clouds(6, 40, 16, transition=3, seed=8), k=5)
    paths = write_topology_plots(result, tmp_path / "plots", removed=[1, 2])
    assert [p.name for p in paths] == ["topology_barcode.png", "topology_epi.png", "topology_consistency.png",
                                       "topology_diagnostics.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)


# --- the registered scorer ------------------------------------------------------------------------------------


@pytest.fixture
def topology_method():
    import lmms_topo_plugin.scorers.topology  # noqa: F401  (registers the method)

    return get_method("topology")


def test_scorer_parameters_are_validated(topology_method):
    assert not set(topology_method.params) & set(general_params())
    defaults = topology_method.parse({}).as_dict()
    assert defaults == {"topo_score": "depth_bars", "topo_distance": "bottleneck", "topo_scales": "0.1:0.25:0.5:1",
                        "topo_weighting": "none", "topo_k": 5, "topo_alpha": 1.0, "topo_sigma": 0.5,
                        "topo_select": "topn", "topo_epsilon": 0.9, "topo_points": "last_token", "topo_engine": "quiver"}
    assert topology_method.parse({"topo_k": "5", "topo_select": "epsilon", "topo_epsilon": "1"}).topo_k == 5
    for key, bad in [("topo_k", "0"), ("topo_alpha", "4.5"), ("topo_sigma", "0"), ("topo_epsilon", "0"),
                     ("topo_epsilon", "1.2"), ("topo_select", "all"), ("topo_engine", "gudhi"),
                     ("topo_points", "cls"), ("topo_score", "zigzag"), ("topo_scales", "0.5:0.1"),
                     ("topo_scales", "0:1"), ("topo_scales", "a:b"), ("topo_weighting", "epi")]:
        with pytest.raises(ModelArgsError, match=key):
            topology_method.parse({key: bad})
    config = PruneConfig.from_model_args({"method": "topology", "n_remove": "2", "topo_k": "7"})
    assert config.method_params["topo_k"] == 7


def test_scorer_without_dionysus_says_how_to_install(topology_method, monkeypatch):
    monkeypatch.setitem(sys.modules, "dionysus", None)
    with pytest.raises(ImportError, match="topo-prune install-topology"):
        topology_method.create(topology_method.parse({"topo_engine": "fast"}))
    scorer = topology_method.create()  # the default engine needs no dionysus
    states = drifting_clouds(6, 40, 16, transition=3, seed=2)
    assert scorer.score({"last_token": states}, 5).importance == analyze_topology(states)["importance"]


@needs_dionysus
def test_scorer_scores_and_selects(topology_method):
    states = drifting_clouds(9, 120, 32, transition=5, seed=9)
    scorer = topology_method.create(topology_method.parse({"topo_k": "10"}))
    scores = scorer.score({"last_token": states}, 8)
    cached = LayerScores.from_json(json.loads(json.dumps(scores.to_json())))
    consistency = cached.details["layer_consistency"]
    top = scorer.select(cached, 3, list(range(1, 7)))
    assert top == sorted(sorted(range(1, 7), key=lambda l: -consistency[l])[:3])
    assert 4 not in top  # the transition layer (h_4 -> h_5) is kept
    epsilon = topology_method.create(topology_method.parse({"topo_select": "epsilon", "topo_epsilon": "0.999"}))
    passing = [l for l in range(1, 7) if consistency[l] >= 0.999 * max(consistency)]
    assert epsilon.select(cached, 3, list(range(1, 7))) == sorted(sorted(passing, key=lambda l: -consistency[l])[:3])
    with pytest.raises(ValueError, match="9 depths, expected 8"):
        scorer.score({"last_token": states}, 7)


def test_per_depth_score_ranks_by_diagram_distance_without_dionysus(topology_method, monkeypatch):
    monkeypatch.setitem(sys.modules, "dionysus", None)  # per-depth persistence needs gudhi only
    states = drifting_clouds(7, 90, 24, transition=4, seed=3)
    scorer = topology_method.create(topology_method.parse({"topo_score": "per_depth", "topo_k": "6"}))
    scores = scorer.score({"last_token": states}, 6)
    expected = per_depth_importance(states, k=6, metric="bottleneck")["importance"]
    assert scores.importance == expected and int(np.argmax(expected)) == 3  # the transition h_3 -> h_4
    assert scores.details["layer_consistency"] == [1.0 - value for value in expected]
    assert list(type(scorer).report_plots(scores, [1, 2])) == ["distances"]


@needs_dionysus
def test_prunes_a_tiny_model_end_to_end(topology_method, tiny_checkpoints):
    from lmms_topo_plugin.api import load_pruned

    base = {"pretrained": str(tiny_checkpoints("llava", 8)), "method": "topology", "n_remove": "2", "device": "cpu",
            "calib_limit": "24", "topo_k": "5"}
    loaded, report = load_pruned(base)
    removed = report.plan["removed_layers"]
    assert len(removed) == 2 and set(removed) <= set(range(1, 7))
    assert len(loaded.adapter.layers) == 6
    details = report.plan["scores"]["details"]
    assert len(details["layer_consistency"]) == 8 and len(details["depth_consistency"]) == 9
    consistency = details["layer_consistency"]
    assert min(consistency[l] for l in removed) >= max(consistency[l] for l in range(1, 7) if l not in removed)
    with pytest.raises(ModelArgsError) as error:
        load_pruned({**base, "calib_limit": "2"})
    assert str(error.value) == "model_args: method=topology needs at least 3 calibration samples, calib_limit=2"

    _, visual = load_pruned({**base, "topo_points": "visual_mean"})
    assert visual.config["method_params"]["topo_points"] == "visual_mean"
    visual_consistency = visual.plan["scores"]["details"]["layer_consistency"]
    assert visual_consistency != consistency  # scored on another point cloud, not the cached last-token one
    assert min(visual_consistency[l] for l in visual.plan["removed_layers"]) >= max(
        visual_consistency[l] for l in range(1, 7) if l not in visual.plan["removed_layers"])
