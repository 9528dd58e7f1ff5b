"""CoMP (method=comp) on tiny models: its FLOPs model against the decoder's analytic count, its token importance
against the model's own attention, and the search: the target met, the same plan from the same seed, the
pruned model equal to the masked dense one it was chosen on, bad arguments refused with one line."""

import copy
from contextlib import ExitStack

import pytest
import torch

from lmms_topo_plugin.api import load_pruned
from lmms_topo_plugin.calibration.collect import move_inputs
from lmms_topo_plugin.config.prune import PruneConfig
from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.exporters.onnx.build import validation_prompts
from lmms_topo_plugin.integrations.lmms_eval.model import recorded_token_pruner
from lmms_topo_plugin.models.prompting import encode
from lmms_topo_plugin.pipeline import prepare
from lmms_topo_plugin.scorers.comp.config import CompConfig
from lmms_topo_plugin.scorers.comp.flops import FlopsModel, measure_load
from lmms_topo_plugin.scorers.comp.preflight import estimated_flops
from lmms_topo_plugin.scorers.comp.search import search_sites
from lmms_topo_plugin.surgery.widths import width_masks, width_sites
from lmms_topo_plugin.tokens import CollaborativeTokens
from lmms_topo_plugin.tokens.base import kept_count
from lmms_topo_plugin.tokens.flops import layer_prefill_flops
from lmms_topo_plugin.tokens.methods import received_attention
from table import FAMILIES

COMP_ARGS = {"method": "comp", "device": "cpu", "calib_limit": "10", "comp_val": "3", "comp_step": "0.1"}


def dense(tiny_checkpoints, family="llava", attn="sdpa"):
    return load_pruned({"pretrained": str(tiny_checkpoints(family, 4)), "device": "cpu",
                        "attn_implementation": attn})[0]


def one_prompt(loaded, index=0):
    batch = encode(loaded.processor, loaded.adapter, [validation_prompts()[index]])
    return move_inputs(batch, loaded.model.device, loaded.model.dtype)


def text_config_with(config, heads: int, kv_heads: int, channels: int):
    changed = copy.deepcopy(config)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    changed.num_attention_heads, changed.num_key_value_heads = heads, kv_heads
    changed.intermediate_size, changed.head_dim = channels, head_dim
    return changed


def test_the_flops_model_counts_the_decoder_as_the_analytic_model_does(tiny_checkpoints):
    loaded = dense(tiny_checkpoints)
    batch = one_prompt(loaded)
    sites = width_sites(loaded.adapter)
    visual = loaded.adapter.image_token_mask(batch["input_ids"])
    flops = FlopsModel(sites, [measure_load(loaded.model, sites, batch, visual)], token_layer=2)
    text = loaded.adapter.text_config
    length, count = batch["input_ids"].shape[1], int(visual.sum())
    units = {"text.1.attn": 1, "text.1.mlp": 20, "text.3.mlp": 7}
    keep = 0.25
    kept = length - (count - kept_count(count, keep))
    per_layer = []
    for layer in range(text.num_hidden_layers):
        groups = units.get(f"text.{layer}.attn", text.num_key_value_heads)
        heads = groups * text.num_attention_heads // text.num_key_value_heads
        changed = text_config_with(text, heads, groups, units.get(f"text.{layer}.mlp", text.intermediate_size))
        per_layer.append(layer_prefill_flops(changed, length if layer < 2 else kept))
    decoder = sum(value for name, value in flops.site_flops(units, keep).items() if name.startswith("text."))
    assert decoder == sum(per_layer)


def test_the_collaborative_token_importance_is_the_models_own_attention(tiny_checkpoints):
    loaded = dense(tiny_checkpoints, attn="eager")
    batch = one_prompt(loaded)
    layer = 2
    captured = {}

    def keep_input(module, args, kwargs):
        captured["hidden"] = kwargs.get("hidden_states", args[0] if args else None)
        captured["rotary"] = kwargs["position_embeddings"]

    handle = loaded.adapter.layers[layer].register_forward_pre_hook(keep_input, with_kwargs=True)
    try:
        with torch.inference_mode():
            attention = loaded.model(**batch, use_cache=False, output_attentions=True).attentions[layer]
    finally:
        handle.remove()
    calls = loaded.adapter.layer_adapter(layer)
    for heads in (None, (0, 3)):
        voting = attention if heads is None else attention[:, list(heads)]
        expected = voting.amax(dim=1).sum(dim=1)
        with torch.inference_mode():
            got = received_attention(calls, captured["hidden"], captured["rotary"], heads)
        torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def searched(tiny_checkpoints):
    """A 40% comp run on tiny LLaVA: the pruned model and its report."""
    pretrained = str(tiny_checkpoints("llava", 4))
    return pretrained, *load_pruned({"pretrained": pretrained, **COMP_ARGS, "sparsity": "0.4"})


