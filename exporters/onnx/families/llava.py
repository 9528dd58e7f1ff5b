"""LLaVA-1.5: the vision tower and projector over a batch of same-size images."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from lmms_topo_plugin.exporters.onnx.families.base import OnnxFamily, batch_example, flat_features


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
