"""onnxruntime-genai (``og.Model``, CPU) runs the pruned Qwen2.5-VL ONNX build from the files the export writes
next to its graphs, and decodes greedily like ``model.generate``.

og's tokenizer (onnxruntime-extensions) reads a ``TokenizersBackend`` ``tokenizer.json`` as BPE and parses its
``model.merges``, which the tiny models' WordLevel tokenizer has none of: it fails to load, or loads and encodes
``-1`` ids, from run to run. So og's multimodal processor (which needs it) is not used for generation: og is fed
the transformers processor's ``input_ids`` / ``pixel_values`` / ``image_grid_thw`` as named tensors, with the
``num_image_tokens`` og's processor adds. That image processor is checked on its own, with a byte-level BPE
stand-in tokenizer.
"""

import json
import shutil

import numpy as np
import pytest
import torch

from lmms_topo_plugin.calibration.collect import move_inputs
from lmms_topo_plugin.exporters.onnx.genai import og_greedy_tokens
from lmms_topo_plugin.models.prompting import Prompt, encode
from lmms_topo_plugin.families.tiny import example_image

pytestmark = pytest.mark.e2e  # the end-to-end tier (real CLI runs, exports): pytest -m e2e

og = pytest.importorskip("onnxruntime_genai")

NEW_TOKENS = 8


@pytest.fixture(scope="module")
def genai_build(onnx_builds):
    """``(PyTorch pruned model, build/onnx, og.Model)`` of a 6-layer tiny Qwen2.5-VL pruned to 4 layers."""
    build = onnx_builds("qwen2_5_vl")
    return build.pruned, build.out / "onnx", og.Model(str(build.out / "onnx"))


def test_the_manifest_lists_og_s_files_for_the_pruned_decoder(genai_build):
    _, onnx_dir, model = genai_build
    manifest = json.loads((onnx_dir / "manifest.json").read_text())
    genai = manifest["genai"]
    assert genai["config"] == "genai_config.json" and model.type == "qwen2_5_vl"
    assert {"genai_config.json", "genai_embedding.onnx", "processor_config.json", "tokenizer.json"} <= set(
        genai["files"])
    assert all((onnx_dir / file).is_file() for file in genai["files"])
    config = json.loads((onnx_dir / "genai_config.json").read_text())["model"]
    assert config["decoder"]["num_hidden_layers"] == manifest["num_layers"] == 4
    assert (config["vision"]["filename"], config["decoder"]["filename"]) == ("vision_encoder.onnx",
                                                                             "decoder_model_merged.onnx")


def og_tokens(model, inputs, image_token_id: int) -> list[int]:
    """Greedy new tokens of og fed one processed prompt as named tensors."""
    return og_greedy_tokens(og, model, inputs, image_token_id, NEW_TOKENS)


PROMPTS = {
    "one image": Prompt.from_text("What is in the image?", [example_image(1, (48, 32))]),
    "two images of different sizes": Prompt.from_text("Compare them.", [example_image(1, (48, 32)),
                                                                        example_image(2, (32, 64))]),
    "text only": Prompt.from_text("Say something about nothing at all, please."),
}


@pytest.mark.parametrize("case", PROMPTS)
def test_og_generates_the_greedy_tokens_of_the_pytorch_pruned_model(genai_build, case):
    pruned, _, model = genai_build
    inputs = encode(pruned.processor, pruned.adapter, [PROMPTS[case]])
    with torch.inference_mode():
        expected = pruned.model.generate(**move_inputs(inputs, "cpu", pruned.model.dtype), max_new_tokens=NEW_TOKENS,
                                         do_sample=False)[0, inputs["input_ids"].shape[1]:].tolist()
    assert og_tokens(model, inputs, pruned.adapter.image_token_id) == expected


def test_og_s_image_processor_reads_the_written_processor_config(genai_build, tmp_path):
    """On images already on the patch grid (no resampling) og's processor gives the transformers processor's
    ``pixel_values`` and ``image_grid_thw``, and expands the prompt to as many image tokens."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    pruned, onnx_dir, _ = genai_build
    shutil.copytree(onnx_dir, tmp_path, dirs_exist_ok=True)
    tokenizer = pruned.processor.tokenizer
    specials = [token.content for _, token in sorted(tokenizer.added_tokens_decoder.items())]
    vocab = {token: index for index, token in enumerate([*specials, *sorted(pre_tokenizers.ByteLevel.alphabet())])}
    stand_in = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    stand_in.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    stand_in.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in specials])
    stand_in.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "Qwen2Tokenizer"}))
    processor = og.Model(str(tmp_path)).create_multimodal_processor()
    image_token, path = vocab["<|image_pad|>"], str(tmp_path / "image.png")
    for size in ((48, 32), (32, 64)):
        image = example_image(3, size)
        image.save(path)
        out = processor("<|vision_start|><|image_pad|><|vision_end|>hi", images=og.Images.open(path))
        expected = pruned.processor.image_processor(images=[image], return_tensors="np")
        np.testing.assert_array_equal(out["image_grid_thw"].as_numpy().reshape(-1, 3), expected["image_grid_thw"])
        np.testing.assert_allclose(out["pixel_values"].as_numpy(), expected["pixel_values"], atol=1e-5)
        tokens = int(expected["image_grid_thw"].prod()) // pruned.model.config.vision_config.spatial_merge_size ** 2
        assert int((out["input_ids"].as_numpy() == image_token).sum()) == tokens
        assert out["num_image_tokens"].as_numpy().tolist() == [tokens]
