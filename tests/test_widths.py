"""Width pruning (heads and channels), per architecture family and layout.

A width-pruned model must equal the dense model with the dropped units' outputs zeroed (``width_masks``, the second
code path), save and reload to the same logits (per_layer: through the plugin's loader, which rebuilds the recorded
shapes; uniform: also plain ``from_pretrained``), and generate the same tokens with and without the KV cache.
"""

import json

import pytest
import torch
from transformers import AutoModelForImageTextToText

from lmms_topo_plugin.calibration.collect import move_inputs
from lmms_topo_plugin.config.prune import LoadConfig
from lmms_topo_plugin.errors import ModelLoadError
from lmms_topo_plugin.families import get_adapter
from lmms_topo_plugin.families.tiny import example_image
from lmms_topo_plugin.models.loading import load_config, load_model
from lmms_topo_plugin.models.processors import load_processor
from lmms_topo_plugin.models.prompting import Prompt, encode
from lmms_topo_plugin.records import PRUNING, pruning_record_of, set_pruning_record
from lmms_topo_plugin.surgery.widths import (
    slice_widths, uniform_units, width_masks, width_sites, widths_record, widths_sliced,
)
from table import FAMILIES

NUM_LAYERS = 6
LAYOUTS = ("per_layer", "uniform")
TEXT_HEADS, TEXT_CHANNELS = ("text", "heads"), ("text", "channels")
VISION_CHANNELS = ("vision", "channels")
# What the uniform layout can write into each family's config (the rest derive from other sizes in transformers).
UNIFORM = {
    "llava": {TEXT_HEADS, TEXT_CHANNELS, VISION_CHANNELS},
    "llava_next": {TEXT_HEADS, TEXT_CHANNELS, VISION_CHANNELS},
    "qwen2_vl": {TEXT_CHANNELS},  # decoder head_dim = hidden / heads; vision MLP = embed_dim * integer mlp_ratio
    "qwen2_5_vl": {TEXT_CHANNELS, VISION_CHANNELS},
    "idefics3": {TEXT_HEADS, TEXT_CHANNELS, VISION_CHANNELS},
}


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture
def tiny_dir(family, tiny_checkpoints):
    return tiny_checkpoints(family, NUM_LAYERS)


def load_dense(checkpoint):
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32).eval()
    return model, get_adapter(model)


def some(units: int, count: int, seed: int) -> list[int]:
    """``count`` of ``units`` indices, drawn at random (deterministic in ``seed``)."""
    return torch.randperm(units, generator=torch.Generator().manual_seed(seed))[:count].tolist()


