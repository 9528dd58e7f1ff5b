"""The tests' table (tests/table.py) has a row for every layer method, token pruner and family the plugin offers,
and every row's own arguments run: a method added to the product is pruned with here before any other test
parametrizes over it."""

import dataclasses

import pytest

from lmms_topo_plugin.api import load_pruned
from lmms_topo_plugin.families import TINY_MODEL_TYPES
from lmms_topo_plugin.integrations.lmms_eval.model import recorded_token_pruner
from lmms_topo_plugin.scorers.registry import available_methods
from lmms_topo_plugin.tokens import TOKEN_METHODS
from table import FAMILIES, FamilyRow, LAYER_METHODS, TOKEN_CASES, WIDTH_METHODS, families, ids, stale_notes

ARGS_TOKEN_CASES = [case for case in TOKEN_CASES if case.model_args]


def parse(model_args: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in model_args.split(","))


def test_the_table_has_a_row_for_everything_the_product_offers_and_names_nothing_else():
    assert sorted((*LAYER_METHODS, *WIDTH_METHODS)) == available_methods()[1:]  # every method= but the dense none
    assert {case.method for case in TOKEN_CASES} == set(TOKEN_METHODS)
    assert FAMILIES == TINY_MODEL_TYPES
    assert stale_notes() == []
    # every subset a test narrows the families to keeps at least one
    subsets = [spec.name for spec in dataclasses.fields(FamilyRow) if spec.type in (bool, "bool")]
    assert {"representative", "eager", "token_ssr", "halfv_freeze"} <= set(subsets)
    assert all(families(**{subset: True}) for subset in subsets)


@pytest.mark.parametrize("row", LAYER_METHODS.values(), ids=ids(LAYER_METHODS.values()))
def test_every_layer_method_removes_two_layers_of_a_tiny_model_with_its_arguments(row, tiny_checkpoints):
    loaded, report = load_pruned(parse(row.model_args(tiny_checkpoints("llava", 6))))
    removed = report.plan["removed_layers"]
    assert len(removed) == 2 and set(removed) <= {1, 2, 3, 4}  # the first and the last layer are kept
    assert loaded.adapter.num_layers == 4 and report.plan["method"] == row.name
    assert report.calibration.get("samples", 0) == row.samples


@pytest.mark.parametrize("case", ARGS_TOKEN_CASES, ids=ids(ARGS_TOKEN_CASES))
def test_every_token_pruner_case_is_what_its_model_args_attach(case, tiny_checkpoints):
    loaded, _ = load_pruned({"pretrained": str(tiny_checkpoints("llava", 4)), "device": "cpu",
                             **parse(case.model_args)})
    assert recorded_token_pruner(loaded) == case.pruner()
