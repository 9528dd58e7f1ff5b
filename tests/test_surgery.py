"""Honest surgery, per architecture family (METHODS.md section 6).

A pruned model must equal the original model with the removed layers skipped, save and reload with
``from_pretrained`` to the same logits, and generate the same tokens with and without the KV cache.
"""

import pytest
import torch
from transformers import AutoModelForImageTextToText

from lmms_topo_plugin.adapters import get_adapter
from lmms_topo_plugin.api import load_pruned
from lmms_topo_plugin.calibration import move_inputs
from lmms_topo_plugin.processors import load_processor
from lmms_topo_plugin.prompting import Prompt, encode
from lmms_topo_plugin.testing.tiny_models import FAMILIES, example_image

NUM_LAYERS = 6


@pytest.fixture(params=FAMILIES)
def tiny_dir(request, tiny_checkpoints):
    return tiny_checkpoints(request.param, NUM_LAYERS)


def prompts():
    return [
        Prompt.from_text("What color is the circle?", [example_image(1)]),
        Prompt.from_text("How many shapes are there in the picture?", [example_image(2)]),
    ]


def logits_of(model, processor, adapter, batch):
    inputs = encode(processor, adapter, batch)
    with torch.inference_mode():
        return model(**move_inputs(inputs, model.device, model.dtype), use_cache=False).logits


def prune(tiny_dir, tmp_path, removed):
    loaded, report = load_pruned(
        {"pretrained": str(tiny_dir), "method": "random", "n_remove": str(len(removed)), "device": "cpu",
         "cache_dir": str(tmp_path / "cache"), "keep_first_last": "false"}
    )
    return loaded, report


def test_pruned_model_equals_original_with_layers_skipped(tiny_dir, tmp_path):
    loaded, report = prune(tiny_dir, tmp_path, [0, 0])
    removed = report.plan["removed_layers"]
    assert len(removed) == 2 and report.kept_layers == [i for i in range(NUM_LAYERS) if i not in removed]

    original = AutoModelForImageTextToText.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    original_adapter = get_adapter(original)
    for index in removed:  # an identity for each removed layer
        original_adapter.layers[index].register_forward_hook(
            lambda module, args, kwargs, output: (args[0] if args else kwargs["hidden_states"]), with_kwargs=True
        )
    expected = logits_of(original, loaded.processor, original_adapter, prompts())
    actual = logits_of(loaded.model, loaded.processor, loaded.adapter, prompts())
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_layer_idx_and_config_are_renumbered(tiny_dir, tmp_path):
    loaded, report = prune(tiny_dir, tmp_path, [0, 0])
    adapter = loaded.adapter
    assert adapter.num_layers == NUM_LAYERS - 2
    indices = [[m.layer_idx for m in layer.modules() if hasattr(m, "layer_idx")] for layer in adapter.layers]
    assert all(ids and set(ids) == {new} for new, ids in enumerate(indices)), indices
    for config in adapter.text_configs:
        assert config.num_hidden_layers == NUM_LAYERS - 2
        if getattr(config, "layer_types", None) is not None:
            assert len(config.layer_types) == NUM_LAYERS - 2
    assert loaded.model.config.topo_pruning["removed_layers"] == report.plan["removed_layers"]


def test_save_and_reload_gives_identical_logits(tiny_dir, tmp_path):
    loaded, _ = prune(tiny_dir, tmp_path, [0, 0, 0])
    loaded.model.save_pretrained(tmp_path / "pruned")
    loaded.processor.save_pretrained(tmp_path / "pruned")
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "pruned", dtype=torch.float32).eval()
    assert reloaded.config.get_text_config().num_hidden_layers == NUM_LAYERS - 3
    reloaded_state = reloaded.state_dict()
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(reloaded_state[name], tensor), name
    processor = load_processor(tmp_path / "pruned")
    torch.testing.assert_close(
        logits_of(reloaded, processor, get_adapter(reloaded), prompts()),
        logits_of(loaded.model, loaded.processor, loaded.adapter, prompts()),
        rtol=0, atol=0,
    )


def test_greedy_generation_same_with_and_without_kv_cache(tiny_dir, tmp_path):
    loaded, _ = prune(tiny_dir, tmp_path, [0, 0])
    inputs = move_inputs(encode(loaded.processor, loaded.adapter, prompts()), "cpu", torch.float32)
    tokenizer = loaded.processor.tokenizer
    outputs = []
    for use_cache in (True, False):
        with torch.inference_mode():
            outputs.append(loaded.model.generate(
                **inputs, max_new_tokens=12, min_new_tokens=12, do_sample=False, use_cache=use_cache,
                pad_token_id=tokenizer.pad_token_id,
            ))
    assert outputs[0].shape[1] == inputs["input_ids"].shape[1] + 12
    assert torch.equal(outputs[0], outputs[1])
