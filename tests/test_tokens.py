"""Visual-token pruners (FastV, random) on tiny models of every family: what they keep, where, and that the
model with them attached still generates consistently and is exactly dense again once they detach."""

import json

import pytest
import torch

from lmms_topo_plugin.api import load_pruned
from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.exporters.onnx.build import validation_prompts
from lmms_topo_plugin.models.prompting import encode
from lmms_topo_plugin.tokens import FastV, HalfV, RandomTokens
from table import FAMILIES, TOKEN_CASES, families

NEW_TOKENS = 6


def loaded_model(tiny_checkpoints, family: str, attn: str = "sdpa"):
    return load_pruned({"pretrained": str(tiny_checkpoints(family, 4)), "device": "cpu", "attn_implementation": attn})[0]


def pruned_forward(loaded, pruner, inputs, layer: int = 1):
    """One forward with ``pruner`` attached: the dense input of decoder layer ``layer`` (kept by a pre-hook that
    runs before the pruner's), the pruner's state and the logits."""
    calls, captured = loaded.adapter.layer_adapter(layer), {}

    def keep_input(module, args, kwargs):
        captured.setdefault("input", calls.hidden_states(args, kwargs))

    handle = loaded.adapter.layers[layer].register_forward_pre_hook(keep_input, with_kwargs=True)
    try:
        with pruner.attach(loaded.adapter) as state, torch.inference_mode():
            logits = loaded.model(**inputs, use_cache=False).logits
    finally:
        handle.remove()
    return captured["input"], state, logits


def greedy(model, inputs, **kwargs) -> torch.Tensor:
    return model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, **kwargs)[:, -NEW_TOKENS:]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("pruner", [case.pruner() for case in TOKEN_CASES], ids=[case.id for case in TOKEN_CASES])
def test_a_pruned_batch_generates_alike_with_and_without_cache_and_as_single_prompts(pruner, family, attn,
                                                                                       tiny_checkpoints):
    if attn == "eager" and family not in families(eager=True):
        pytest.skip("eager is checked on one Llama and one M-RoPE family")
    if getattr(pruner, "ssr_mode", "off") != "off" and family not in families(token_ssr=True):
        pytest.skip("HalfV's step 2 is checked on a Llama, an M-RoPE and an Idefics3 decoder")
    loaded = loaded_model(tiny_checkpoints, family, attn)
    prompts = validation_prompts()  # two prompts of different lengths: a left-padded batch
    batch = encode(loaded.processor, loaded.adapter, prompts)
    with torch.inference_mode():
        dense_logits = loaded.model(**batch, use_cache=False).logits
    visual = loaded.adapter.image_token_mask(batch["input_ids"]).sum(dim=1)
    with pruner.attach(loaded.adapter) as state, torch.inference_mode():
        cached = greedy(loaded.model, batch)
        length, kept = state["prompt"].counts[0]
        uncached = greedy(loaded.model, batch, use_cache=False)
        singles = [greedy(loaded.model, encode(loaded.processor, loaded.adapter, [prompt]))[0] for prompt in prompts]
    dropped = min(int(count) - int(count * pruner.keep) for count in visual)
    assert (length, kept) == (batch["input_ids"].shape[1], batch["input_ids"].shape[1] - dropped) and dropped > 0
    assert torch.equal(cached, uncached)
    assert all(torch.equal(cached[row], single) for row, single in enumerate(singles))
    with torch.inference_mode():
        assert torch.equal(loaded.model(**batch, use_cache=False).logits, dense_logits)  # detached: dense again


def test_the_cache_holds_the_reduced_sequence_from_the_pruning_layer_on(tiny_checkpoints):
    loaded = loaded_model(tiny_checkpoints, "qwen2_vl")
    inputs = encode(loaded.processor, loaded.adapter, validation_prompts()[:1])
    with FastV(layer=2, keep=0.25).attach(loaded.adapter) as state, torch.inference_mode():
        cache = loaded.model(**inputs, use_cache=True).cache
    length, kept = state["prompt"].counts[0]
    assert [cache.get_seq_length(layer) for layer in range(4)] == [length, length, kept, kept]