def test_the_search_removes_the_flops_asked_for(searched):
    _, _, report = searched
    summary = report.plan["scores"]
    assert summary["rate"] >= 0.4 and summary["flops_pruned"] < summary["flops_dense"]
    kinds = {action["kind"] for action in report.plan["actions"]}
    assert "slice_widths" in kinds
    assert all(row["rate"] <= summary["rate"] for row in summary["history"])
    assert report.parameters_after < report.parameters_before


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_prunes_to_the_target_as_its_masked_dense_model(family, tiny_checkpoints):
    """The pruned model (sliced, its token pruner from the record) equals the dense one under the masks and token
    pruner the search chose it with."""
    pretrained = str(tiny_checkpoints(family, 4))
    pruned, report = load_pruned({"pretrained": pretrained, **COMP_ARGS, "sparsity": "0.4"})
    assert report.plan["scores"]["rate"] >= 0.4
    actions = {action["kind"]: action for action in report.plan["actions"]}
    original = dense(tiny_checkpoints, family)
    batch = one_prompt(original, 1)
    tokens = actions.get("prune_visual_tokens")
    with ExitStack() as stack, torch.inference_mode():
        stack.enter_context(width_masks(original.adapter, actions["slice_widths"]["kept"]))
        if tokens:
            stack.enter_context(CollaborativeTokens(layer=tokens["layer"], keep=tokens["keep"]).attach(original.adapter))
        expected = original.model(**batch, use_cache=False).logits
    pruner = recorded_token_pruner(pruned)
    with ExitStack() as stack, torch.inference_mode():
        if pruner is not None:
            stack.enter_context(pruner.attach(pruned.adapter))
        got = pruned.model(**batch, use_cache=False).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_the_same_seed_gives_the_same_plan_from_the_cache_and_without_it(searched, tiny_checkpoints):
    pretrained, _, report = searched
    again = load_pruned({"pretrained": pretrained, **COMP_ARGS, "sparsity": "0.4", "recompute": "true"})[1]
    assert again.plan["actions"] == report.plan["actions"]
    cached = load_pruned({"pretrained": pretrained, **COMP_ARGS, "sparsity": "0.4"})[1]
    assert cached.cache["widths_hit"] and cached.plan["actions"] == report.plan["actions"]


@pytest.mark.parametrize("extra,message", [
    ({"n_remove": "2"}, "model_args: method=comp removes no layers: give sparsity= (the fraction of the dense "
                        "model's prefill FLOPs to remove), not n_remove="),
    ({"sparsity": "0.3", "token_method": "fastv"}, "model_args: method=comp chooses its own visual-token pruning "
                                                   "(comp: by its schedule; a width-only method: none): drop "
                                                   "token_method=fastv"),
    ({"sparsity": "0.3", "comp_modes": "vision_params:heads"}, "model_args: comp_modes='vision_params:heads' is not "
     "valid; expected ':'-separated modes among vision_params, language_params, projector_params, vision_tokens, "
     "each once"),
    ({"sparsity": "0.3", "comp_token_layer": "4"}, "model_args: comp_token_layer=4 is out of range; the model has 4 "
                                                   "decoder layers"),
    ({"sparsity": "0.3", "calib_limit": "5", "comp_val": "3"}, "model_args: method=comp needs at least 6 calibration "
                                                               "samples, calib_limit=5"),
])
def test_bad_comp_arguments_are_refused_before_loading(extra, message, tiny_checkpoints):
    with pytest.raises(ModelArgsError) as error:
        prepare(PruneConfig.from_model_args({"pretrained": str(tiny_checkpoints("llava", 4)), **COMP_ARGS, **extra}))
    assert str(error.value) == message


