"""The ONNX build of Idefics3 / SmolVLM: a vision graph over the batch's real images (tiles and global images,
the processor's all-zero padding images dropped), text position ids, and generation like ``model.generate``."""

import json

import numpy as np
import pytest
import torch

from lmms_topo_plugin.runtime.onnx_runner import OnnxVLM
from lmms_topo_plugin.models.prompting import encode
from onnx_helpers import assert_batch_runs_like_pytorch, assert_fp32_parity, mixed_prompts

pytestmark = pytest.mark.e2e  # the end-to-end tier (real CLI runs, exports): pytest -m e2e

TILE = 32  # the tiny processor's max_image_size: tiles and global images are 32 x 32 px


# the checkpoint's processor splits images as SmolVLM's does: resized to a longest edge of two tiles, then cut into
# 32 px tiles plus a global image
SPLIT_IMAGES = {"do_image_splitting": True, "size": {"longest_edge": 2 * TILE}}


@pytest.fixture(scope="module")
def idefics3_build(onnx_builds):
    """``(PyTorch pruned model, build directory)``: the fp32 and fp16 export of a tiny Idefics3 that splits images."""
    build = onnx_builds("idefics3", "fp32,fp16", image_processor=SPLIT_IMAGES)
    return build.pruned, build.out


def test_the_build_has_idefics3_vision_inputs_text_positions_and_its_validation(idefics3_build):
    _, out = idefics3_build
    manifest = json.loads((out / "onnx" / "manifest.json").read_text())
    assert manifest["model_type"] == "idefics3" and manifest["position_ids"] == "text"
    assert not manifest["vision_per_image"] and manifest["precisions"] == ["fp32", "fp16"]
    assert manifest["graphs"]["vision_encoder"]["inputs"] == ["pixel_values", "pixel_attention_mask"]
    assert set(assert_fp32_parity(out)["variants"]) == {"fp16"}


def test_the_vision_graph_drops_padding_images_like_get_image_features(idefics3_build):
    pruned, out = idefics3_build
    runner = OnnxVLM(out, provider="cpu")
    inputs = encode(pruned.processor, pruned.adapter, mixed_prompts("idefics3"))
    pixels, pixel_mask = inputs["pixel_values"], inputs["pixel_attention_mask"]
    real = pixels.flatten(2).ne(0).any(-1)
    assert pixels.shape[:2] == (3, 8) and pixels.shape[-2:] == (TILE, TILE) and real.sum(1).tolist() == [8, 5, 0]
    with torch.inference_mode():
        expected = torch.cat(pruned.model.model.get_image_features(pixels, pixel_mask).pooler_output).numpy()
    features = runner.image_features(inputs)
    assert features.shape == (int((inputs["input_ids"] == pruned.adapter.image_token_id).sum()),
                              runner.manifest["hidden_size"]) == expected.shape
    assert float(np.abs(features - expected).max()) <= 1e-5
    # a partly masked image: its patch mask comes from the pixel mask in the graph, as in transformers
    pixel_mask[0, 0, :, TILE // 2 + 1:] = 0
    with torch.inference_mode():
        masked = torch.cat(pruned.model.model.get_image_features(pixels, pixel_mask).pooler_output).numpy()
    assert float(np.abs(masked - expected).max()) > 1e-2
    assert float(np.abs(runner.image_features({**inputs, "pixel_attention_mask": pixel_mask}) - masked).max()) <= 1e-5


def test_the_runner_prefills_and_generates_like_pytorch(idefics3_build):
    pruned, out = idefics3_build
    assert_batch_runs_like_pytorch(pruned, out, "idefics3")
