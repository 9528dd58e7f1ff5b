"""The plan: budget → layers in one place (plan.py), as ordered, typed actions that the report and the applier
read (layers first, then visual tokens, whose layer indices are those of the pruned model)."""

from lmms_topo_plugin.config.prune import PruneConfig
from lmms_topo_plugin.plan import PruneVisualTokens, RemoveLayers, method_scorer, plan_from_record, plan_layers
from lmms_topo_plugin.scorers import LayerScores

SCORES = LayerScores([0.9, 0.1, 0.5, 0.2, 0.8, 0.3, 0.7, 0.95])


def plan(model_args: str, scores: LayerScores | None = SCORES):
    config = PruneConfig.from_model_args(model_args)
    return config, plan_layers(config, method_scorer(config), scores, 8)


def test_layers_then_tokens_in_order():
    config, planned = plan("method=block_influence,n_remove=3,token_method=fastv,token_keep=0.25,token_layer=2")
    assert planned.actions == (RemoveLayers((1, 3, 5)), PruneVisualTokens(config.tokens, 0))
    assert planned.removed_layers == [1, 3, 5] and planned.n_remove == 3
    assert planned.token_pruning == config.token_pruning == {"method": "fastv", "keep": 0.25, "layer": 2, "seed": 0}
    assert planned.as_dict()["actions"] == [{"kind": "remove_layers", "layers": [1, 3, 5]},
                                            {"kind": "prune_visual_tokens", **config.token_pruning}]
    assert planned.as_dict()["candidates"] == [1, 2, 3, 4, 5, 6]


def test_a_plan_without_a_budget_or_tokens_has_no_action():
    _, dense = plan("method=none", None)
    assert dense.actions == () and dense.removed_layers == [] and dense.token_pruning is None
    config, tokens_only = plan("token_method=random,seed=3", None)
    assert tokens_only.actions == (PruneVisualTokens(config.tokens, 3),)
    _, zero = plan("method=block_influence,sparsity=0", None)
    assert zero.actions == () and zero.scores is None


def test_a_saved_record_gives_the_same_plan_without_scores():
    config, planned = plan("method=block_influence,n_remove=3,token_method=fastv")
    again = plan_from_record("block_influence", 8, [1, 3, 5], config)
    assert again.actions == planned.actions and again.candidates == planned.candidates and again.scores is None
