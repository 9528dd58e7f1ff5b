"""Sweep rules: parsing and rejection of --rule/--objective/--metric, the winner per objective, the Pareto front."""

import math

import pytest

from lmms_topo_plugin.errors import PluginError
from lmms_topo_plugin.search.rules import (
    OBJECTIVES,
    Rule,
    SweepArgsError,
    check_metric,
    dense_row,
    pareto_front,
    parse_objective,
    parse_rule,
    passing,
    pick_winner,
)

METRIC = "topo_synth/exact_match"


def row(key, method, n_remove, value, prefill_s, parameters, budget=0.25, flops=None):
    """A sweep row of a 12-layer model with only the fields the rules read filled in meaningfully (prefill FLOPs:
    ``flops``, default proportional to the layers kept)."""
    return {"key": key, "method": method, "budget": budget, "calib_limit": None, "n_remove": n_remove,
            "num_layers": 12, "removed_layers": list(range(n_remove)), "metrics": {METRIC: value},
            "stderr": {METRIC: None}, "eval_s": 1.0,
            "cost": {"prefill_s": prefill_s, "decode_s_per_token": 0.01, "peak_memory_bytes": 10**9,
                     "memory_kind": "rss", "parameters": parameters, "num_layers": 12 - n_remove,
                     "prefill_flops": (12 - n_remove) * 100 if flops is None else flops}}


# Dense 0.80, so keep>=0.95 asks for 0.76. Passing: A, T, L, P; F fails (and would win every objective).
#   layers:  L removes 4, the others that pass 3                       -> L
#   latency: prefill A 0.80, T 0.60, L 0.75, P 0.72                    -> T
#   params:  A 800, T 780, L 760, P 700                                -> P
DENSE = row("dense", "none", 0, 0.80, 1.00, 1000, budget=0.0)
A = row("topology-0.25", "topology", 3, 0.78, 0.80, 800)
T = row("block_influence-0.25", "block_influence", 3, 0.79, 0.60, 780)
L = row("angular-0.375", "angular", 4, 0.77, 0.75, 760, budget=0.375)
P = row("spacing-0.25", "spacing", 3, 0.765, 0.72, 700)
F = row("random-0.5", "random", 6, 0.50, 0.40, 500, budget=0.5)
ROWS = [A, DENSE, T, L, P, F]


@pytest.mark.parametrize("text, rule", [
    ("keep>=0.95", Rule("keep", 0.95)),
    ("  keep >= 95 % ", Rule("keep", 0.95)),
    ("keep>95%", Rule("keep", 0.95, strict=True)),
    ("KEEP>=.9", Rule("keep", 0.9)),
    ("keep>=33.3%", Rule("keep", 0.333)),
    ("keep>=1", Rule("keep", 1.0)),
    ("metric>=0.8", Rule("metric", 0.8)),
    ("metric > 12.5", Rule("metric", 12.5, strict=True)),
    ("metric>=-1e-1", Rule("metric", -0.1)),
])
def test_parse_rule_accepts(text, rule):
    assert parse_rule(text) == rule
    assert parse_rule(rule.describe()) == rule


@pytest.mark.parametrize("text", [
    "", "keep", "keep>=", "keep<=0.9", "keep=0.95", "keep>=95", "keep>=1.5", "keep>=-0.1", "keep>=0.9.5",
    "metric>=80%", "accuracy>=0.9", "keep>=0.95 and more", "keep>=nan",
])
def test_parse_rule_rejects(text):
    with pytest.raises(SweepArgsError) as caught:
        parse_rule(text)
    message = str(caught.value)
    assert message.startswith(f"--rule {text!r}")
    assert "keep>=X" in message and "metric>=V" in message and "\n" not in message
    assert isinstance(caught.value, PluginError) and caught.value.exit_code == 2


def test_rule_describe_is_canonical_text():
    assert Rule("keep", 0.95).describe() == "keep>=0.95"
    assert Rule("metric", 12.5, strict=True).describe() == "metric>12.5"


def test_rule_passes():
    keep, strict = Rule("keep", 0.5), Rule("keep", 0.5, strict=True)
    assert keep.passes(0.4, 0.8) is True      # exactly half of dense
    assert keep.passes(0.39, 0.8) is False
    assert strict.passes(0.4, 0.8) is False
    assert strict.passes(0.41, 0.8) is True
    assert keep.passes(math.nan, 0.8) is False
    assert Rule("metric", 0.7).passes(0.7, 0.1) is True  # absolute: the dense value is ignored
    assert Rule("metric", 0.7).passes(0.69, 0.1) is False


