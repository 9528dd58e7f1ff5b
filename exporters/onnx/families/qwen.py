"""Qwen2-VL / Qwen2.5-VL: a vision graph over one image's patches and its grid, run once per image."""

from __future__ import annotations

import contextlib
import sys
import types
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmms_topo_plugin.exporters.onnx.families.base import OnnxFamily, flat_features


class QwenVisionEncoder(nn.Module):
    """Qwen2-VL / Qwen2.5-VL: ONE image's ``pixel_values`` ``[patches, channels*temporal*patch*patch]`` and
    ``image_grid_thw`` ``[1, 3]`` → merged ``image_features`` ``[patches / merge², hidden]``.

    The tower's grid-dependent inputs (rotary ``position_ids``; for 2.5-VL the window order ``window_index``) are
    computed here from the grid *values* with tensor ops, so they stay dynamic in the graph instead of being
    specialised to the example grid as the tower's own ``.tolist()`` loops would. 2.5-VL's attention windows are
    passed as one segment id per patch where the tower expects ``cu_seqlens`` (an empty tensor for full attention
    over the image); during export each attention module uses :func:`_segment_attention`, a masked attention over
    those ids, instead of its split per segment (whose sizes would be Python ints in the graph)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.visual = model.model.visual

    def forward(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        visual, merge = self.visual, self.visual.spatial_merge_size
        h, w = image_grid_thw[0, 1], image_grid_thw[0, 2]
        patch = torch.arange(pixel_values.shape[0], device=pixel_values.device)
        # patches come in (t, h / merge, w / merge, merge, merge) order
        block = patch // (merge * merge)
        rows = (block // (w // merge)) % (h // merge) * merge + (patch // merge) % merge
        cols = block % (w // merge) * merge + patch % merge
        # an image is one frame: full attention over all its patches, no segments (an empty tensor)
        extra: dict[str, torch.Tensor] = {"position_ids": torch.stack([rows, cols], dim=-1), "cu_seqlens": patch[:0]}
        if hasattr(visual, "window_size"):  # 2.5-VL: windows of merged tokens, each window in row-major order
            size = visual.window_size // merge // visual.patch_size
            token = torch.arange(pixel_values.shape[0] // (merge * merge), device=pixel_values.device)
            grid_h, grid_w = h // merge, w // merge
            row, col, frame = (token // grid_w) % grid_h, token % grid_w, token // (grid_h * grid_w)
            window = (frame * (grid_h // size + 1) + row // size) * (grid_w // size + 1) + col // size
            order = torch.argsort(window * size * size + (row % size) * size + col % size)
            extra.update(window_index=order, cu_window_seqlens=window[order].repeat_interleave(merge * merge))
        return visual(pixel_values, grid_thw=image_grid_thw, **extra).pooler_output

    @contextlib.contextmanager
    def exporting(self) -> Iterator[None]:
        """Every vision attention module runs :func:`_segment_attention` while the graph is traced."""
        modules = [block.attn for block in self.visual.blocks]
        for attention in modules:
            attention.forward = types.MethodType(_segment_attention, attention)
        try:
            yield
        finally:
            for attention in modules:
                del attention.forward


def _segment_attention(attention: nn.Module, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor,
                       position_embeddings: tuple[torch.Tensor, torch.Tensor], **_: Any) -> torch.Tensor:
    """A Qwen vision attention (its own projections and rotary function) whose patches attend within their
    segment: ``cu_seqlens`` holds a segment id per patch here, or nothing for a single segment (see
    :class:`QwenVisionEncoder`)."""
    length = hidden_states.shape[0]
    query, key, value = attention.qkv(hidden_states).reshape(length, 3, attention.num_heads, -1).permute(
        1, 0, 2, 3).unbind(0)
    rotary = sys.modules[type(attention).__module__].apply_rotary_pos_emb_vision
    query, key = rotary(query, key, *position_embeddings)
    query, key, value = (tensor.transpose(0, 1).unsqueeze(0) for tensor in (query, key, value))
    mask = cu_seqlens[:, None] == cu_seqlens[None, :] if cu_seqlens.numel() else None
    output = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=attention.scaling)
    return attention.proj(output[0].transpose(0, 1).reshape(length, -1))


def first_image(inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Example inputs: the first image's patches and grid."""
    grid = inputs["image_grid_thw"]
    return inputs["pixel_values"][:int(grid[0].prod())].float(), grid[:1]


def run_per_image(session: Any, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """One run per image, on its rows of ``pixel_values`` (``image_grid_thw`` gives each image's patch count)."""
    grid, pixels = inputs["image_grid_thw"], inputs["pixel_values"]
    sizes = grid.prod(axis=-1)
    starts = np.cumsum(sizes) - sizes
    return np.concatenate([flat_features(session.run(None, {"pixel_values": pixels[start:start + size],
                                                            "image_grid_thw": grid[image:image + 1]})[0])
                           for image, (start, size) in enumerate(zip(starts, sizes))])


QWEN = OnnxFamily(QwenVisionEncoder, ("pixel_values", "image_grid_thw"), ({0: "num_patches"}, None),
                  per_image=True, positions="mrope", example=first_image, run_vision=run_per_image)
