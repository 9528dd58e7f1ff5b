"""Measured cost of a configuration: the dict's contents, the decode loop, the speedup table (no timing checks)."""

import json

import pytest
import torch

from lmms_topo_plugin.calibration.collect import move_inputs
from lmms_topo_plugin.config.prune import LoadConfig
from lmms_topo_plugin.models.loading import load_config, load_model
from lmms_topo_plugin.models.prompting import encode
from lmms_topo_plugin.search.measure import (
    COST_KEYS,
    default_cost_prompt,
    greedy_tokens,
    measure_cost,
    speedup_table,
)
from lmms_topo_plugin.surgery.layers import remove_layers
from table import REPRESENTATIVE_FAMILIES


def _load(path):
    return load_model(LoadConfig(device="cpu"), str(path), load_config(str(path)))


def _inputs(loaded, prompt):
    return move_inputs(encode(loaded.processor, loaded.adapter, [prompt]), "cpu", loaded.model.dtype)


def _parameter_count(module):
    return sum(parameter.numel() for parameter in module.parameters())


def test_cost_of_dense_and_pruned_model(tiny_checkpoints):
    loaded = _load(tiny_checkpoints("llava", 6))
    prompt = default_cost_prompt()
    dense_parameters = _parameter_count(loaded.model)

    dense = measure_cost(loaded, prompt, repeats=2, warmup=0, decode_tokens=2)
    assert set(dense) == set(COST_KEYS)
    assert dense["num_layers"] == 6
    assert dense["parameters"] == dense_parameters
    assert dense["prefill_tokens"] == encode(loaded.processor, loaded.adapter, [prompt])["input_ids"].shape[1]
    assert dense["repeats"] == 2 and dense["device"] == "cpu" and dense["memory_kind"] == "cpu_rss_peak"
    assert dense["prefill_s"] > 0 and dense["decode_s_per_token"] > 0 and dense["peak_memory_bytes"] > 0

    removed = [1, 4]
    removed_parameters = sum(_parameter_count(loaded.adapter.layers[i]) for i in removed)
    remove_layers(loaded.adapter, removed)
    pruned = measure_cost(loaded, prompt, repeats=1, warmup=0, decode_tokens=1)
    assert set(pruned) == set(COST_KEYS)
    assert pruned["num_layers"] == 4
    assert pruned["parameters"] == dense_parameters - removed_parameters
    assert pruned["prefill_tokens"] == dense["prefill_tokens"]


def test_cost_dict_is_json_ready(tiny_checkpoints):
    cost = measure_cost(_load(tiny_checkpoints("llava", 6)), default_cost_prompt(), repeats=1, warmup=0,
                        decode_tokens=1)
    assert json.loads(json.dumps(cost)) == cost


@pytest.mark.parametrize("family", REPRESENTATIVE_FAMILIES)
def test_decode_loop_matches_greedy_generate(tiny_checkpoints, family):
    loaded = _load(tiny_checkpoints(family, 6))
    inputs = _inputs(loaded, default_cost_prompt())
    new_tokens = 6
    tokens = greedy_tokens(loaded.model, inputs, new_tokens)
    assert tokens.shape == (1, new_tokens)
    with torch.inference_mode():
        # the tiny checkpoints suppress special tokens in their generation config; the loop is plain argmax
        output = loaded.model.generate(**inputs, do_sample=False, max_new_tokens=new_tokens, suppress_tokens=None)
    generated = output[:, inputs["input_ids"].shape[1]:]
    assert generated.shape[1] >= 1
    assert tokens[:, : generated.shape[1]].tolist() == generated.tolist()
    if generated.shape[1] < new_tokens:  # generate stopped at eos
        assert generated[0, -1].item() == loaded.processor.tokenizer.eos_token_id


def test_decode_loop_after_layer_removal_matches_generate(tiny_checkpoints):
    loaded = _load(tiny_checkpoints("llava", 6))
    remove_layers(loaded.adapter, [0, 2, 5])
    inputs = _inputs(loaded, default_cost_prompt())
    tokens = greedy_tokens(loaded.model, inputs, 4)
    with torch.inference_mode():
        output = loaded.model.generate(**inputs, do_sample=False, max_new_tokens=4, suppress_tokens=None)
    generated = output[:, inputs["input_ids"].shape[1]:]
    assert tokens[:, : generated.shape[1]].tolist() == generated.tolist()


def test_measurement_rejects_batches_and_bad_counts(tiny_checkpoints):
    loaded = _load(tiny_checkpoints("llava", 6))
    prompt = default_cost_prompt()
    with pytest.raises(ValueError, match="at least 1"):
        greedy_tokens(loaded.model, _inputs(loaded, prompt), 0)
    batch = move_inputs(encode(loaded.processor, loaded.adapter, [prompt, prompt]), "cpu", loaded.model.dtype)
    with pytest.raises(ValueError, match="one unpadded prompt"):
        greedy_tokens(loaded.model, batch, 2)
    with pytest.raises(ValueError, match="repeats"):
        measure_cost(loaded, prompt, repeats=0)


def test_default_cost_prompt_is_fixed():
    first, second = default_cost_prompt(), default_cost_prompt()
    assert first.messages == second.messages
    assert len(first.images) == 1
    assert first.images[0].tobytes() == second.images[0].tobytes()


def test_speedup_table_on_hand_made_costs():
    dense = {"prefill_s": 2.0, "decode_s_per_token": 0.5, "num_layers": 24, "peak_memory_bytes": 1000}
    pruned = {"prefill_s": 1.25, "decode_s_per_token": 0.3125, "num_layers": 12, "peak_memory_bytes": 600}
    assert speedup_table(dense, pruned) == {
        "prefill_speedup": 1.6,
        "decode_speedup": 1.6,
        "ideal_speedup": 2.0,
        "prefill_of_ideal": 0.8,
        "decode_of_ideal": 0.8,
        "memory_ratio": 0.6,
    }
    assert speedup_table(dense, dense) == {
        "prefill_speedup": 1.0, "decode_speedup": 1.0, "ideal_speedup": 1.0,
        "prefill_of_ideal": 1.0, "decode_of_ideal": 1.0, "memory_ratio": 1.0,
    }