def test_kept_tokens_keep_their_positions(tiny_checkpoints):
    """The pruned model's last logits equal layers 1..3 run by hand on the kept tokens with rotary embeddings
    recomputed from their original positions."""
    loaded = loaded_model(tiny_checkpoints, "llava")
    adapter, model = loaded.adapter, loaded.model
    inputs = encode(loaded.processor, adapter, validation_prompts()[:1])
    dense_input, state, logits = pruned_forward(loaded, FastV(layer=1, keep=0.25), inputs)
    pruned = logits[0, -1]
    index = state["prompt"].keep_index[0]
    with torch.inference_mode():
        hidden = dense_input[:, index]
        embeddings = adapter.rotary_emb(hidden, position_ids=index[None])
        for layer in adapter.layers[1:]:
            hidden = layer(hidden, attention_mask=None, position_embeddings=embeddings, position_ids=index[None])
        by_hand = model.lm_head(adapter.final_norm(hidden))[0, -1]
    torch.testing.assert_close(pruned, by_hand, atol=1e-5, rtol=0)


def test_fastv_keeps_the_visual_tokens_the_last_token_attends_to_most(tiny_checkpoints):
    loaded = loaded_model(tiny_checkpoints, "llava")
    inputs = encode(loaded.processor, loaded.adapter, validation_prompts()[:1])
    dense_input, state, _ = pruned_forward(loaded, FastV(layer=1, keep=0.25), inputs)
    visual = loaded.adapter.image_token_mask(inputs["input_ids"])[0]
    with torch.inference_mode():  # eager attention weights of the last token over the visual keys, by hand
        normed = loaded.adapter.layers[1].input_layernorm(dense_input)[0]
        attention = loaded.adapter.layers[1].self_attn
        heads = loaded.adapter.text_config.num_attention_heads
        query = attention.q_proj(normed[-1]).view(heads, -1)
        keys = attention.k_proj(normed[visual]).view(int(visual.sum()), -1, query.shape[-1])
        keys = keys.repeat_interleave(heads // keys.shape[1], dim=1)
        weights = torch.softmax(torch.einsum("hd,vhd->hv", query, keys) / query.shape[-1] ** 0.5, dim=-1).mean(0)
    positions = visual.nonzero()[:, 0]
    expected = sorted(positions[weights.topk(int(visual.sum()) // 4).indices].tolist())
    kept = state["prompt"].keep_index[0]
    assert sorted(set(kept.tolist()) & set(positions.tolist())) == expected


def uneven_prompts():
    """A left-padded batch whose rows have different numbers of visual tokens (two images, one image)."""
    from lmms_topo_plugin.models.prompting import Prompt
    from lmms_topo_plugin.families.tiny import example_image

    return [Prompt.from_text("Compare them.", [example_image(1), example_image(2)]),
            Prompt.from_text("How many shapes are in this picture? Answer with one word.", [example_image(3)])]


@pytest.mark.parametrize("family", families(halfv_freeze=True))
def test_halfv_freeze_runs_deep_layers_on_the_other_tokens_only(tiny_checkpoints, family):
    """From the SSR layer on, the layers compute queries only for the non-visual tokens (topped up to the row with
    the most), with every kept token in the cache; generation equals the same freezing without a cache (the layers
    run on every token and the visual states are put back)."""
    loaded = loaded_model(tiny_checkpoints, family)
    prompts = uneven_prompts()
    batch = encode(loaded.processor, loaded.adapter, prompts)
    visual = loaded.adapter.image_token_mask(batch["input_ids"])
    assert visual.sum(dim=1).unique().numel() == 2
    pruner = HalfV(layer=1, keep=0.5, anchor=0.2, ssr_layer=2, ssr_mode="freeze")
    with pruner.attach(loaded.adapter) as state, torch.inference_mode():
        output = loaded.model(**batch, use_cache=True)
        cache, logits = output.cache, output.logits[:, -1]
        prompt = state["prompt"]
        kept = prompt.keep_index.shape[1]
        others = int((~prompt.visual.gather(1, prompt.keep_index)).sum(dim=1).max())
        seen = dict(prompt.seen)
        cached = greedy(loaded.model, batch)
        uncached = greedy(loaded.model, batch, use_cache=False)
        uncached_logits = loaded.model(**batch, use_cache=False).logits[:, -1]
    with HalfV(layer=1, keep=0.5, anchor=0.2).attach(loaded.adapter), torch.inference_mode():
        step_1_logits = loaded.model(**batch, use_cache=False).logits[:, -1]
    torch.testing.assert_close(logits, uncached_logits, atol=1e-5, rtol=0)
    assert (logits - step_1_logits).abs().max() > 1e-3  # freezing changes the model
    length = batch["input_ids"].shape[1]
    assert seen == {1: (kept, kept), 2: (others, kept), 3: (others, kept)} and others < kept < length
    assert [cache.get_seq_length(layer) for layer in range(4)] == [length, kept, kept, kept]
    assert torch.equal(cached, uncached)


def test_halfv_top5_keeps_the_visual_tokens_with_the_most_rotary_attention(tiny_checkpoints):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    loaded = loaded_model(tiny_checkpoints, "llava")
    adapter = loaded.adapter
    inputs = encode(loaded.processor, adapter, validation_prompts()[:1])
    pruner = HalfV(layer=1, keep=0.5, anchor=0.2, ssr_layer=2, ssr_mode="top5", ssr_keep=0.25)
    ssr_input, state, _ = pruned_forward(loaded, pruner, inputs, layer=2)  # already reduced by step 1
    prompt = state["prompt"]
    step_1, step_2 = prompt.stages
    visual = prompt.visual[0, step_1[0]]
    with torch.inference_mode():  # by hand: rotary queries and keys at the original positions
        attention, heads = adapter.layers[2].self_attn, adapter.text_config.num_attention_heads
        normed = adapter.layers[2].input_layernorm(ssr_input)
        query = attention.q_proj(normed).view(1, len(step_1[0]), heads, -1).transpose(1, 2)
        keys = attention.k_proj(normed).view(1, len(step_1[0]), -1, query.shape[-1]).transpose(1, 2)
        cos, sin = adapter.rotary_emb(ssr_input, position_ids=step_1)
        query, keys = apply_rotary_pos_emb(query, keys.repeat_interleave(heads // keys.shape[1], dim=1), cos, sin)
        scores = torch.einsum("hd,hvd->hv", query[0, :, -1], keys[0][:, visual]) / query.shape[-1] ** 0.5
        weights = scores.softmax(dim=-1).mean(0)
    original = int(prompt.visual[0].sum())
    expected = sorted(step_1[0][visual][weights.topk(int(original * 0.25)).indices].tolist())
    assert sorted(set(step_2[0].tolist()) - set((~prompt.visual[0]).nonzero()[:, 0].tolist())) == expected
    assert prompt.counts == [(inputs["input_ids"].shape[1], len(step_1[0])), (len(step_1[0]), len(step_2[0]))]


@pytest.mark.parametrize("make,message", [
    (lambda: FastV(layer=2, keep=0.0), "model_args: token_keep=0.0 is not valid; expected a float in (0, 1]"),
    (lambda: FastV(layer=0, keep=0.5), "model_args: token_layer=0 is out of range; expected an int >= 1 (layer 0's KV cache "
                             "must hold the whole prompt: generation sizes its mask by it)"),
])
def test_bad_pruner_parameters_are_named(make, message):
    with pytest.raises(ModelArgsError) as error:
        make()
    assert str(error.value) == message


def test_a_layer_beyond_the_decoder_is_refused(tiny_checkpoints):
    loaded = loaded_model(tiny_checkpoints, "llava")
    with pytest.raises(ModelArgsError, match=r"token_layer=4 is out of range; the model has 4 decoder layers"):
        with FastV(layer=4, keep=0.5).attach(loaded.adapter):
            pass
    with pytest.raises(ModelArgsError, match=r"token_ssr_layer=5 is out of range; the model has 4 decoder layers"):
        with HalfV(layer=1, keep=0.5, anchor=0.1, ssr_layer=5, ssr_mode="freeze").attach(loaded.adapter):
            pass


# ---------------------------------------------------------------------------------------------- model_args


def test_halfv_detects_its_stages_and_ssr_mode_on_the_pruned_model(tiny_checkpoints, tmp_path):
    from lmms_topo_plugin.config.prune import PruneConfig
    from lmms_topo_plugin.integrations.lmms_eval.model import recorded_token_pruner
    from lmms_topo_plugin.pipeline import calibration_prompts
    from lmms_topo_plugin.tokens.lifecycle import analyze_lifecycle

    args = {"pretrained": str(tiny_checkpoints("llava", 8)), "device": "cpu", "method": "random", "n_remove": "2",
            "token_method": "halfv", "token_keep": "0.5", "calib_limit": "12", "cache_dir": str(tmp_path)}
    loaded, report = load_pruned(args)
    record = loaded.model.config.topo_pruning["token_pruning"]
    # a second code path: the lifecycle analysis of `topo-prune analyze --what entropy`, on the same pruned model
    prompts = calibration_prompts(PruneConfig.from_model_args(args), 12)
    lifecycle = analyze_lifecycle(loaded.adapter, loaded.processor, prompts, show_progress=False)
    ivr, ssr, mode = lifecycle["ivr_layer"], lifecycle["ssr_layer"], lifecycle["ssr_mode"]
    assert loaded.adapter.num_layers == 6 and ivr < ssr
    detected = record.pop("detected")
    assert record == {"method": "halfv", "keep": 0.5, "layer": ivr, "seed": 0, "anchor": 0.1, "ssr_mode": mode,
                      "ssr_layer": ssr}
    assert detected.pop("seconds") >= 0
    # 5% of the tiny Llava's 16 visual tokens is none: freeze without a KL (test_token_floor.py checks the KL path)
    assert detected == {"ivr_layer": ivr, "ssr_layer": ssr, "ssr_mode": "freeze", "samples": 12,
                        "fewest_visual_tokens": 16, "ssr_mode_reason": "top5 would keep 5% of 16 visual tokens = 0",
                        "cached": False} and mode == "freeze"
    assert recorded_token_pruner(loaded) == HalfV(layer=ivr, keep=0.5, anchor=0.1, ssr_layer=ssr, ssr_mode=mode)
    assert report.timings_s["token_stages"] > 0
    again, _ = load_pruned(args)
    assert again.model.config.topo_pruning["token_pruning"]["detected"]["cached"] is True
    # a given layer or mode is kept; only what is left open is detected
    fixed, _ = load_pruned({**args, "token_ssr_mode": "top5"})
    assert {key: fixed.model.config.topo_pruning["token_pruning"][key] for key in ("layer", "ssr_mode", "ssr_layer")} \
        == {"layer": ivr, "ssr_mode": "top5", "ssr_layer": ssr}


@pytest.mark.parametrize("extra,message", [
    ({"token_keep": "0.3"}, "model_args: token_keep= needs token_method= (cit, fastv, halfv or random)"),
    ({"token_method": "ours"}, "model_args: token_method='ours' is not valid; expected one of cit, fastv, halfv, random"),
    ({"token_method": "fastv", "token_anchor": "0.2"},
     "model_args: token_anchor= is a parameter of token_method=halfv, not of token_method=fastv"),
    ({"token_method": "fastv", "token_keep": "0"}, "model_args: token_keep='0' is not valid; expected a float in (0, 1]"),
    ({"token_method": "random", "token_ssr_mode": "freeze"},
     "model_args: token_ssr_mode= is a parameter of token_method=halfv, not of token_method=random"),
    ({"token_method": "halfv", "token_ssr_mode": "late"},
     "model_args: token_ssr_mode='late' is not valid; expected one of auto, freeze, top5, off"),
    ({"token_method": "halfv", "token_layer": "3", "token_ssr_mode": "top5", "token_ssr_layer": "3"},
     "model_args: token_ssr_layer=3 is out of range; with token_ssr_mode=top5 it must be >= 4 (token_layer=3 + 1)"),
    ({"token_method": "halfv", "token_layer": "3", "token_ssr_mode": "freeze", "token_ssr_layer": "2"},
     "model_args: token_ssr_layer=2 is out of range; with token_ssr_mode=freeze it must be >= 3 (token_layer=3)"),
    ({"token_method": "fastv", "token_layer": "0"},
     "model_args: token_layer='0' is out of range; expected an int >= 1 (layer 0's KV cache must hold the whole "
     "prompt: generation sizes its mask by it)"),
    ({"token_method": "fastv", "backend": "onnxruntime", "pretrained": "build"},
     "model_args: token_method= cannot run with backend=onnxruntime: the ONNX graphs do not include token pruning"),
])
def test_bad_token_arguments_are_refused_before_loading(extra, message):
    from lmms_topo_plugin.config.prune import PruneConfig

    with pytest.raises(ModelArgsError) as error:
        PruneConfig.from_model_args(extra)
    assert str(error.value) == message


def test_a_saved_checkpoint_carries_its_token_pruning_and_the_plugin_reapplies_it(tiny_checkpoints, tmp_path, capsys):
    from lmms_topo_plugin.cli.main import main
    from lmms_topo_plugin.integrations.lmms_eval.model import recorded_token_pruner

    args = f"pretrained={tiny_checkpoints('llava', 6)},method=random,n_remove=1,device=cpu,token_method=fastv,token_keep=0.25"
    assert main(["prune", "--model-args", args, "--save", str(tmp_path / "saved"),
                 "--report-dir", str(tmp_path / "reports")]) == 0
    record = json.loads((tmp_path / "saved" / "config.json").read_text())["topo_pruning"]
    assert record["token_pruning"] == {"method": "fastv", "keep": 0.25, "layer": 2, "seed": 0}
    reloaded, _ = load_pruned({"pretrained": str(tmp_path / "saved"), "device": "cpu"})
    assert recorded_token_pruner(reloaded) == FastV(layer=2, keep=0.25)
    assert main(["export", "--model-args", f"pretrained={tmp_path / 'saved'},device=cpu", "--out",
                 str(tmp_path / "build"), "--onnx"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "topo-prune: --onnx: the ONNX graphs do not include visual-token pruning (token_method=fastv); export "
        "without --onnx, or without token_method")


@pytest.mark.e2e
def test_the_lmms_eval_cli_answers_with_the_pruner_attached(tiny_checkpoints, tmp_path):
    from lmms_topo_plugin.runtime.generation import generate
    from lmms_topo_plugin.synthbench import load_split
    from lmms_topo_plugin.testing.lmms_eval_output import logged_samples, response_text
    from lmms_topo_plugin.tools.training.data import prompts_of

    from cli import lmms_eval

    model_args = f"pretrained={tiny_checkpoints('qwen2_vl', 4)},device=cpu,token_method=fastv,token_keep=0.25,token_layer=1"
    result = lmms_eval(model_args, tmp_path / "out", "--log_samples", limit=4)
    assert result.returncode == 0, result.stderr[-3000:]
    (results,) = (tmp_path / "out").rglob("*_results.json")
    loaded, _ = load_pruned({"pretrained": str(tiny_checkpoints("qwen2_vl", 4)), "device": "cpu"})
    prompts = prompts_of(load_split("test", ["count"])[:4])
    with FastV(layer=1, keep=0.25).attach(loaded.adapter):
        pruned = [generate(loaded, [prompt], {"max_new_tokens": 5, "do_sample": False}, ["\n"])[0] for prompt in prompts]
    dense = [generate(loaded, [prompt], {"max_new_tokens": 5, "do_sample": False}, ["\n"])[0] for prompt in prompts]
    assert [response_text(row) for row in logged_samples(results, "topo_synth_count")] == pruned
    assert pruned != dense  # the pruning changed what the tiny model answers, so the comparison means something


def test_prefill_flops_match_a_hand_count():
    from types import SimpleNamespace

    from lmms_topo_plugin.tokens.flops import decoder_prefill_flops

    config = SimpleNamespace(hidden_size=4, intermediate_size=8, num_attention_heads=2, num_key_value_heads=1,
                             head_dim=2)
    # per token: q 4x4, k 4x2, v 4x2, o 4x4 = 48 MACs, MLP 3 x 4x8 = 96 MACs -> 288 FLOPs; attention over T tokens:
    # QK and AV, 2 heads x 2 dims x T(T+1)/2 keys -> 4 * 4 * T(T+1)/2 FLOPs: T=3 -> 96, T=2 -> 48
    assert decoder_prefill_flops(config, [3, 2]) == (3 * 288 + 96) + (2 * 288 + 48)
    # a frozen layer, 2 queries of 5 tokens: q/o (32 MACs) and MLP (96) per query, k/v (16) per token, and
    # every query against every key: 4 * 4 * 2 * 5
    assert decoder_prefill_flops(config, [(2, 5)]) == 2 * 2 * (32 + 96) + 5 * 2 * 16 + 4 * 4 * 2 * 5
    assert decoder_prefill_flops(config, [(3, 3)]) == decoder_prefill_flops(config, [3])


def test_farthest_point_fill_adds_the_farthest_token_each_time():
    import math

    angles = [0.0, 10.0, 180.0, 90.0]  # unit vectors: from 0 deg the farthest is 180, then 90 (10 is close to 0)
    features = torch.tensor([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in angles])
    from lmms_topo_plugin.tokens.methods import farthest_point_fill

    assert farthest_point_fill(features, [0], 3) == [0, 2, 3]
    assert farthest_point_fill(features, [0, 1], 2) == [0, 1]


def test_halfv_keeps_relevance_anchors_and_fills_the_rest_for_diversity(tiny_checkpoints):
    from lmms_topo_plugin.tokens.methods import last_token_attention

    loaded = loaded_model(tiny_checkpoints, "llava")
    inputs = encode(loaded.processor, loaded.adapter, validation_prompts()[:1])
    dense_input, state, _ = pruned_forward(loaded, HalfV(layer=1, keep=0.5, anchor=0.25), inputs)
    visual = loaded.adapter.image_token_mask(inputs["input_ids"])
    positions = visual[0].nonzero()[:, 0].tolist()
    with torch.inference_mode():
        relevance = last_token_attention(loaded.adapter.layer_adapter(1), dense_input, visual)[0, positions]
        features = torch.nn.functional.normalize(loaded.adapter.final_norm(dense_input)[0, positions], dim=-1)
    total = len(positions) // 2
    chosen = relevance.topk(total // 4).indices.tolist()  # the anchors
    while len(chosen) < total:  # brute force: the token whose nearest chosen one is farthest
        distance = [min(1 - float(features[i] @ features[j]) for j in chosen) if i not in chosen else -1.0
                    for i in range(len(positions))]
        chosen.append(max(range(len(positions)), key=lambda i: (distance[i], -i)))
    kept = set(state["prompt"].keep_index[0].tolist()) & set(positions)
    assert kept == {positions[i] for i in chosen}


def test_the_recorded_token_pruning_rebuilds_the_same_pruner():
    from lmms_topo_plugin.config.prune import PruneConfig
    from lmms_topo_plugin.tokens import token_pruner
    from lmms_topo_plugin.tokens import record_model_args

    config = PruneConfig.from_model_args({"token_method": "halfv", "token_layer": "4", "token_anchor": "0.2",
                                          "token_keep": "0.25", "token_ssr_mode": "freeze", "token_ssr_layer": "9"})
    assert config.token_pruning == {"method": "halfv", "keep": 0.25, "layer": 4, "seed": 0, "anchor": 0.2,
                                    "ssr_mode": "freeze", "ssr_layer": 9}
    assert token_pruner(config.token_pruning) == HalfV(layer=4, keep=0.25, anchor=0.2, ssr_layer=9, ssr_mode="freeze")
    assert PruneConfig.from_model_args(record_model_args(config.token_pruning)) == config
    # a record saved before step 2 existed is step 1 alone
    old = {"method": "halfv", "keep": 0.25, "layer": 4, "seed": 0, "anchor": 0.2}
    assert token_pruner(old) == HalfV(layer=4, keep=0.25, anchor=0.2, ssr_mode="off")
    assert PruneConfig.from_model_args(record_model_args(old)).token_pruning == old | {
        "ssr_mode": "off", "ssr_layer": None}
    random_config = PruneConfig.from_model_args({"token_method": "random", "seed": "7"})
    assert token_pruner(random_config.token_pruning) == RandomTokens(layer=2, keep=0.5, seed=7)


def test_a_token_layer_beyond_the_pruned_decoder_is_refused_before_loading(tiny_checkpoints):
    from lmms_topo_plugin.config.prune import PruneConfig
    from lmms_topo_plugin.pipeline import prepare

    config = PruneConfig.from_model_args({"pretrained": str(tiny_checkpoints("llava", 4)), "method": "random",
                                          "n_remove": "1", "token_method": "fastv", "token_layer": "3"})
    with pytest.raises(ModelArgsError) as error:
        prepare(config, load_calibration=False)
    assert str(error.value) == "model_args: token_layer=3 is out of range; the pruned model has 3 decoder layers"


def test_halfv_whose_ssr_is_layer_0_starts_at_layer_1_and_generates_with_the_cache(tiny_checkpoints):
    """On this tiny Qwen2.5-VL the visual entropy is lowest at layer 0: step 1 starts at layer 1 (a stage at layer 0
    would shrink the cache generation sizes its mask by) and step 2, which cannot start before it, is left out."""
    from lmms_topo_plugin.runtime.generation import generate
    from lmms_topo_plugin.synthbench import load_split
    from lmms_topo_plugin.tokens import token_pruner
    from lmms_topo_plugin.tools.training.data import prompts_of

    loaded, _ = load_pruned({"pretrained": str(tiny_checkpoints("qwen2_5_vl", 6)), "device": "cpu",
                             "token_method": "halfv", "calib_limit": "8"})
    record = loaded.model.config.topo_pruning["token_pruning"]
    assert (record["detected"]["ivr_layer"], record["detected"]["ssr_layer"]) == (1, 0)
    assert (record["layer"], record["ssr_mode"], record["ssr_layer"]) == (1, "off", None)
    assert record["detected"]["step_2_left_out"] == ("SSR layer 0 is before layer 1, where freeze could start "
                                                     "(step 1 at layer 1)")
    prompts = prompts_of(load_split("test", ["count"])[:2])
    with token_pruner(record).attach(loaded.adapter):
        batch = generate(loaded, prompts, {"max_new_tokens": 3, "do_sample": False}, [])
        single = [generate(loaded, [prompt], {"max_new_tokens": 3, "do_sample": False}, [])[0] for prompt in prompts]
    assert batch == single
