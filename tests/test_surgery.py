"""Honest surgery, per architecture family (docs/methods/surgery.md §6).

A pruned model must equal the original model with the removed layers skipped, save and reload with
``from_pretrained`` to the same logits, and generate the same tokens with and without the KV cache.
"""

import pytest
import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from lmms_topo_plugin.families import get_adapter
from lmms_topo_plugin.api import load_pruned
from lmms_topo_plugin.calibration.collect import move_inputs
from lmms_topo_plugin.models.processors import load_processor
from lmms_topo_plugin.models.prompting import Prompt, encode
from lmms_topo_plugin.surgery.layers import remove_layers
from lmms_topo_plugin.families.tiny import build_tiny_vlm, example_image
from table import FAMILIES

NUM_LAYERS = 6
FULL, SLIDING = "full_attention", "sliding_attention"


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


def load_original(checkpoint):
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32).eval()
    return model, get_adapter(model)


def logits_with_layers_skipped(checkpoint, processor, removed):
    """The unpruned checkpoint's logits with an identity in place of each layer of ``removed``."""
    original, original_adapter = load_original(checkpoint)
    for index in removed:
        original_adapter.layers[index].register_forward_hook(
            lambda module, args, kwargs, output: (args[0] if args else kwargs["hidden_states"]), with_kwargs=True
        )
    return logits_of(original, processor, original_adapter, prompts())


def layer_indices(adapter):
    return [sorted({m.layer_idx for m in layer.modules() if hasattr(m, "layer_idx")}) for layer in adapter.layers]


def save_and_reload(model, processor, directory):
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    reloaded = AutoModelForImageTextToText.from_pretrained(directory, dtype=torch.float32).eval()
    return reloaded, get_adapter(reloaded), load_processor(directory)


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

    expected = logits_with_layers_skipped(tiny_dir, loaded.processor, removed)
    actual = logits_of(loaded.model, loaded.processor, loaded.adapter, prompts())
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_layer_idx_and_config_are_renumbered(tiny_dir, tmp_path):
    loaded, report = prune(tiny_dir, tmp_path, [0, 0])
    adapter = loaded.adapter
    assert adapter.num_layers == NUM_LAYERS - 2
    assert layer_indices(adapter) == [[new] for new in range(NUM_LAYERS - 2)]
    original = AutoConfig.from_pretrained(tiny_dir).get_text_config()
    kept = report.kept_layers
    for config in adapter.text_configs:
        assert config.num_hidden_layers == NUM_LAYERS - 2
        # per-layer entries: the kept layers' own (Qwen2-VL/2.5-VL have layer_types; the others none)
        original_types = getattr(original, "layer_types", None)
        assert getattr(config, "layer_types", None) == (
            None if original_types is None else [original_types[i] for i in kept])
        # the threshold counts the kept layers below it: 80 (> every index) becomes the new layer count
        assert getattr(config, "max_window_layers", None) == (
            None if getattr(original, "max_window_layers", None) is None else NUM_LAYERS - 2)
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


@pytest.mark.parametrize("removed", [[0], [NUM_LAYERS - 1], [0, NUM_LAYERS - 1]], ids=["first", "last", "both"])
def test_removing_the_first_or_the_last_layer(tiny_dir, removed, tmp_path):
    model, adapter = load_original(tiny_dir)
    processor = load_processor(tiny_dir)
    kept = remove_layers(adapter, removed)
    assert kept == [i for i in range(NUM_LAYERS) if i not in removed]
    assert adapter.num_layers == len(kept) and layer_indices(adapter) == [[new] for new in range(len(kept))]
    actual = logits_of(model, processor, adapter, prompts())
    torch.testing.assert_close(actual, logits_with_layers_skipped(tiny_dir, processor, removed), rtol=1e-5, atol=1e-5)

    reloaded, reloaded_adapter, reloaded_processor = save_and_reload(model, processor, tmp_path / "pruned")
    assert reloaded.config.get_text_config().num_hidden_layers == len(kept)
    assert layer_indices(reloaded_adapter) == [[new] for new in range(len(kept))]
    torch.testing.assert_close(logits_of(reloaded, reloaded_processor, reloaded_adapter, prompts()), actual,
                               rtol=0, atol=0)


