"""Idefics3 and SmolVLM: SigLIP vision encoder, pixel-shuffle connector, Llama decoder.

The ONNX vision graph (Idefics3 only) is the SigLIP tower and the pixel-shuffle connector over the batch's real
images (tiles and global images); the all-zero images that pad the processor's ``[batch, max images, ...]`` rows
are dropped before the graph, in numpy."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from lmms_topo_plugin.families.base import Family, VLMAdapter
from lmms_topo_plugin.families.onnx_graph import OnnxFamily, flat_features
from lmms_topo_plugin.families.recipe import RENDER_CONTENT, VISION_WIDTH, TinyRecipe


class Idefics3Adapter(VLMAdapter):
    """Idefics3 and SmolVLM: SigLIP vision encoder, pixel-shuffle connector, Llama decoder."""

    text_model_attr = "text_model"
    vision_tower_attr = "vision_model"
    nested_images = True


# -- ONNX vision graph ----------------------------------------------------------------------------


class Idefics3VisionEncoder(nn.Module):
    """Real images' ``pixel_values`` ``[images, 3, H, W]`` and ``pixel_attention_mask`` ``[images, H, W]`` →
    ``image_features`` ``[images, tokens, hidden]``.

    The image count is dynamic; ``H`` and ``W`` are the export example's: the processor always gives
    ``max_image_size`` squares (tiles, global images and unsplit images alike), and the connector's pixel
    shuffle needs a square patch grid known at export. A patch is attended when any of its pixels is real."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.backbone = model.model

    def forward(self, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor) -> torch.Tensor:
        patch = self.backbone.config.vision_config.patch_size
        images, height, width = pixel_attention_mask.shape
        rows, cols = height // patch, width // patch
        pixels = pixel_attention_mask[:, :rows * patch, :cols * patch].reshape(images, rows, patch, cols, patch)
        patch_mask = pixels.sum(dim=(2, 4)) > 0
        hidden = self.backbone.vision_model(pixel_values=pixel_values, patch_attention_mask=patch_mask)
        return self.backbone.connector(hidden.last_hidden_state)


def real_images(pixel_values, pixel_attention_mask):
    """``[batch, max images, ...]`` → the real images and their masks, row by row; a padding image is all zeros
    (transformers' rule). Works on numpy arrays and torch tensors alike."""
    images = pixel_values.reshape(-1, *pixel_values.shape[2:])
    real = (images != 0).reshape(len(images), -1).any(1)
    return images[real], pixel_attention_mask.reshape(-1, *pixel_attention_mask.shape[2:])[real]


def example_images(inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Example inputs: the batch's real images (at least two, so that the image count stays dynamic)."""
    return real_images(inputs["pixel_values"].float(), inputs["pixel_attention_mask"])


def run_real_images(session: Any, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """One run over the batch's real images."""
    pixels, mask = real_images(inputs["pixel_values"], inputs["pixel_attention_mask"])
    return flat_features(session.run(None, {"pixel_values": pixels, "pixel_attention_mask": mask})[0])


IDEFICS3 = OnnxFamily(Idefics3VisionEncoder, ("pixel_values", "pixel_attention_mask"),
                      ({0: "num_images"}, {0: "num_images"}), per_image=False, positions="text",
                      example=example_images, run_vision=run_real_images)

# -- tiny test model ------------------------------------------------------------------------------

TEMPLATE = RENDER_CONTENT + (
    "{{ bos_token }}{% for message in messages %}"
    "{% set starts_with_image = message['content'] is not string and message['content'][0]['type'] == 'image' %}"
    "{{ message['role'] | capitalize }}{{ ':' if starts_with_image else ': ' }}"
    "{{ render(message['content'], '<image>') }}{{ '<end_of_utterance>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

TINY = TinyRecipe(
    config_class="Idefics3Config",
    processor_class="Idefics3Processor",
    image_processor_class="Idefics3ImageProcessorPil",
    image_processor_kwargs=dict(
        do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32}
    ),
    special_tokens={
        "bos_token": "<|im_start|>",
        "eos_token": "<end_of_utterance>",
        "pad_token": "<|im_end|>",
        "image": ["<fake_token_around_image>", "<image>", "<global-img>"],
    },
    chat_template=TEMPLATE,
    # the deprecated top-level pad id would otherwise default to 128002, outside the vocabulary
    token_fields={"image_token_id": "<image>", "pad_token_id": "<|im_end|>"},
    vision_config=lambda _: dict(
        hidden_size=VISION_WIDTH,
        intermediate_size=2 * VISION_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=4,
    ),
    text_kwargs=dict(model_type="llama"),
    # (32 / 4)^2 patches, merged 2x2 by pixel shuffle: 16 image tokens.
    processor_kwargs=dict(image_seq_len=16),
    config_kwargs=dict(scale_factor=2),
)

FAMILY = Family(model_types=("idefics3", "smolvlm"), adapter=Idefics3Adapter, onnx={"idefics3": IDEFICS3},
                tiny={"idefics3": TINY})
