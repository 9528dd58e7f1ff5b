"""LLaVA-1.5: CLIP vision tower, projector, Llama decoder (the adapter and the CLIP recipe serve LLaVA-NeXT too,
:mod:`.llava_next`). The ONNX vision graph is the tower and projector over a batch of same-size images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from lmms_topo_plugin.families.base import Family, VLMAdapter
from lmms_topo_plugin.families.onnx_graph import OnnxFamily, batch_example, flat_features
from lmms_topo_plugin.families.recipe import RENDER_CONTENT, VISION_WIDTH, TinyRecipe


class LlavaAdapter(VLMAdapter):
    """LLaVA-1.5 and LLaVA-NeXT: CLIP vision tower, projector, Llama/Mistral/Vicuna decoder."""

    @property
    def projector(self) -> tuple[nn.Module, nn.Linear, nn.Linear]:
        """``multi_modal_projector``: ``linear_1``, activation, ``linear_2``."""
        projector = self.backbone.multi_modal_projector
        return projector, projector.linear_1, projector.linear_2


# -- ONNX vision graph ----------------------------------------------------------------------------


class VisionEncoder(nn.Module):
    """``pixel_values`` → ``image_features`` ``[images, tokens, hidden]`` (projected to the decoder width)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # LLaVA's get_image_features, without its per-image list (which would fix the image count in the graph)
        config, backbone = self.model.config, self.model.model
        hidden = backbone.vision_tower(pixel_values, output_hidden_states=True, return_dict=True).hidden_states
        layers = config.vision_feature_layer if isinstance(config.vision_feature_layer, list) else [
            config.vision_feature_layer]
        selected = [hidden[layer][:, 1:] if config.vision_feature_select_strategy == "default" else hidden[layer]
                    for layer in layers]
        return backbone.multi_modal_projector(torch.cat(selected, dim=-1))


def run_batch(session: Any, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """One run over all the batch's images."""
    return flat_features(session.run(None, {"pixel_values": inputs["pixel_values"]})[0])


LLAVA = OnnxFamily(VisionEncoder, ("pixel_values",), ({0: "num_images"},), per_image=False, positions="text",
                   example=batch_example(("pixel_values",)), run_vision=run_batch)

# -- tiny test model ------------------------------------------------------------------------------

TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "image": ["<image>"]}

TEMPLATE = RENDER_CONTENT + (
    "{{ bos_token }}{% for message in messages %}"
    "{{ message['role'] | upper }}: {{ render(message['content'], '<image>\\n') }}"
    "{{ eos_token if message['role'] == 'assistant' else ' ' }}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

_CLIP_VISION = dict(
    model_type="clip_vision_model",
    hidden_size=VISION_WIDTH,
    intermediate_size=2 * VISION_WIDTH,
    num_hidden_layers=2,
    num_attention_heads=2,
    projection_dim=VISION_WIDTH,
)


@dataclass(frozen=True)
class Clip:
    """A CLIP tower of `image_size` px in `patch_size` patches whose CLS feature is dropped."""

    image_size: int
    patch_size: int

    def vision_config(self, _text_hidden_size: int) -> dict:
        """The CLIP vision sub-config (its projector adapts to any text width)."""
        return dict(_CLIP_VISION, image_size=self.image_size, patch_size=self.patch_size)

    def image_processor_kwargs(self) -> dict:
        """Resize the short side to the tower's input size, then center-crop a square."""
        return dict(
            size={"shortest_edge": self.image_size}, crop_size={"height": self.image_size, "width": self.image_size}
        )

    def processor_kwargs(self) -> dict:
        """One image token per patch: CLS counted by the tower, then dropped by "default"."""
        return dict(patch_size=self.patch_size, vision_feature_select_strategy="default", num_additional_image_tokens=1)

    def config_kwargs(self) -> dict:
        """Features from the second-to-last layer, as LLaVA does."""
        return dict(
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
            image_seq_length=(self.image_size // self.patch_size) ** 2,
        )


_CLIP = Clip(image_size=32, patch_size=8)

TINY = TinyRecipe(
    config_class="LlavaConfig",
    processor_class="LlavaProcessor",
    image_processor_class="CLIPImageProcessorPil",
    image_processor_kwargs=_CLIP.image_processor_kwargs(),
    special_tokens=TOKENS,
    chat_template=TEMPLATE,
    token_fields={"image_token_index": "<image>"},
    vision_config=_CLIP.vision_config,
    text_kwargs=dict(model_type="llama"),
    processor_kwargs=_CLIP.processor_kwargs(),
    config_kwargs=_CLIP.config_kwargs(),
)

FAMILY = Family(model_types=("llava",), adapter=LlavaAdapter, onnx={"llava": LLAVA}, tiny={"llava": TINY})
