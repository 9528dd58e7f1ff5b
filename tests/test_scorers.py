"""Scorers and selection rules on hand-made statistics (no model needed)."""

import math

import pytest
import torch

from lmms_topo_plugin.scorers.registry import available_methods, get_method, register_layer_method
from lmms_topo_plugin.scorers import LayerScorer, LayerScores
from lmms_topo_plugin.scorers.baselines import evenly_spaced


def scorer(name, seed=0):
    return get_method(name).create(seed=seed)


def test_registry_lists_builtins_and_refuses_collisions():
    assert available_methods()[0] == "none"
    assert {"block_influence", "angular", "random", "spacing"} <= set(available_methods())
    with pytest.raises(ValueError, match="already registered"):
        register_layer_method("random")(type("Other", (LayerScorer,), {}))
    with pytest.raises(ValueError, match="invalid method name"):
        register_layer_method("Bad-Name")


def test_block_influence_removes_layers_that_change_least():
    cosine = torch.tensor([0.5, 0.99, 0.7, 0.98, 0.6, 0.2])
    method = scorer("block_influence")
    scores = method.score({"token_cosine": cosine}, 6)
    assert scores.importance == pytest.approx([0.5, 0.01, 0.3, 0.02, 0.4, 0.8])
    assert method.select(scores, 2, list(range(1, 5))) == [1, 3]


def test_angular_picks_the_contiguous_block_with_closest_ends():
    # depths 2..5 barely move: the best block of 3 layers is 2, 3, 4 (h_2 vs h_5)
    directions = [0.0, 0.6, 1.2, 1.21, 1.22, 1.23, 2.0, 2.8, 3.0]
    states = torch.tensor([[math.cos(a), math.sin(a)] for a in directions])[None].repeat(4, 1, 1)
    method = scorer("angular")
    scores = method.score({"last_token": states}, 8)
    assert scores.importance[2] == pytest.approx(0.01 / math.pi, rel=1e-4)
    assert method.select(scores, 3, list(range(1, 7))) == [2, 3, 4]
    assert method.select(scores, 3, [1, 2, 4, 5, 6]) == [4, 5, 6]


def test_random_is_seeded():
    a = scorer("random", seed=1).score({}, 12).importance
    assert a == scorer("random", seed=1).score({}, 12).importance
    assert a != scorer("random", seed=2).score({}, 12).importance


@pytest.mark.parametrize("span", range(1, 30))
def test_spacing_is_even_and_never_adjacent(span):
    candidates = list(range(1, span + 1))
    for n in range(0, (span + 1) // 2 + 1):
        picks = evenly_spaced(candidates, n)
        assert len(picks) == len(set(picks)) == n
        gaps = [b - a for a, b in zip(picks, picks[1:])]
        assert all(gap >= 2 for gap in gaps)
        assert not gaps or max(gaps) - min(gaps) <= 1  # even: the gaps are the floor or the ceiling of span / n
    assert scorer("spacing").max_removable(span) == (span + 1) // 2
    with pytest.raises(ValueError, match=f"cannot pick {(span + 1) // 2 + 1} non-adjacent layers among {span}"):
        evenly_spaced(candidates, (span + 1) // 2 + 1)


def test_scores_roundtrip_json():
    scores = LayerScores([0.1, 0.2], {"x": [[1.0, 2.0]]})
    assert LayerScores.from_json(scores.to_json()) == scores
