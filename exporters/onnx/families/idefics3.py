"""Idefics3 / SmolVLM: the SigLIP tower and the pixel-shuffle connector over the batch's real images (tiles and
global images); the all-zero images that pad the processor's ``[batch, max images, ...]`` rows are dropped before
the graph, in numpy."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from lmms_topo_plugin.exporters.onnx.families.base import OnnxFamily, flat_features


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
