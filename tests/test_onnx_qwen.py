"""The ONNX build of Qwen2-VL and Qwen2.5-VL: a per-image vision graph with a dynamic grid, M-RoPE position ids
computed by the runner in numpy, and generation like ``model.generate``."""

import json

import numpy as np
import pytest
import torch

from lmms_topo_plugin.api import load_pruned
from lmms_topo_plugin.calibration.collect import move_inputs
from lmms_topo_plugin.exporters.onnx import build
from lmms_topo_plugin.exporters.onnx.positions import mrope_positions, next_positions, text_positions
from lmms_topo_plugin.runtime.onnx_runner import OnnxVLM
from lmms_topo_plugin.runtime.generation import continuation_nll
from lmms_topo_plugin.models.prompting import Prompt, encode
from onnx_helpers import assert_fp32_parity, mixed_prompts, prefill_against_pytorch
from table import MROPE_FAMILIES as FAMILIES

pytestmark = pytest.mark.e2e  # the end-to-end tier (real CLI runs, exports): pytest -m e2e


@pytest.fixture(scope="module", params=FAMILIES)
def qwen_build(request, onnx_builds):
    """``(family, PyTorch pruned model, build directory)``: the export of each family with every precision."""
    build = onnx_builds(request.param, "fp32,fp16,int4")
    return request.param, build.pruned, build.out


@pytest.mark.parametrize("family", FAMILIES)
def test_numpy_mrope_positions_are_transformers_get_rope_index(tiny_checkpoints, family):
    pruned, _ = load_pruned({"pretrained": str(tiny_checkpoints(family, 6)), "method": "spacing", "n_remove": "1",
                             "device": "cpu"})
    inputs = encode(pruned.processor, pruned.adapter, mixed_prompts(family))
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert (mask[:, 0] == 0).any() and inputs["image_grid_thw"].unique(dim=0).shape[0] == 3
    expected, deltas = pruned.model.model.get_rope_index(ids, inputs["mm_token_type_ids"], inputs["image_grid_thw"],
                                                         attention_mask=mask)
    mine = mrope_positions(ids.numpy(), mask.numpy(), inputs["image_grid_thw"].numpy(), pruned.adapter.image_token_id,
                           pruned.model.config.vision_config.spatial_merge_size)
    assert mine.shape == (3, *ids.shape)
    np.testing.assert_array_equal(mine, expected.numpy())
    # decoding: transformers' rope_deltas put a new token at (real tokens so far) + delta
    np.testing.assert_array_equal(next_positions(mine)[:, :, 0], np.broadcast_to(
        (mask.sum(1, keepdim=True) + deltas).numpy()[:, 0], (3, len(ids))))
    # text-only rows are counted like LLaVA's, in a batch with images or without
    plain = encode(pruned.processor, pruned.adapter, [mixed_prompts(family)[2], Prompt.from_text("Hi.")])
    plain_ids, plain_mask = plain["input_ids"].numpy(), plain["attention_mask"].numpy()
    assert "image_grid_thw" not in plain and plain_mask[1, 0] == 0
    np.testing.assert_array_equal(mrope_positions(plain_ids, plain_mask, None, pruned.adapter.image_token_id, 2),
                                  np.broadcast_to(text_positions(plain_mask), (3, *plain_ids.shape)))
    # text-only row first, then padded
    text = encode(pruned.processor, pruned.adapter, mixed_prompts(family)[1:][::-1])
    text_ids, text_mask = text["input_ids"].numpy(), text["attention_mask"].numpy()
    counted = mrope_positions(text_ids, text_mask, text["image_grid_thw"].numpy(), pruned.adapter.image_token_id, 2)
    np.testing.assert_array_equal(counted[:, 0], np.broadcast_to(text_positions(text_mask)[0], (3, text_ids.shape[1])))


