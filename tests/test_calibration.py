"""Calibration hooks collect exactly the states a plain forward pass produces, bounded per sample."""

import pytest
import torch

from lmms_topo_plugin.families import get_adapter
from lmms_topo_plugin.calibration.collect import calibrate, move_inputs
from lmms_topo_plugin.config.prune import LoadConfig
from lmms_topo_plugin.models.loading import load_config, load_model
from lmms_topo_plugin.models.prompting import Prompt, encode
from lmms_topo_plugin.families.tiny import example_image
from table import REPRESENTATIVE_FAMILIES


@pytest.mark.parametrize("family", REPRESENTATIVE_FAMILIES)
def test_collectors_match_output_hidden_states(family, tiny_checkpoints):
    checkpoint = str(tiny_checkpoints(family))
    loaded = load_model(LoadConfig(device="cpu"), checkpoint, load_config(checkpoint))
    prompts = [Prompt.from_text("How many red shapes?", [example_image(i)]) for i in range(3)]
    prompts.append(Prompt.from_text("Is the blue circle left of the square in this picture?", [example_image(9)]))
    stats = calibrate(loaded.adapter, loaded.processor, prompts,
                      ["last_token", "visual_mean", "prompt_mean", "token_cosine"], batch_size=3, show_progress=False)
    adapter = get_adapter(loaded.model)
    inputs = encode(loaded.processor, adapter, prompts)
    with torch.inference_mode():
        hidden = loaded.model(**move_inputs(inputs, "cpu", torch.float32), output_hidden_states=True).hidden_states
    # transformers' hidden_states[L] is after the final norm; ours is the last layer's raw output
    depths = torch.stack(list(hidden[:-1]), dim=1)
    num_layers = adapter.num_layers
    assert stats["last_token"].shape == (4, num_layers + 1, hidden[0].shape[-1])
    torch.testing.assert_close(stats["last_token"][:, :num_layers], depths[:, :, -1], rtol=1e-4, atol=1e-5)
    final_normed = adapter.final_norm(stats["last_token"][:, num_layers])
    torch.testing.assert_close(final_normed, hidden[-1][:, -1], rtol=1e-4, atol=1e-5)
    image = adapter.image_token_mask(inputs["input_ids"])
    expected_visual = (depths * image[:, None, :, None]).sum(2) / image.sum(1)[:, None, None]
    torch.testing.assert_close(stats["visual_mean"][:, :num_layers], expected_visual, rtol=1e-4, atol=1e-5)
    real = inputs["attention_mask"].bool()
    expected_prompt = (depths * real[:, None, :, None]).sum(2) / real.sum(1)[:, None, None]
    torch.testing.assert_close(stats["prompt_mean"][:, :num_layers], expected_prompt, rtol=1e-4, atol=1e-5)
    all_depths = list(hidden[:-1]) + [None]
    for layer in range(num_layers - 1):
        cosine = torch.nn.functional.cosine_similarity(all_depths[layer], all_depths[layer + 1], dim=-1)[real].mean()
        assert stats["token_cosine"][layer].item() == pytest.approx(cosine.item(), abs=1e-5)


def test_non_finite_states_name_the_layer(tiny_checkpoints):
    checkpoint = str(tiny_checkpoints("llava"))
    loaded = load_model(LoadConfig(device="cpu"), checkpoint, load_config(checkpoint))
    layer = loaded.adapter.layers[2]
    layer.register_forward_hook(lambda module, args, output: output * float("nan"))
    with pytest.raises(FloatingPointError, match="output of decoder layer 2"):
        calibrate(loaded.adapter, loaded.processor, [Prompt.from_text("hi", [example_image()])], ["last_token"],
                  show_progress=False)
