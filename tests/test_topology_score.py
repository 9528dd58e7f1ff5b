"""The topology scores (the default depth_bars and multiscale): the properties a layer score must have, their bars,
and the diagnostics."""

import numpy as np
import pytest
import torch

from lmms_topo_plugin.topology import analyze_topology
from lmms_topo_plugin.scorers.topology import TopologyConfig, TopologyScorer
from lmms_topo_plugin.topology import analysis
from lmms_topo_plugin.topology.consistency import classes_at, consistency, survival_matrix
from lmms_topo_plugin.topology.diagnostics import RANK_CAP, capped_rank, depth_health
from lmms_topo_plugin.topology.multiscale import complex_bars, reduced_h0, scaled_complexes

from topology_helpers import needs_dionysus

N, DIM, K = 96, 12, 5


@pytest.fixture(scope="module")
def clouds():
    generator = torch.Generator().manual_seed(11)
    base = torch.randn(N, DIM, generator=generator)
    rotation, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=generator, dtype=torch.float64))
    return {
        "base": base,
        "rotated": (base.double() @ rotation * 4.0).float(),
        "scrambled": base[torch.randperm(N, generator=generator)],
        "independent": torch.randn(N, DIM, generator=generator),
        "other": torch.randn(N, DIM, generator=generator),
    }


def multiscale(depths, **kwargs):
    return analyze_topology(torch.stack(depths, dim=1), k=K, score="multiscale", **kwargs)["layer_consistency"]


@needs_dionysus
@pytest.mark.parametrize("destroyer", ["scrambled", "independent"])
def test_identity_layers_are_the_most_consistent_and_destroying_layers_the_least(clouds, destroyer):
    base = clouds["base"]
    # layers 0-2 identity; layer 3 scrambles the points (or replaces the cloud); layers 4-5 identity again
    consistency_per_layer = multiscale([base, base, base, base, clouds[destroyer], clouds[destroyer],
                                        clouds[destroyer]])
    identity = [consistency_per_layer[layer] for layer in (0, 1, 2, 4, 5)]
    assert consistency_per_layer[3] < min(identity)
    assert int(np.argmin(consistency_per_layer)) == 3


def rotate_then_replace(base):
    """9 depths: decoder layers 0-3 rotate and scale ``base`` (each kNN complex is the same), layers 4-7 each
    replace the cloud with an independent one."""
    generator = torch.Generator().manual_seed(3)
    depths = [base]
    for scale in (2.0, 0.5, 3.0, 0.25):
        rotation, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=generator, dtype=torch.float64))
        depths.append((depths[-1].double() @ rotation * scale).float())
    depths += [torch.randn(N, DIM, generator=generator) for _ in range(4)]
    return torch.stack(depths, dim=1)


def test_the_default_score_ranks_layers_that_replace_the_cloud_above_layers_that_rotate_it(clouds, monkeypatch):
    states = rotate_then_replace(clouds["base"])
    result = analyze_topology(states)
    assert result["params"]["score"] == "depth_bars" and result["params"]["k"] == K  # the defaults
    # H0 is the one whole-vertex-set bar (survival 1 everywhere); H1's bars live exactly over depths 0-4 (one complex),
    # and the independent clouds' loops live within one depth: destroyed by both neighbouring layers, survival 0
    assert result["layer_survival_h0"] == [1.0] * 8
    assert result["layer_survival_h1"] == [1.0] * 4 + [0.0] * 4
    assert result["depth_consistency_h1"][5:] == [0.0] * 4

    def h1_consistency(l):  # depths 0-4: the |l - m|-weighted share of the other depths within 0-4; then 0
        others = [m for m in range(9) if m != l]
        return sum(abs(l - m) for m in others if m <= 4) / sum(abs(l - m) for m in others) if l <= 4 else 0.0

    depth = [(1.0 + h1_consistency(l)) / 2 for l in range(9)]  # mean of H0 (1) and H1
    survival = [1.0] * 4 + [0.5] * 4
    expected = [1.0 - survival[l] * (depth[l] + depth[l + 1]) / 2 for l in range(8)]
    assert result["importance"] == pytest.approx(expected, abs=1e-12)
    assert result["importance"][4:] == [0.6875, 0.75, 0.75, 0.75]
    assert min(result["importance"][4:]) > max(result["importance"][:4])
    scorer = TopologyScorer(TopologyConfig())
    assert scorer.select(scorer.score({"last_token": states}, 8), 4, list(range(8))) == [0, 1, 2, 3]

    # the first rule left a dimension with no bar at a depth out as undefined: the replacing layers read as identities
    monkeypatch.setattr(analysis, "classes_at", lambda bars, num_depths: np.zeros(num_depths, dtype=bool))
    first = analyze_topology(states)["importance"]
    assert first[5:] == [0.0, 0.0, 0.0] and first[4] == 1.0 - 0.5 * (0.75 + 1.0) / 2


