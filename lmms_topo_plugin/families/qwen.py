"""Qwen2-VL and Qwen2.5-VL: native-resolution ViT with patch merger, Qwen2 decoder with M-RoPE.

The ONNX vision graph takes one image's patches and its grid and is run once per image.

Processor quirk: without torchvision, transformers 5 cannot build a Qwen2-VL or Qwen2.5-VL processor at all:
`AutoProcessor.from_pretrained` fails loading `Qwen2VLVideoProcessor` (a torchvision-only class), and constructing
the processor with `video_processor=None` fails too, because `ProcessorMixin` checks every constructor argument
against `VideoProcessorMixin`, which is not importable then. The stand-ins here are subclasses whose constructor
has no video processor, so images and text are processed by the real class's code while videos are unsupported
(:func:`lmms_topo_plugin.models.processors.load_processor` loads them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import types
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from torch import nn

from lmms_topo_plugin.families.base import Family, VLMAdapter
from lmms_topo_plugin.families.onnx_graph import OnnxFamily, flat_features
from lmms_topo_plugin.families.recipe import RENDER_CONTENT, VISION_WIDTH, TinyRecipe


class QwenVLAdapter(VLMAdapter):
    """Qwen2-VL and Qwen2.5-VL: native-resolution ViT with patch merger, Qwen2 decoder with M-RoPE."""

    vision_tower_attr = "visual"
    vision_attention_attr = "attn"

    @property
    def vision_layers(self) -> nn.ModuleList:
        return self.vision_tower.blocks

    @property
    def projector(self) -> tuple[nn.Module, nn.Linear, nn.Linear]:
        """The patch merger's MLP (``Linear``, GELU, ``Linear``) over each 2x2 block of vision features."""
        merger = self.vision_tower.merger
        return merger, merger.mlp[0], merger.mlp[2]

    @property
    def fixed_widths(self) -> dict[tuple[str, str], str]:
        fixed = {
            **super().fixed_widths,
            ("text", "heads"): "the decoder attention derives head_dim from hidden_size / num_attention_heads",
            ("projector", "channels"): "the merger's hidden width is the vision width times spatial_merge_size^2",
        }
        if not hasattr(self.model.config.vision_config, "intermediate_size"):  # Qwen2-VL
            fixed["vision", "channels"] = "the vision MLP width is embed_dim times an integer mlp_ratio"
        return fixed


# -- ONNX vision graph ----------------------------------------------------------------------------


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


# -- processor quirk: image-only stand-ins --------------------------------------------------------


class _WithoutVideo:
    """Mixin: a processor constructor without the `video_processor` argument (nor attribute)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        # ProcessorMixin reads its sub-processors off this signature and pairs them with the positional
        # arguments the real constructor passes on, so the trailing None video processor is dropped.
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    def validate_inputs(self, images=None, text=None, videos=None, audio=None, **kwargs):
        """Rejects videos, which only the torchvision video processor handles."""
        if videos is not None:
            raise ValueError(f"this image-only {type(self).__name__} takes no videos: they need torchvision")
        super().validate_inputs(images=images, text=text, videos=videos, audio=audio, **kwargs)

    def save_pretrained(self, save_directory, **kwargs):
        """Saves like the full processor, plus the image processor's own `preprocessor_config.json`.

        That file is what Hub checkpoints of these families carry: loaders that have torchvision
        derive the missing video processor from it, so the directory loads with `AutoProcessor` there.
        """
        files = super().save_pretrained(save_directory, **kwargs)
        return files + self.image_processor.save_pretrained(save_directory)


# Named like the classes they stand in for, so that saved files name a class every loader knows.
class Qwen2VLProcessor(_WithoutVideo, transformers.Qwen2VLProcessor):
    """Image-only Qwen2-VL processor."""


class Qwen2_5_VLProcessor(_WithoutVideo, transformers.Qwen2_5_VLProcessor):
    """Image-only Qwen2.5-VL processor."""


# -- tiny test model ------------------------------------------------------------------------------

TOKENS = {
    "eos_token": "<|im_end|>",
    "pad_token": "<|endoftext|>",
    "markers": ["<|im_start|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"],
}
TOKEN_FIELDS = {
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
}
TEMPLATE = RENDER_CONTENT + (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{{ render(message['content'], '<|vision_start|><|image_pad|><|vision_end|>') }}{{ '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Qwen images are resized to multiples of patch_size * merge_size = 16 px, within 32x32 and 64x64 pixels.
_IMAGE_PROCESSOR = dict(
    patch_size=8, merge_size=2, temporal_patch_size=2, size={"shortest_edge": 32 * 32, "longest_edge": 64 * 64}
)
_VISION = dict(depth=2, num_heads=2, patch_size=8, spatial_merge_size=2, temporal_patch_size=2)

TINY_QWEN2_VL = TinyRecipe(
    config_class="Qwen2VLConfig",
    processor_class="Qwen2VLProcessor",
    image_processor_class="Qwen2VLImageProcessorPil",
    image_processor_kwargs=_IMAGE_PROCESSOR,
    special_tokens=TOKENS,
    chat_template=TEMPLATE,
    token_fields=TOKEN_FIELDS,
    vision_config=lambda hidden: dict(_VISION, embed_dim=VISION_WIDTH, mlp_ratio=2, hidden_size=hidden),
    mrope=True,
)
TINY_QWEN2_5_VL = dataclasses.replace(
    TINY_QWEN2_VL,
    config_class="Qwen2_5_VLConfig",
    processor_class="Qwen2_5_VLProcessor",
    # window_size is in pixels: 32 px = 2x2 merged patches, so window attention really partitions;
    # block 1 is a full-attention block as in the real model's fullatt_block_indexes.
    vision_config=lambda hidden: dict(
        _VISION,
        hidden_size=VISION_WIDTH,
        intermediate_size=2 * VISION_WIDTH,
        out_hidden_size=hidden,
        window_size=32,
        fullatt_block_indexes=[1],
    ),
)

FAMILY = Family(
    model_types=("qwen2_vl", "qwen2_5_vl"),
    adapter=QwenVLAdapter,
    onnx={"qwen2_vl": QWEN, "qwen2_5_vl": dataclasses.replace(QWEN, genai=True)},
    tiny={"qwen2_vl": TINY_QWEN2_VL, "qwen2_5_vl": TINY_QWEN2_5_VL},
    image_only_processors={
        transformers.Qwen2VLProcessor: Qwen2VLProcessor,
        transformers.Qwen2_5_VLProcessor: Qwen2_5_VLProcessor,
    },
)
