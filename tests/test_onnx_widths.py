"""ONNX builds of width-pruned models (heads and channels, CoMP's units): every decoder layer's cache has its own
key/value heads in the graph, the manifest and the runner, and the build reproduces PyTorch in both layouts.

Each case is the tiny 4-layer model of a family width-sliced by a plan, exported through the public path
(``export_checkpoint`` with ``fp32``: saved, reloaded through the plugin's loader, built, validated), then
compared with the checkpoint reloaded in PyTorch.
"""

import json
import shutil

import numpy as np
import pytest
import torch
from loguru import logger

from lmms_topo_plugin.calibration.collect import move_inputs
from lmms_topo_plugin.config.prune import LoadConfig
from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.exporters.export import export_checkpoint
from lmms_topo_plugin.exporters.onnx import build
from lmms_topo_plugin.exporters.onnx.graphs import check_supported
from lmms_topo_plugin.models.loading import load_config, load_model
from lmms_topo_plugin.models.prompting import encode
from lmms_topo_plugin.records import PRUNING, set_pruning_record
from lmms_topo_plugin.runtime.onnx_runner import OnnxVLM, kv_heads_per_layer
from lmms_topo_plugin.surgery.widths import slice_widths, uniform_units, width_sites, widths_record
from onnx_helpers import (MIXED_BATCHES, assert_fp32_parity, assert_generates_like_pytorch, mixed_prompts,
                          prefill_against_pytorch)

NUM_LAYERS = 4
# (family, layout, the decoder's key/value heads per layer after the plan); qwen2_5_vl's config cannot state
# uniform decoder heads (head_dim follows hidden / heads), so its uniform plan prunes channels only
CASES = {
    "llava-per_layer": ("llava", "per_layer", [2, 1, 2, 1]),
    "llava-uniform": ("llava", "uniform", [1, 1, 1, 1]),
    "qwen2_5_vl-per_layer": ("qwen2_5_vl", "per_layer", [2, 1, 2, 1]),
    "qwen2_5_vl-uniform": ("qwen2_5_vl", "uniform", [2, 2, 2, 2]),
    # per_layer, one group dropped in every layer: og can run it, with the layers' head count (not the config's)
    "qwen2_5_vl-per_layer-equal": ("qwen2_5_vl", "per_layer", [1, 1, 1, 1]),
}


def some(units: int, count: int, seed: int) -> list[int]:
    """``count`` of ``units`` indices, drawn at random (deterministic in ``seed``)."""
    return torch.randperm(units, generator=torch.Generator().manual_seed(seed))[:count].tolist()


def per_layer_plan(adapter, heads: list[int]) -> dict[str, list[int]]:
    """Layers with fewer than 2 key/value heads keep one group (alternating), two decoder MLPs keep different
    widths, each vision MLP and the projector keep a part of their channels."""
    sites = {site.name: site for site in width_sites(adapter)}
    plan = {f"text.{layer}.attn": [layer % 2] for layer, count in enumerate(heads) if count == 1}
    for seed, (name, share) in enumerate((("text.0.mlp", 2 / 3), ("text.2.mlp", 3 / 8), ("vision.0.mlp", 1 / 2),
                                          ("vision.1.mlp", 3 / 4), ("projector", 2 / 3))):
        plan[name] = some(sites[name].units, int(sites[name].units * share), seed)
    return plan