def test_a_dimension_with_classes_but_no_bar_at_a_depth_has_survival_0_there():
    # depth rows [birth, death, last]: a bar over depths 0-1, a loop of depth 2 alone (dropped by the depth mapping),
    # a class of the intersection K_2 ∩ K_3 only (alive in no complex); nothing at depth 3
    rows = np.array([[0, 1, 1], [2, 2, 2], [3, 3, 2]])
    assert classes_at(rows, 4).tolist() == [True, True, True, False]
    kept = rows[:1]
    silent = consistency({"h1": kept}, 4, alpha=1.0)
    destroyed = consistency({"h1": kept}, 4, alpha=1.0, classes={"h1": classes_at(rows, 4)})
    assert silent["layer_survival"].tolist()[:2] == [1.0, 0.0] and np.isnan(silent["layer_survival"][2])
    assert np.isnan(silent["depth_consistency"][2:]).all()
    assert destroyed["layer_survival"].tolist() == [1.0, 0.0, 0.0]  # layer 2 destroyed depth 2's loop
    assert destroyed["depth_consistency"].tolist()[:3] == [1 / 6, 1 / 4, 0.0]
    assert np.isnan(destroyed["depth_consistency"][3])
    assert survival_matrix(kept, 4, classes=classes_at(rows, 4))[2].tolist() == [0.0, 0.0, 1.0, 0.0]


@needs_dionysus
def test_an_isometry_up_to_scale_is_as_consistent_as_the_identity(clouds):
    base, rotated = clouds["base"], clouds["rotated"]
    tail = [clouds["independent"], clouds["other"]]
    with_identity = multiscale([base, base, *tail])
    with_rotation = multiscale([base, rotated, *tail])
    assert with_rotation == with_identity
    assert multiscale([base, rotated, base * 0.25]) == [1.0, 1.0]


@needs_dionysus
def test_the_score_does_not_depend_on_sample_order(clouds):
    depths = [clouds["base"], clouds["rotated"], clouds["scrambled"], clouds["independent"]]
    order = torch.randperm(N, generator=torch.Generator().manual_seed(5))
    assert multiscale([d[order] for d in depths]) == pytest.approx(multiscale(depths), abs=1e-12)


@needs_dionysus
def test_lifetime_weighting_counts_long_bars_more(clouds):
    base = clouds["base"]
    depths = [base, base, clouds["scrambled"], clouds["scrambled"], clouds["independent"]]
    plain = analyze_topology(torch.stack(depths, 1), k=K, score="multiscale")
    weighted = analyze_topology(torch.stack(depths, 1), k=K, score="multiscale", weighting="lifetime")
    assert weighted["params"]["weighting"] == "lifetime"
    assert weighted["layer_consistency"] != plain["layer_consistency"]


def test_scales_cut_each_depth_at_quantiles_of_its_own_edge_lengths(clouds):
    base = clouds["base"]
    small, whole = scaled_complexes(base, K, (0.5, 1.0))
    twice = scaled_complexes(base * 2.0, K, (0.5, 1.0))
    assert np.array_equal(small.edges, twice[0].edges) and np.array_equal(whole.edges, twice[1].edges)
    assert len(small.edges) == (len(whole.edges) + 1) // 2  # the median length, ties none on random points
    assert set(map(tuple, small.edges.tolist())) < set(map(tuple, whole.edges.tolist()))


