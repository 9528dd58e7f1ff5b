"""bench/bench_onnx_anchor.py's core on a tiny model (no timing): onnxruntime-genai's model builder builds the
language model of the dense and of a layer-pruned LLaVA, and its decoder (numpy caches and shared buffer) gives the
same greedy tokens and logits as ours and PyTorch; the checkpoints it cannot take are refused with the reason."""

from pathlib import Path

import pytest
import torch

from script_modules import load_script

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    return load_script(Path("bench/bench_onnx_anchor.py"))


@pytest.fixture(scope="module")
def tiny(bench):
    """3 layers of width 256, 16 query and 4 key/value heads of 16 (grouped-query attention), 16 image tokens."""
    from lmms_topo_plugin.search.measure import default_cost_prompt

    loaded, _ = bench.bench_speed.build_model(3, 256, 16, kv_heads=4)
    return loaded, default_cost_prompt()


@pytest.mark.parametrize("removed", [[], [1]], ids=["dense", "layer 1 removed"])
def test_builder_decoder_gives_our_tokens(bench, tiny, removed, tmp_path):
    from lmms_topo_plugin.surgery.layers import layers_removed

    loaded, prompt = tiny
    with layers_removed(loaded.adapter, removed):
        pair, info = bench.build_pair(loaded, prompt, tmp_path, decode_tokens=4)
        check = bench.check_tokens(pair, loaded)
        padding = bench.padding_check(pair)
    assert info["builder_genai_layers"] == 3 - len(removed)  # the pruned checkpoint built with fewer layers
    assert info["builder_past_present_share_buffer"] is True
    assert info["nodes"]["builder"] < info["nodes"]["ours"]
    assert info["nodes"]["integrated_builder"] <= info["nodes"]["builder"]  # the LM head outside, one MatMul
    tokens = check["tokens"]
    # the integrated runners too: OnnxVLM on our build and on the build with the builder's decoder
    assert set(tokens) == {"ours_numpy", "ours_bound", "builder_numpy", "builder_shared", "runner_torch",
                           "runner_builder", "pytorch"}
    assert all(len(value) == 5 for value in tokens.values())  # the prefill's token and 4 decoded
    assert check["same_tokens"], tokens
    assert max(check["max_abs_logit_diff"].values()) < 1e-4 * max(1.0, check["logit_scale"])
    # a batch of two prompts of different lengths: right-padded, every row as ours; left-padded (as our runner pads),
    # the shorter row is not (GroupQueryAttention takes each row's tokens from position 0): a runner driving the
    # builder's decoder must right-pad
    assert padding["row_lengths"][0] < padding["row_lengths"][1]
    assert max(padding["right_padded_max_abs_diff"]) < 1e-4
    assert padding["left_padded_max_abs_diff"][0] > 1e-2


def test_per_layer_width_pruned_checkpoint_is_refused(bench, tiny, tmp_path):
    """Layer 0 keeps 2 of its 4 key/value head groups, the others all: the config cannot state it, and the builder
    reads one head count for every layer."""
    from lmms_topo_plugin.surgery.widths import widths_sliced

    loaded, prompt = tiny
    with widths_sliced(loaded.adapter, {"text.0.attn": [0, 2]}, "per_layer"):
        with pytest.raises(bench.BuilderUnsupported, match=r"width-pruned per layer \(key/value heads \[2, 4\]"):
            bench.build_pair(loaded, prompt, tmp_path, decode_tokens=1)
    assert not (tmp_path / "builder").exists()  # refused before building


def test_mrope_family_is_refused(bench, tiny_checkpoints, tmp_path):
    from lmms_topo_plugin.config.prune import LoadConfig
    from lmms_topo_plugin.models.loading import load_config, load_model

    checkpoint = str(tiny_checkpoints("qwen2_vl", 2))
    loaded = load_model(LoadConfig(device="cpu"), checkpoint, load_config(checkpoint))
    with pytest.raises(bench.BuilderUnsupported, match="qwen2_vl: the decoder takes mrope position ids"):
        bench.language_model_checkpoint(loaded, tmp_path / "language_model")


def test_bundled_model_head_size_is_refused(bench, tmp_path):
    """The bundled model's heads of 40: ONNX Runtime's CPU GroupQueryAttention runs multiples of 16 only."""
    from lmms_topo_plugin.config.prune import LoadConfig
    from lmms_topo_plugin.models.loading import load_config, load_model, resolve_pretrained

    bundled = resolve_pretrained(None)
    loaded = load_model(LoadConfig(device="cpu"), bundled, load_config(bundled))
    with pytest.raises(bench.BuilderUnsupported, match="head size 40: ONNX Runtime's GroupQueryAttention"):
        bench.language_model_checkpoint(loaded, tmp_path / "language_model")


@pytest.fixture(autouse=True)
def torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