def test_the_build_has_qwen_vision_inputs_mrope_positions_and_its_validation(qwen_build):
    family, _, out = qwen_build
    manifest = json.loads((out / "onnx" / "manifest.json").read_text())
    assert manifest["model_type"] == family and manifest["position_ids"] == "mrope" and manifest["vision_per_image"]
    assert {name: (graph["inputs"][:3], graph["outputs"][:1]) for name, graph in manifest["graphs"].items()} == {
        "vision_encoder": (["pixel_values", "image_grid_thw"], ["image_features"]),
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "decoder_model_merged": (["inputs_embeds", "attention_mask", "position_ids"], ["logits"]),
    }
    assert manifest["num_layers"] == 4 and manifest["precisions"] == ["fp32", "fp16", "int4"]
    assert set(assert_fp32_parity(out)["variants"]) == {"fp16", "int4"}


def test_the_vision_graph_runs_per_image_on_grids_it_was_not_exported_with(qwen_build):
    family, pruned, out = qwen_build
    runner = OnnxVLM(out, provider="cpu")
    inputs = encode(pruned.processor, pruned.adapter, mixed_prompts(family))
    with torch.inference_mode():
        expected = pruned.model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]).pooler_output
    features = runner.image_features(inputs)
    assert features.shape == (int((inputs["input_ids"] == pruned.adapter.image_token_id).sum()),
                              runner.manifest["hidden_size"])
    assert float(np.abs(features - torch.cat(expected).numpy()).max()) <= 1e-5


def test_the_runner_prefills_and_decodes_like_pytorch(qwen_build):
    family, pruned, out = qwen_build
    runner = OnnxVLM(out, provider="cpu")
    prompts = mixed_prompts(family)
    logits, mask, positions, past, inputs = prefill_against_pytorch(runner, pruned, prompts)
    with torch.inference_mode():
        generated = pruned.model.generate(**inputs, max_new_tokens=4, do_sample=False, output_logits=True,
                                          return_dict_in_generate=True)
    for step_logits in generated.logits[1:]:  # each decode step, with the cache and M-RoPE positions
        token = logits[:, -1].argmax(-1)
        mask = np.concatenate([mask, np.ones((len(prompts), 1), dtype=np.int64)], axis=1)
        embeds = runner.sessions["embed_tokens"].run(None, {"input_ids": token[:, None].astype(np.int64)})[0]
        positions = next_positions(positions)
        logits, past = runner.decoder_step(embeds, mask, past, positions)
        assert float(np.abs(logits[:, -1] - step_logits.numpy()).max()) <= 1e-4
    for prompt in build.validation_prompts()[::-1] + mixed_prompts(family)[:1]:
        single = move_inputs(encode(pruned.processor, pruned.adapter, [prompt]), "cpu", pruned.model.dtype)
        with torch.inference_mode():
            expected = pruned.model.generate(**single, max_new_tokens=6, do_sample=False)[0, single["input_ids"].shape[1]:]
        assert runner.generate_ids([prompt], 6)[0, :len(expected)].tolist() == expected.tolist()


def test_continuation_likelihoods_are_pytorch_s(qwen_build):
    """What ``backend=onnxruntime`` answers multiple-choice requests with."""
    family, pruned, out = qwen_build
    runner = OnnxVLM(out, provider="cpu")
    prompt = mixed_prompts(family)[1]
    for continuation in (" three", " a red circle and a square"):
        target = runner.processor.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        nll, greedy = runner.continuation_nll(prompt, target)
        expected_nll, expected_greedy = continuation_nll(pruned, prompt, continuation)
        assert nll == pytest.approx(expected_nll, abs=1e-4) and greedy == expected_greedy


def test_backend_onnxruntime_answers_like_the_pytorch_backend(qwen_build):
    from lmms_topo_plugin.runtime.backends import OnnxBackend, TorchBackend

    family, pruned, out = qwen_build
    onnx, torch_backend = OnnxBackend(str(out), provider="cpu"), TorchBackend(pruned)
    settings = {"max_new_tokens": 6, "do_sample": False}
    assert onnx.device == "cpu"
    assert onnx.generate(mixed_prompts(family), settings, ["."]) == torch_backend.generate(mixed_prompts(family), settings,
                                                                                        ["."])
    nll, greedy = onnx.continuation_nll(mixed_prompts(family)[0], " two")
    expected_nll, expected_greedy = torch_backend.continuation_nll(mixed_prompts(family)[0], " two")
    assert nll == pytest.approx(expected_nll, abs=1e-4) and greedy == expected_greedy
