"""Scores that carry no information over the candidate layers (all equal, or undefined everywhere) are never
selected from: the run stops before surgery with one line and exit code 5, naming what to raise."""

import pytest
import torch

from lmms_topo_plugin.config.prune import PruneConfig
from lmms_topo_plugin.errors import NonFiniteError, UninformativeScoresError
from lmms_topo_plugin.plan import method_scorer, plan_layers
from lmms_topo_plugin.scorers.registry import get_method
from lmms_topo_plugin.scorers import LayerScores
from lmms_topo_plugin.scorers.topology import TopologyConfig, TopologyScorer

from cli import assert_failed, lmms_eval

CALIB3_LINE = ("method=topology gives every candidate decoder layer [1, 2, 3, 4, 5, 6] the same importance (0): no "
               "information to choose 2 of them by, so nothing was removed; raise calib_limit (3 samples were scored, "
               "so topo_k was clamped to N-1 = 2 and every kNN graph was complete), then topo_k if need be")


def plan(method: str, scores: LayerScores, num_layers: int = 8, **args):
    config = PruneConfig.from_model_args({"method": method, "n_remove": 2, **args})
    return plan_layers(config, method_scorer(config), scores, num_layers)


def test_scores_equal_over_the_candidates_stop_with_one_line_and_exit_5():
    # equal over the candidates 1..6; the protected first and last layers differ and do not count
    scores = LayerScores([0.1, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.05])
    with pytest.raises(UninformativeScoresError) as raised:
        plan("block_influence", scores)
    assert str(raised.value) == (
        "method=block_influence gives every candidate decoder layer [1, 2, 3, 4, 5, 6] the same importance (0.25): "
        "no information to choose 2 of them by, so nothing was removed; raise calib_limit (more calibration samples)")
    assert raised.value.exit_code == 5 and isinstance(raised.value, NonFiniteError)
    # with every layer a candidate, layer 0 and 7 tell the layers apart
    assert plan("block_influence", scores, keep_first_last=False).removed_layers == [0, 7]


def test_scores_that_differ_over_the_candidates_still_choose_and_ties_between_them_go_by_depth():
    assert plan("block_influence", LayerScores([0.0, 0.3, 0.2, 0.2, 0.2, 0.4, 0.5, 0.0])).removed_layers == [2, 3]
    nearly = [0.5] * 8
    nearly[4] = 0.5 - 1e-6
    assert plan("block_influence", LayerScores(nearly)).removed_layers == [1, 4]


def test_nothing_is_chosen_from_ties_only_when_a_choice_is_made():
    same = LayerScores([0.5] * 8)
    assert same.check_informative("angular", 0, list(range(1, 7)), "-") is same  # nothing removed
    assert same.check_informative("angular", 6, list(range(1, 7)), "-") is same  # every candidate removed
    assert plan("block_influence", same, n_remove=0).removed_layers == []


def test_methods_that_choose_without_informative_scores_keep_working():
    assert plan("spacing", LayerScores(None)).removed_layers == [2, 5]
    random_scores = get_method("random").create().score({}, 8)
    assert plan("random", random_scores).removed_layers == sorted(
        sorted(range(1, 7), key=lambda layer: random_scores.importance[layer])[:2])


def test_topology_scores_of_three_samples_are_constant_and_name_calib_limit_and_topo_k():
    # 3 points: k is clamped to 2, every complex is a filled triangle (no H1), H0 the one bar of the vertex set
    states = torch.randn(3, 9, 16, generator=torch.Generator().manual_seed(0))
    scorer = TopologyScorer(TopologyConfig())
    scores = scorer.score({"last_token": states}, 8)
    assert scores.importance == [0.0] * 8
    assert scores.details["diagnostics"]["warnings"] == [
        "H0 carries no signal: its layer survival is 1.000 at every layer",
        "H1 carries no signal: its layer survival is undefined at every layer (no bars)",
    ]
    with pytest.raises(UninformativeScoresError) as raised:
        plan("topology", scores, sparsity=0.25, n_remove=None)
    assert str(raised.value) == CALIB3_LINE

    # nearly complete graphs (half the others or more are neighbours): more samples; sparse ones: either knob
    scores.details["params"] = {**scores.details["params"], "num_points": 8, "k": 5}
    assert scorer.signal_hint(scores) == ("raise calib_limit (8 samples were scored; with topo_k=5 of 7 possible "
                                          "neighbours the kNN graphs are nearly complete)")
    scores.details["params"] = {**scores.details["params"], "num_points": 40, "k": 2}
    assert scorer.signal_hint(scores) == ("raise calib_limit (40 samples were scored) or topo_k (2 neighbours per "
                                          "point were used)")


@pytest.mark.e2e
def test_topology_with_three_calibration_samples_exits_5_before_evaluating(tiny_checkpoints, tmp_path):
    """The issue's run: `method=topology,calib_limit=3,sparsity=0.25` on an 8-layer LLaVA, through lmms-eval."""
    args = f"pretrained={tiny_checkpoints('llava', 8)},method=topology,sparsity=0.25,device=cpu,calib_limit=3"
    result = lmms_eval(args, tmp_path / "out")
    assert_failed(result, 5, f"topo_pruned: {CALIB3_LINE}", tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*_topo_pruned_*.json"))  # no run report: nothing was pruned