def test_parse_objective():
    assert OBJECTIVES == ("layers", "latency", "params", "flops")
    assert parse_objective(" Latency ") == "latency"
    with pytest.raises(SweepArgsError) as caught:
        parse_objective("speed")
    assert str(caught.value) == "--objective 'speed' is not one of: layers, latency, params, flops"
    assert caught.value.exit_code == 2


def test_check_metric():
    available = {"topo_synth/exact_match", "mme/total,none"}
    assert check_metric("topo_synth/exact_match", available) is None
    with pytest.raises(SweepArgsError) as caught:
        check_metric("topo_synth/acc", available)
    assert str(caught.value) == ("--metric 'topo_synth/acc' is not produced by the tasks; "
                                 "available: mme/total,none, topo_synth/exact_match")
    with pytest.raises(SweepArgsError, match=r"available: \(none\)$"):
        check_metric("x", set())


def test_dense_row_is_exactly_one():
    assert dense_row(ROWS) is DENSE
    with pytest.raises(ValueError, match="found 0"):
        dense_row([A, T])
    with pytest.raises(ValueError, match="found 2"):
        dense_row([DENSE, A, DENSE])


def test_passing_keeps_input_order_and_skips_dense():
    assert passing(ROWS, Rule("keep", 0.95), METRIC) == [A, T, L, P]
    assert passing(ROWS, Rule("metric", 0.78), METRIC) == [A, T]
    assert passing(ROWS, Rule("metric", 0.78, strict=True), METRIC) == [T]


@pytest.mark.parametrize("objective, expected", [("layers", L), ("latency", T), ("params", P)])
def test_winner_under_each_objective(objective, expected):
    assert pick_winner(ROWS, parse_rule("keep>=0.95"), objective, METRIC) is expected


def test_winner_follows_the_rule():
    # metric>=0.78 leaves A and T, both remove 3 layers: layers breaks the tie by the higher metric (T).
    assert pick_winner(ROWS, parse_rule("metric>=0.78"), "layers", METRIC) is T
    # Everything passes keep>=0.5 (0.40): F removes most, is fastest and smallest.
    for objective in OBJECTIVES:
        assert pick_winner(ROWS, parse_rule("keep>=0.5"), objective, METRIC) is F


def test_winner_none_when_nothing_passes():
    for objective in OBJECTIVES:
        assert pick_winner(ROWS, parse_rule("keep>=99%"), objective, METRIC) is None
    assert pick_winner([DENSE], parse_rule("keep>=0"), "layers", METRIC) is None


def test_winner_tie_breaks():
    rule = parse_rule("keep>=0")
    same_layers_lower_metric = row("a", "topology", 4, 0.70, 0.10, 100)
    same_layers_same_metric_slower = row("b", "angular", 4, 0.77, 0.90, 100)
    best = row("c", "spacing", 4, 0.77, 0.80, 900)
    assert pick_winner([DENSE, same_layers_lower_metric, same_layers_same_metric_slower, best],
                       rule, "layers", METRIC) is best
    fast_low, fast_high = row("d", "topology", 2, 0.60, 0.5, 100), row("e", "angular", 1, 0.70, 0.5, 100)
    assert pick_winner([DENSE, fast_low, fast_high], rule, "latency", METRIC) is fast_high
    assert pick_winner([DENSE, fast_low, fast_high], rule, "params", METRIC) is fast_high
    # flops: fewest prefill FLOPs, whatever was pruned (a width plan removes no layer), then the higher metric
    widths = row("f", "comp", 0, 0.65, 0.9, 100, flops=500)
    assert pick_winner([DENSE, fast_low, fast_high, widths], rule, "flops", METRIC) is widths
    cheap_high = row("g", "comp", 0, 0.70, 0.9, 100, flops=500)
    assert pick_winner([DENSE, widths, cheap_high], rule, "flops", METRIC) is cheap_high


def test_pareto_front_latency():
    # T (0.79 at 0.60 s) beats A, L and P on both axes; F is fastest, dense most accurate.
    assert pareto_front(ROWS, METRIC, "latency") == [F, T, DENSE]


def test_pareto_front_removed():
    # By removed fraction: dense 0, T 3/12 (beats A and P), L 4/12, F 6/12.
    assert pareto_front(ROWS, METRIC, "removed") == [DENSE, T, L, F]


def test_pareto_front_keeps_equal_points_and_rejects_unknown_axis():
    twin = dict(T, key="twin")
    assert pareto_front([DENSE, T, twin], METRIC) == [T, twin, DENSE]
    with pytest.raises(ValueError, match="x must be one of"):
        pareto_front(ROWS, METRIC, "memory")