def per_layer_plan(adapter) -> dict[str, list[int]]:
    """A head group dropped in two decoder layers (not the same one), a third of the channels of two decoder MLPs
    and of the projector, a vision head, half of each vision MLP (LLaVA's last vision layer feeds nothing: the
    first one's units matter)."""
    sites = {site.name: site for site in width_sites(adapter)}
    plan = {"text.0.attn": [1], "text.3.attn": [0], "vision.0.attn": [1]}
    for seed, name in enumerate(("text.1.mlp", "text.4.mlp", "projector")):
        if name in sites:
            plan[name] = some(sites[name].units, sites[name].units * 2 // 3, seed)
    for seed, name in enumerate(("vision.0.mlp", "vision.1.mlp")):
        plan[name] = some(sites[name].units, sites[name].units // 2, 7 + seed)
    return plan


def uniform_plan(adapter) -> dict[str, list[int]]:
    """Every site of each width the config can state: one head group (alternating), or two thirds of the channels
    (a different subset per site)."""
    describable = uniform_units(adapter)
    plan = {}
    for seed, site in enumerate(width_sites(adapter)):
        if (site.tower, site.kind) in describable:
            layer = int(site.name.split(".")[1])
            plan[site.name] = [layer % 2] if site.kind == "heads" else some(site.units, site.units * 2 // 3, seed)
    return plan


PLANS = {"per_layer": per_layer_plan, "uniform": uniform_plan}


def mlp_width(stated: dict[str, list[int]], tower: str, unchanged):
    """The MLP width the config states for ``tower`` after the uniform ``stated`` plan (``unchanged`` without)."""
    widths = {len(units) for name, units in stated.items() if name.startswith(f"{tower}.") and name.endswith(".mlp")}
    assert len(widths) <= 1
    return widths.pop() if widths else unchanged


def prompts():
    return [Prompt.from_text("What color is the circle?", [example_image(1)]),
            Prompt.from_text("How many shapes are there in the picture?", [example_image(2)])]


def logits_of(model, processor, adapter):
    inputs = move_inputs(encode(processor, adapter, prompts()), model.device, model.dtype)
    with torch.inference_mode():
        return model(**inputs, use_cache=False).logits


def pruned(tiny_dir, layout):
    """The tiny checkpoint width-pruned by the layout's plan: model, adapter, plan."""
    model, adapter = load_dense(tiny_dir)
    plan = PLANS[layout](adapter)
    slice_widths(adapter, plan, layout)
    set_pruning_record(model.config, PRUNING.stamp({"widths": widths_record(plan, layout)}))
    return model, adapter, plan


@pytest.mark.parametrize("layout", LAYOUTS)
def test_shapes_module_attributes_and_config(tiny_dir, layout):
    dense, dense_adapter = load_dense(tiny_dir)
    before = {site.name: site for site in width_sites(dense_adapter)}
    model, adapter, plan = pruned(tiny_dir, layout)
    assert plan and set(plan) <= set(before)
    for site in width_sites(adapter):
        kept = plan.get(site.name, range(before[site.name].units))
        assert site.units == len(kept), site.name
        assert site.consumer.in_features == site.consumer.weight.shape[1] == len(kept) * site.unit_width
        for producer in site.producers:
            assert producer.linear.out_features == producer.linear.weight.shape[0] == (
                producer.blocks * len(kept) * producer.width), site.name
        original = before[site.name]
        torch.testing.assert_close(site.consumer.weight, original.consumer.weight[:, original.columns(kept)],
                                   rtol=0, atol=0)
        if site.kind == "heads":
            assert getattr(site.module, "num_heads", len(kept) * site.query_heads) == len(kept) * site.query_heads
            assert getattr(site.module, "num_key_value_heads", len(kept)) == len(kept)
        else:
            assert getattr(site.module, "intermediate_size", len(kept)) == len(kept)
    calls = adapter.layer_adapter(0)  # the per-layer view counts the heads the layer has
    assert (calls.num_heads, calls.num_kv_heads) == ((2, 1) if "text.0.attn" in plan else (4, 2))

    dense_text, dense_vision = dense_adapter.text_config, dense.config.vision_config
    stated = plan if layout == "uniform" else {}
    text_heads = any(name.startswith("text.") and name.endswith(".attn") for name in stated)
    for config in adapter.text_configs:
        assert (config.num_attention_heads, config.num_key_value_heads) == (
            (2, 1) if text_heads else (dense_text.num_attention_heads, dense_text.num_key_value_heads))
        assert getattr(config, "head_dim", None) == getattr(dense_text, "head_dim", None)
        assert config.intermediate_size == mlp_width(stated, "text", dense_text.intermediate_size)
    for config in adapter.vision_configs:
        assert getattr(config, "intermediate_size", None) == mlp_width(
            stated, "vision", getattr(dense_vision, "intermediate_size", None))
    assert pruning_record_of(model.config)["widths"] == {"layout": layout,
                                                         "kept": {name: sorted(units) for name, units in plan.items()}}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sliced_for_a_block_is_the_pruned_model_and_dense_again_after(tiny_dir, layout):
    """The sweep's in-place surgery: inside ``widths_sliced`` the model equals a checkpoint pruned for good (logits,
    config), after it the dense model again (exact logits, config, every parameter and count)."""
    processor = load_processor(tiny_dir)
    model, adapter, plan = pruned(tiny_dir, layout)
    dense, dense_adapter = load_dense(tiny_dir)
    before = logits_of(dense, processor, dense_adapter)
    config_before = dense.config.to_dict()
    shapes_before = {name: tuple(parameter.shape) for name, parameter in dense.named_parameters()}
    with widths_sliced(dense_adapter, plan, layout):
        torch.testing.assert_close(logits_of(dense, processor, dense_adapter), logits_of(model, processor, adapter),
                                   rtol=0, atol=0)
        config_pruned = {k: v for k, v in model.config.to_dict().items() if k != "topo_pruning"}
        assert dense.config.to_dict() == config_pruned
    torch.testing.assert_close(logits_of(dense, processor, dense_adapter), before, rtol=0, atol=0)
    assert dense.config.to_dict() == config_before
    assert {name: tuple(parameter.shape) for name, parameter in dense.named_parameters()} == shapes_before


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sliced_model_equals_the_dense_model_with_the_dropped_units_masked(tiny_dir, layout):
    processor = load_processor(tiny_dir)
    model, adapter, plan = pruned(tiny_dir, layout)
    dense, dense_adapter = load_dense(tiny_dir)
    unmasked = logits_of(dense, processor, dense_adapter)
    with width_masks(dense_adapter, plan):
        masked = logits_of(dense, processor, dense_adapter)
    assert not torch.allclose(masked, unmasked, rtol=1e-3, atol=1e-3)  # the plan really changes the model
    torch.testing.assert_close(logits_of(model, processor, adapter), masked, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits_of(dense, processor, dense_adapter), unmasked, rtol=0, atol=0)  # hooks gone


@pytest.mark.parametrize("layout", LAYOUTS)
def test_save_and_reload_gives_identical_logits(tiny_dir, layout, tmp_path):
    processor = load_processor(tiny_dir)
    model, adapter, plan = pruned(tiny_dir, layout)
    model.save_pretrained(tmp_path / "pruned")
    processor.save_pretrained(tmp_path / "pruned")
    expected = logits_of(model, processor, adapter)
    checkpoint = str(tmp_path / "pruned")

    loaded = load_model(LoadConfig(device="cpu"), checkpoint, load_config(checkpoint))
    assert type(loaded.model) is type(model)
    assert {site.name: site.units for site in width_sites(loaded.adapter)} == {
        site.name: site.units for site in width_sites(adapter)}
    torch.testing.assert_close(logits_of(loaded.model, loaded.processor, loaded.adapter), expected, rtol=0, atol=0)

    if layout == "uniform":
        plain, plain_adapter = load_dense(checkpoint)
        torch.testing.assert_close(logits_of(plain, loaded.processor, plain_adapter), expected, rtol=0, atol=0)
    else:  # the config alone does not state these shapes
        with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
            load_dense(checkpoint)


def test_a_record_that_does_not_fit_the_weights_is_refused(tiny_dir, tmp_path):
    model, _, _ = pruned(tiny_dir, "per_layer")
    model.save_pretrained(tmp_path)
    load_processor(tiny_dir).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["topo_pruning"]["widths"]["kept"]["text.0.attn"] = [0, 1]  # the weights keep one group
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"failed to load: ValueError: the weights do not fit the per-layer "
                                             r"widths that config\.json states \(topo_pruning\.widths\)") as error:
        load_model(LoadConfig(device="cpu"), str(tmp_path), load_config(str(tmp_path)))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_greedy_generation_same_with_and_without_kv_cache(tiny_dir, layout):
    processor = load_processor(tiny_dir)
    model, adapter, _ = pruned(tiny_dir, layout)
    inputs = move_inputs(encode(processor, adapter, prompts()), "cpu", torch.float32)
    outputs = []
    for use_cache in (True, False):
        with torch.inference_mode():
            outputs.append(model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False,
                                          use_cache=use_cache, pad_token_id=processor.tokenizer.pad_token_id))
    assert outputs[0].shape[1] == inputs["input_ids"].shape[1] + 5
    assert torch.equal(outputs[0], outputs[1])


def test_uniform_layout_states_only_what_the_config_can(tiny_dir, family):
    _, adapter = load_dense(tiny_dir)
    assert uniform_units(adapter) == UNIFORM[family]
    for site in width_sites(adapter):
        if (site.tower, site.kind) not in UNIFORM[family]:
            with pytest.raises(ValueError, match=rf"uniform layout cannot describe site '{site.name}': \w+") as error:
                slice_widths(adapter, {site.name: [0]}, "uniform")
            assert "\n" not in str(error.value)


def refused(adapter, kept, layout, pattern):
    shapes = {name: tensor.shape for name, tensor in adapter.model.state_dict().items()}
    with pytest.raises(ValueError, match=pattern) as error:
        slice_widths(adapter, kept, layout)
    assert "\n" not in str(error.value)
    assert {name: tensor.shape for name, tensor in adapter.model.state_dict().items()} == shapes  # untouched


def test_bad_kept_is_refused_with_one_line(tiny_dir):
    _, adapter = load_dense(tiny_dir)
    for layout in LAYOUTS:
        refused(adapter, {"text.0.mlp": [0], "text.9.attn": [0]}, layout, r"unknown site 'text.9.attn'; .*text\.")
        refused(adapter, {"text.1.attn": [2]}, layout, r"site 'text.1.attn' keeps \[2\].*distinct, in \[0, 1\]")
        refused(adapter, {"text.1.mlp": [3, 3]}, layout, r"site 'text.1.mlp' keeps \[3, 3\].*distinct")
        refused(adapter, {"text.1.mlp": [-1]}, layout, r"site 'text.1.mlp' keeps \[-1\]")
        refused(adapter, {"vision.0.mlp": [0.5]}, layout, r"site 'vision.0.mlp' .*integers")
        refused(adapter, {"text.2.attn": []}, layout, r"site 'text.2.attn' keeps no units")
    refused(adapter, {"text.0.mlp": [0, 1]}, "stacked", r"unknown layout 'stacked'")
    refused(adapter, {"text.0.mlp": [0, 1], "text.1.mlp": [0, 1]}, "uniform",
            r"every text channels site to keep as many units, but 'text.0.mlp' keeps 2 and 'text.2.mlp' keeps 128")
    with pytest.raises(ValueError, match="keeps no units"), width_masks(adapter, {"text.0.mlp": []}):
        pass