def test_complex_bars_keep_every_class_of_a_complex_and_reduce_h0():
    # raw times: alive on positions b + 0.5 .. d - 0.5 (see zigzag.py); 3 depths = positions 0..4
    raw = np.array([[-0.5, np.inf],  # every position: the class of the vertex set
                    [-0.5, 0.5],  # K_0 only: a class the first layer kills
                    [0.5, 1.5],  # the intersection K_0 ∩ K_1 only: no complex's class
                    [1.5, np.inf],  # K_1 on
                    [-0.5, np.inf]])  # a second component everywhere
    bars = complex_bars(raw, 3)
    assert bars.tolist() == [[0, 0, 0], [0, 2, 2], [0, 2, 2], [1, 2, 2]]
    assert reduced_h0(bars, 3).tolist() == [[0, 0, 0], [0, 2, 2], [1, 2, 2]]


def test_degenerate_depths_are_left_out_of_the_survival():
    h0 = np.array([[0, 3, 3], [0, 3, 3], [1, 2, 2]])
    result = consistency({"h0": h0}, 4, alpha=1.0, excluded_depths=(0,))
    assert np.isnan(result["layer_survival"][0]) and np.isnan(result["depth_consistency"][0])
    kept = consistency({"h0": h0[:, :]}, 4, alpha=1.0)
    assert result["layer_survival"][1:].tolist() == kept["layer_survival"][1:].tolist()
    # depth 1's consistency now averages over depths 2 and 3 only
    assert result["depth_consistency"][1] == pytest.approx((1.0 * 1 + (2 / 3) * 2) / 3)


@needs_dionysus
def test_diagnostics_name_what_the_score_rests_on(clouds):
    base = clouds["base"]
    states = torch.stack([torch.ones_like(base), base, base, clouds["independent"]], dim=1)
    first = analyze_topology(states, k=K, score="depth_bars")["diagnostics"]
    assert first["depths"]["degenerate"] == [True, False, False, False]
    assert first["depths"]["distinct_points"][0] == 1 and first["depths"]["rank"][1] == min(DIM, RANK_CAP)
    assert "depth 0 (h_0, input of decoder layer 0) is degenerate: all 96 points coincide" in first["warnings"]
    assert "H0 carries no signal: its layer survival is 1.000 at every layer" in first["warnings"]
    assert first["dims"]["h0"]["constant"] and first["dims"]["h0"]["kept_bars"] == 1
    assert sum(dim["score_share"] for dim in first["dims"].values()) == pytest.approx(1.0)
    fixed = analyze_topology(states, k=K, score="multiscale")
    diag = fixed["diagnostics"]
    assert not diag["dims"]["h0"]["constant"]
    assert "layers [0]: no bar at either end (or a degenerate end); scored as consistency 0 (kept)" in diag["warnings"]
    assert fixed["layer_consistency"][0] == 0.0 and fixed["importance"][0] == 1.0
    for dim in ("h0", "h1"):
        summary = diag["dims"][dim]
        assert summary["kept_bars"] == summary["one_depth_bars"] + sum(summary["lifetime_counts"])
        assert len(fixed[f"bars_{dim}"]) == summary["kept_bars"]


def test_depth_health_reads_rank_and_duplicates():
    states = torch.zeros(6, 3, 4)
    states[:, 1, 0] = torch.arange(6.0)  # a line: rank 1
    states[:, 2] = torch.randn(6, 4)
    states[3, 2] = states[0, 2]
    health = depth_health(states)
    assert health == {"distinct_points": [1, 6, 5], "rank": [0, 1, 4], "degenerate": [True, True, False]}
    generator = torch.Generator().manual_seed(1)
    for true_rank in (1, 3, RANK_CAP, 20):  # the random projection keeps the rank up to the cap
        cloud = (torch.randn(40, true_rank, dtype=torch.float64) @ torch.randn(true_rank, 50, dtype=torch.float64))
        exact = int(torch.linalg.matrix_rank(cloud - cloud.mean(dim=0)))
        assert capped_rank(cloud, generator) == min(exact, RANK_CAP)