def uniform_plan(adapter, heads: list[int]) -> dict[str, list[int]]:
    """Every decoder and vision MLP keeps as many channels (a different subset each), and every decoder layer
    keeps one head group when ``heads`` says so (the config states it)."""
    describable = uniform_units(adapter)
    plan = {}
    for seed, site in enumerate(width_sites(adapter)):
        if site.kind == "heads" and site.tower == "text" and heads[0] == 1:
            assert ("text", "heads") in describable
            plan[site.name] = [int(site.name.split(".")[1]) % 2]
        elif site.kind == "channels" and site.tower in ("text", "vision"):
            assert (site.tower, "channels") in describable
            plan[site.name] = some(site.units, site.units * 2 // 3, seed)
    return plan


PLANS = {"per_layer": per_layer_plan, "uniform": uniform_plan}


def width_pruned(checkpoint, layout: str, heads: list[int]):
    """The checkpoint loaded, width-sliced by the layout's plan, with the pruning record that states it."""
    loaded = load_model(LoadConfig(device="cpu"), str(checkpoint), load_config(str(checkpoint)))
    plan = PLANS[layout](loaded.adapter, heads)
    slice_widths(loaded.adapter, plan, layout)
    set_pruning_record(loaded.model.config, PRUNING.stamp({"widths": widths_record(plan, layout)}))
    return loaded, plan


@pytest.fixture(scope="module")
def width_builds(tiny_checkpoints, tmp_path_factory):
    """``get(case)``: ``(build directory, the checkpoint reloaded in PyTorch, the build's warnings)`` of a
    :data:`CASES` entry, built once per module."""
    built = {}

    def get(case: str):
        if case not in built:
            family, layout, heads = CASES[case]
            loaded, _ = width_pruned(tiny_checkpoints(family, NUM_LAYERS), layout, heads)
            warnings = []
            sink = logger.add(lambda message: warnings.append(message.record["message"]), level="WARNING")
            try:
                out = export_checkpoint(loaded, tmp_path_factory.mktemp(f"widths-{case}") / "build", ("fp32",))
            finally:
                logger.remove(sink)
            built[case] = out, load_model(LoadConfig(device="cpu"), str(out), load_config(str(out))), warnings
        return built[case]

    return get


def graph_heads(path, names: list[str]) -> list[int]:
    """Axis 1 (heads) of the named inputs or outputs of the ONNX graph at ``path``."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    values = {value.name: value for value in (*graph.input, *graph.output)}
    return [values[name].type.tensor_type.shape.dim[1].dim_value for name in names]


@pytest.mark.e2e
@pytest.mark.parametrize("case", CASES)
def test_the_build_validates_and_states_each_layer_s_kv_heads(width_builds, case):
    out, reloaded, _ = width_builds(case)
    family, layout, heads = CASES[case]
    assert_fp32_parity(out)
    manifest = json.loads((out / "onnx" / "manifest.json").read_text())
    assert manifest["kv_heads_per_layer"] == kv_heads_per_layer(manifest) == heads
    # the one count of builds before per-layer widths: only when it is every layer's
    assert manifest.get("kv_heads") == (heads[0] if len(set(heads)) == 1 else None)
    assert manifest["pruning"]["widths"]["layout"] == layout
    assert [reloaded.adapter.layer_adapter(layer).num_kv_heads for layer in range(NUM_LAYERS)] == heads
    decoder = manifest["graphs"]["decoder_model_merged"]
    path = out / "onnx" / decoder["file"]
    past = [name for name in decoder["inputs"] if name.startswith("past_key_values.")]  # either decoder's
    assert graph_heads(path, past) == graph_heads(path, decoder["outputs"][1:]) == [
        count for count in heads for _ in ("key", "value")]


@pytest.mark.e2e
@pytest.mark.parametrize("case", CASES)
def test_the_runner_generates_like_pytorch(width_builds, case):
    out, reloaded, _ = width_builds(case)
    family, _, heads = CASES[case]
    runner = OnnxVLM(out, provider="cpu")
    assert [value.shape for value in runner.empty_past(3)] == [(3, count, 0, 16) for count in heads for _ in "kv"]
    for prompt in build.validation_prompts():
        inputs = move_inputs(encode(reloaded.processor, reloaded.adapter, [prompt]), "cpu", reloaded.model.dtype)
        with torch.inference_mode():
            expected = reloaded.model.generate(**inputs, max_new_tokens=6, do_sample=False)[
                0, inputs["input_ids"].shape[1]:].tolist()
        assert runner.generate_ids([prompt], 6)[0, :len(expected)].tolist() == expected
    # a left-padded batch: the family's mixed rows (several images, one, none), LLaVA's the two validation prompts
    prompts = mixed_prompts(family) if family in MIXED_BATCHES else build.validation_prompts()
    _, mask, _, present, inputs = prefill_against_pytorch(runner, reloaded, prompts)
    assert (mask[:, 0] == 0).any()
    assert [value.shape for value in present] == [(len(mask), count, mask.shape[1], 16)
                                                  for count in heads for _ in "kv"]
    assert_generates_like_pytorch(runner, reloaded, prompts, inputs, 6)


@pytest.mark.e2e
@pytest.mark.parametrize("case", CASES)
def test_og_files_only_when_one_head_count_describes_every_layer(width_builds, case):
    out, _, warnings = width_builds(case)
    family, _, heads = CASES[case]
    manifest = json.loads((out / "onnx" / "manifest.json").read_text())
    if family != "qwen2_5_vl":
        assert "genai" not in manifest and not (out / "onnx" / "genai_config.json").exists()
        return
    genai = manifest["genai"]
    if len(set(heads)) > 1:
        assert genai["config"] is None and genai["files"] == []
        assert not [path.name for path in (out / "onnx").glob("genai_*")]
        assert not (out / "onnx" / "processor_config.json").exists()
        assert "num_key_value_heads" in genai["skipped"] and str(heads) in genai["skipped"]
        assert [message for message in warnings if genai["skipped"] in message]
        return
    assert "skipped" not in genai and all((out / "onnx" / file).is_file() for file in genai["files"])
    decoder = json.loads((out / "onnx" / "genai_config.json").read_text())["model"]["decoder"]
    assert (decoder["num_key_value_heads"], decoder["num_attention_heads"], decoder["head_size"]) == (
        heads[0], 2 * heads[0], 16)


@pytest.mark.e2e
def test_og_generates_like_pytorch_with_the_layers_head_count(width_builds):
    """A per_layer build whose layers all keep one group: its genai config states 1, not the config's 2."""
    out, reloaded, _ = width_builds("qwen2_5_vl-per_layer-equal")
    og = pytest.importorskip("onnxruntime_genai")
    from lmms_topo_plugin.exporters.onnx.genai import og_greedy_tokens

    model = og.Model(str(out / "onnx"))
    for prompt in mixed_prompts("qwen2_5_vl"):
        inputs = encode(reloaded.processor, reloaded.adapter, [prompt])
        with torch.inference_mode():
            expected = reloaded.model.generate(**move_inputs(inputs, "cpu", reloaded.model.dtype), max_new_tokens=6,
                                               do_sample=False)[0, inputs["input_ids"].shape[1]:].tolist()
        assert og_greedy_tokens(og, model, inputs, reloaded.adapter.image_token_id, 6) == expected


@pytest.mark.e2e
def test_a_manifest_with_one_kv_heads_still_runs(width_builds, tmp_path):
    """A build made before per-layer KV heads states one ``kv_heads`` and no per-layer list."""
    out, _, _ = width_builds("llava-uniform")
    old = shutil.copytree(out, tmp_path / "old")
    manifest = json.loads((old / "onnx" / "manifest.json").read_text())
    del manifest["kv_heads_per_layer"]
    (old / "onnx" / "manifest.json").write_text(json.dumps(manifest))
    prompts = build.validation_prompts()
    np.testing.assert_array_equal(OnnxVLM(old, provider="cpu").generate_ids(prompts, 6),
                                  OnnxVLM(out, provider="cpu").generate_ids(prompts, 6))


def test_the_runner_reads_per_layer_and_single_kv_heads():
    assert kv_heads_per_layer({"num_layers": 3, "kv_heads": 2, "head_dim": 16}) == [2, 2, 2]
    assert kv_heads_per_layer({"num_layers": 3, "kv_heads_per_layer": [2, 1, 2], "head_dim": 16}) == [2, 1, 2]


def test_width_pruning_with_visual_token_pruning_is_refused(tiny_checkpoints):
    """CoMP's visual-token mode runs at inference time and is not in the graphs."""
    loaded, plan = width_pruned(tiny_checkpoints("llava", NUM_LAYERS), "per_layer", [2, 1, 2, 1])
    set_pruning_record(loaded.model.config, PRUNING.stamp({
        "widths": widths_record(plan, "per_layer"), "token_pruning": {"method": "cit", "keep": 0.5, "layer": 2}}))
    with pytest.raises(ModelArgsError, match=r"do not include visual-token pruning \(token_method=cit\)"):
        check_supported(loaded)
