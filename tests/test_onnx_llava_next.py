"""The ONNX build of LLaVA-NeXT: a vision graph over the real anyres patches, their packing (un-padding, newline
rows) in numpy from the manifest's vision constants, and generation like ``model.generate``."""

import json

import numpy as np
import pytest
import torch

from lmms_topo_plugin.families.llava_next import tile_grid
from lmms_topo_plugin.runtime.onnx_runner import OnnxVLM
from lmms_topo_plugin.models.prompting import encode
from onnx_helpers import assert_batch_runs_like_pytorch, assert_fp32_parity, mixed_prompts

pytestmark = pytest.mark.e2e  # the end-to-end tier (real CLI runs, exports): pytest -m e2e


@pytest.fixture(scope="module")
def llava_next_build(onnx_builds):
    """``(PyTorch pruned model, build directory)``: the fp32 and fp16 export."""
    build = onnx_builds("llava_next", "fp32,fp16")
    return build.pruned, build.out


def test_the_build_states_llava_next_its_constants_and_its_validation(llava_next_build):
    pruned, out = llava_next_build
    manifest = json.loads((out / "onnx" / "manifest.json").read_text())
    assert manifest["model_type"] == "llava_next" and manifest["position_ids"] == "text"
    assert not manifest["vision_per_image"] and manifest["precisions"] == ["fp32", "fp16"]
    vision = manifest["graphs"]["vision_encoder"]
    assert (vision["inputs"], vision["outputs"]) == (["pixel_values"], ["image_features"])
    constants = manifest["vision_constants"]
    assert constants["image_grid_pinpoints"] == pruned.model.config.image_grid_pinpoints
    np.testing.assert_array_equal(np.float32(constants["image_newline"]), pruned.model.model.image_newline.detach())
    assert set(assert_fp32_parity(out)["variants"]) == {"fp16"}


def test_image_features_are_pytorch_s_packed_ones_for_images_of_other_sizes(llava_next_build):
    pruned, out = llava_next_build
    runner = OnnxVLM(out, provider="cpu")
    inputs = encode(pruned.processor, pruned.adapter, mixed_prompts("llava_next"))
    config = pruned.model.config
    grids = [tile_grid(size, config.image_grid_pinpoints, inputs["pixel_values"].shape[-2:])
             for size in inputs["image_sizes"].tolist()]
    assert grids == [(1, 2), (2, 1), (1, 1), (1, 2)]
    # the processor's patches: a base view and the grid's tiles, then all-zero padding up to the batch's most
    real = inputs["pixel_values"].flatten(2).ne(0).any(-1)
    assert real.sum(1).tolist() == [1 + rows * cols for rows, cols in grids] == [3, 3, 2, 3]
    with torch.inference_mode():
        expected = pruned.model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"]).pooler_output
    side = config.vision_config.image_size // config.vision_config.patch_size  # features per tile side
    uncut = [side * side + rows * side * (cols * side + 1) for rows, cols in grids]  # base view, rows + newlines
    assert uncut == [14, 16, 10, 14] and [len(image) for image in expected] == [10, 10, 10, 14]  # half cut off
    features = runner.image_features(inputs)
    assert features.shape == (int((inputs["input_ids"] == pruned.adapter.image_token_id).sum()),
                              runner.manifest["hidden_size"])
    assert float(np.abs(features - torch.cat(expected).numpy()).max()) <= 1e-5


def test_the_runner_prefills_and_generates_like_pytorch_on_a_left_padded_batch(llava_next_build):
    pruned, out = llava_next_build
    assert_batch_runs_like_pytorch(pruned, out, "llava_next")