def test_removing_nothing_or_bad_indices():
    class Adapter:  # remove_layers must refuse before it touches the model
        num_layers = 4

    for bad in ([4], [-1], [1, 1]):
        with pytest.raises(ValueError, match=r"distinct indices in \[0, 3\]"):
            remove_layers(Adapter(), bad)
    with pytest.raises(ValueError, match="cannot remove every decoder layer"):
        remove_layers(Adapter(), [0, 1, 2, 3])
    assert remove_layers(Adapter(), []) == [0, 1, 2, 3]


# --- sliding-window attention: per-layer types and the max_window_layers threshold --------------------------------

SLIDING_WINDOW = 4  # tokens; the prompts are longer, so a sliding layer sees less than a full one
MAX_WINDOW_LAYERS = 3  # Qwen2-VL: layers 0..2 full attention, 3..5 sliding


@pytest.fixture(scope="module")
def sliding_qwen(tmp_path_factory):
    overrides = dict(use_sliding_window=True, sliding_window=SLIDING_WINDOW, max_window_layers=MAX_WINDOW_LAYERS)
    return build_tiny_vlm("qwen2_vl", tmp_path_factory.mktemp("qwen2_vl_sliding"), num_layers=NUM_LAYERS,
                          text_overrides=overrides)


def test_sliding_layers_change_the_logits(sliding_qwen):
    """The fixture really mixes both kinds of layer, and the kind changes the output (else the tests below prove
    nothing)."""
    model, adapter = load_original(sliding_qwen)
    assert adapter.text_config.layer_types == [FULL] * 3 + [SLIDING] * 3
    assert adapter.text_model.has_sliding_layers is True
    processor = load_processor(sliding_qwen)
    sliding = logits_of(model, processor, adapter, prompts())
    for config in adapter.text_configs:
        config.layer_types = [FULL] * NUM_LAYERS
    all_full = logits_of(model, processor, adapter, prompts())
    assert not torch.allclose(sliding, all_full, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    ("removed", "layer_types", "max_window_layers", "has_sliding_layers"),
    [
        ([0, 4], [FULL, FULL, SLIDING, SLIDING], 2, True),  # kept 1, 2 below the old threshold 3
        ([3, 4, 5], [FULL, FULL, FULL], 3, False),  # every sliding layer removed
        ([0, 1, 2], [SLIDING, SLIDING, SLIDING], 0, True),  # every full layer removed
        ([2, 3], [FULL, FULL, SLIDING, SLIDING], 2, True),  # the layers on both sides of the threshold
    ],
)
def test_sliding_layer_types_and_max_window_layers_follow_the_kept_layers(
    sliding_qwen, tmp_path, removed, layer_types, max_window_layers, has_sliding_layers
):
    model, adapter = load_original(sliding_qwen)
    processor = load_processor(sliding_qwen)
    remove_layers(adapter, removed)
    for config in adapter.text_configs:
        assert config.layer_types == layer_types
        assert config.max_window_layers == max_window_layers
        assert config.num_hidden_layers == len(layer_types)
    assert adapter.text_model.has_sliding_layers is has_sliding_layers
    actual = logits_of(model, processor, adapter, prompts())
    torch.testing.assert_close(actual, logits_with_layers_skipped(sliding_qwen, processor, removed),
                               rtol=1e-5, atol=1e-5)

    reloaded, reloaded_adapter, reloaded_processor = save_and_reload(model, processor, tmp_path / "pruned")
    text_config = reloaded_adapter.text_config
    assert (text_config.layer_types, text_config.max_window_layers) == (layer_types, max_window_layers)
    assert reloaded_adapter.text_model.has_sliding_layers is has_sliding_layers
    torch.testing.assert_close(logits_of(reloaded, reloaded_processor, reloaded_adapter, prompts()), actual,
                               rtol=0, atol=0)