def test_an_unreachable_rate_is_refused_before_loading(tiny_checkpoints, monkeypatch):
    monkeypatch.setattr("lmms_topo_plugin.models.loading.AutoModelForImageTextToText.from_pretrained",
                        lambda *args, **kwargs: pytest.fail("weights loaded"))
    with pytest.raises(ModelArgsError, match=r"^model_args: sparsity=0\.99 is not reachable by method=comp on this "
                                             r"model with comp_modes=language_params and comp_widths=per_layer: at "
                                             r"most 0\.\d+ of the prefill FLOPs can go$"):
        prepare(PruneConfig.from_model_args({"pretrained": str(tiny_checkpoints("llava", 4)), **COMP_ARGS,
                                             "sparsity": "0.99", "comp_modes": "language_params"}))


def assert_flops_estimated_as_measured(pretrained: str, layout: str) -> None:
    """The FLOPs model built before loading (narrow copy, meta shapes) is the one measured on the loaded model."""
    loaded = load_pruned({"pretrained": pretrained, "device": "cpu"})[0]
    params = CompConfig(comp_widths=layout)
    prompts = validation_prompts()[:3]
    sites = search_sites(loaded.adapter, layout)
    batches = [move_inputs(encode(loaded.processor, loaded.adapter, [prompt]), "cpu", torch.float32)
               for prompt in prompts]
    measured = FlopsModel(sites, [measure_load(loaded.model, sites, batch, loaded.adapter.image_token_mask(
        batch["input_ids"])) for batch in batches], params.comp_token_layer)
    estimated, estimated_sites, _ = estimated_flops(pretrained, loaded.model.config, prompts, params)
    assert [site.name for site in estimated_sites] == [site.name for site in sites]
    assert estimated.dense_units == measured.dense_units
    assert estimated.fixed == measured.fixed
    assert estimated.unit_flops() == measured.unit_flops() and estimated.unit_flops(0.5) == measured.unit_flops(0.5)


@pytest.mark.parametrize("layout", ["per_layer", "uniform"])
@pytest.mark.parametrize("family", FAMILIES)
def test_the_flops_model_before_loading_is_the_loaded_models(family, layout, tiny_checkpoints):
    assert_flops_estimated_as_measured(str(tiny_checkpoints(family, 4)), layout)


def test_the_flops_model_before_loading_a_per_layer_checkpoint_is_the_loaded_models(searched, tmp_path):
    _, pruned, _ = searched
    pruned.model.save_pretrained(tmp_path)
    pruned.processor.save_pretrained(tmp_path)
    assert_flops_estimated_as_measured(str(tmp_path), "per_layer")


@pytest.mark.parametrize("method", ["wanda_widths", "random_widths"])
def test_the_width_only_baselines_prune_parameters_alone_to_the_budget(method, tiny_checkpoints):
    pretrained = str(tiny_checkpoints("llava", 4))
    args = {"pretrained": pretrained, "method": method, "sparsity": "0.3", "device": "cpu", "calib_limit": "10",
            "comp_val": "3", "comp_step": "0.1"}
    _, report = load_pruned(args)
    summary = report.plan["scores"]
    assert summary["rate"] >= 0.3 and summary["token_keep"] is None
    assert [action["kind"] for action in report.plan["actions"]] == ["slice_widths"]
    assert {row["why"] for row in summary["history"]} == {"turn"}  # no schedule: modes in turn
    assert load_pruned({**args, "recompute": "true"})[1].plan["actions"] == report.plan["actions"]
    if method == "random_widths":  # the seed draws the order (it also draws the calibration prompts)
        assert load_pruned({**args, "seed": "1"})[1].plan["actions"] != report.plan["actions"]


@pytest.mark.parametrize("layout", ["per_layer", "uniform"])
def test_comp_multiple_leaves_every_pruned_channel_count_a_multiple(layout, tiny_checkpoints):
    pretrained = str(tiny_checkpoints("llava", 4))
    _, report = load_pruned({"pretrained": pretrained, **COMP_ARGS, "sparsity": "0.4", "comp_multiple": "8",
                             "comp_widths": layout, "comp_modes": "language_params:vision_params"})
    summary = report.plan["scores"]
    kept = next(action for action in report.plan["actions"] if action["kind"] == "slice_widths")["kept"]
    channels = {name: len(units) for name, units in kept.items() if name.endswith(".mlp") or name == "projector"}
    pruned = {name: count for name, count in channels.items() if count < summary["dense_units"][name]}
    assert pruned and summary["rate"] >= 0.4
    assert all(count % 8 == 0 for count in pruned.values()), pruned
    assert all(summary["dense_units"][name] % 8 == 0 for name in pruned)  # so the dense widths were multiples too
