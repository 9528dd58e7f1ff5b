"""LLaVA-NeXT: LLaVA's adapter (:mod:`.llava`), anyres tiling, a Mistral decoder.

The ONNX vision graph is the vision tower and projector over the batch's real anyres patches (each image's base
view, then its grid tiles). Which patches are real, the un-padding of each image's tile grid and its
``image_newline`` column depend on the image sizes, so :func:`run_patches` does them in numpy; the grid pinpoints
and the newline vector are the build's ``vision_constants`` (in the manifest)."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from transformers.image_processing_utils import select_best_resolution

from lmms_topo_plugin.errors import PluginError
from lmms_topo_plugin.families.base import Family
from lmms_topo_plugin.families.llava import TOKENS, Clip, LlavaAdapter, VisionEncoder
from lmms_topo_plugin.families.onnx_graph import OnnxFamily
from lmms_topo_plugin.families.recipe import RENDER_CONTENT, TinyRecipe

# -- ONNX vision graph ----------------------------------------------------------------------------

def constants(model: Any) -> dict[str, Any]:
    """What :func:`run_patches` needs beyond the processor batch: the anyres pinpoints ``[[height, width], ...]``
    and the learned ``image_newline`` vector ``[hidden]``."""
    return {"image_grid_pinpoints": model.config.image_grid_pinpoints,
            "image_newline": model.model.image_newline.detach().tolist()}


def tile_grid(image_size: Sequence[int], pinpoints: Sequence[Sequence[int]], tile: Sequence[int]
              ) -> tuple[int, int]:
    """``(rows, cols)`` of the ``tile``-sized tiles the processor cut an image of ``(height, width)`` into: those
    of the pinpoint resolution it resized the image to."""
    height, width = select_best_resolution(tuple(int(side) for side in image_size),
                                           [tuple(int(side) for side in point) for point in pinpoints])
    return height // tile[0], width // tile[1]


def kept_window(rows: int, cols: int, height: int, width: int) -> tuple[slice, slice]:
    """The rows and columns of a ``rows × cols`` feature grid that show an image of ``height × width`` px: the
    resized image was centred and padded on its short side to the grid's aspect ratio."""
    if width * rows > height * cols:  # wider than the grid: padding above and below
        pad = (rows - height * cols // width) // 2
        return slice(pad, rows - pad), slice(None)
    pad = (cols - width * rows // height) // 2
    return slice(None), slice(pad, cols - pad)


def pack(patches: np.ndarray, grid: tuple[int, int], image_size: Sequence[int], newline: np.ndarray) -> np.ndarray:
    """One image's per-patch features ``[1 + rows * cols, side², hidden]`` → its image tokens: the base view's,
    then the tile grid's as one picture, un-padded, row by row, each row followed by ``newline``."""
    count, tokens, hidden = patches.shape
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise PluginError(f"llava_next: {tokens} features per patch are not a square grid; the ONNX build packs "
                          "only square patch features (vision_feature_select_strategy 'default' with a CLS token)")
    rows, cols = grid
    tiles = patches[1:].reshape(rows, cols, side, side, hidden).transpose(0, 2, 1, 3, 4)
    tiles = tiles.reshape(rows * side, cols * side, hidden)[kept_window(rows * side, cols * side, *image_size)]
    ends = np.broadcast_to(newline.astype(tiles.dtype), (tiles.shape[0], 1, hidden))
    return np.concatenate([patches[0], np.concatenate([tiles, ends], axis=1).reshape(-1, hidden)])


def run_patches(session: Any, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """One run over the real patches of the batch's images (``pixel_values`` ``[images, max patches, 3, H, W]``,
    each image's first ``1 + rows * cols``), then each image's features packed by :func:`pack`."""
    pixels, sizes = inputs["pixel_values"], inputs["image_sizes"]
    if pixels.ndim != 5:
        raise PluginError(f"llava_next: pixel_values of shape {pixels.shape}, expected [images, patches, 3, H, W]")
    grids = [tile_grid(size, inputs["image_grid_pinpoints"], pixels.shape[-2:]) for size in sizes]
    counts = [1 + rows * cols for rows, cols in grids]
    features = session.run(None, {"pixel_values": np.concatenate(
        [image[:count] for image, count in zip(pixels, counts)])})[0]
    per_image = np.split(features, np.cumsum(counts)[:-1])
    return np.concatenate([pack(patches, grid, size, inputs["image_newline"])
                           for patches, grid, size in zip(per_image, grids, sizes)])


def every_patch(inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor]:
    """Example inputs: all the batch's patches, padding ones too (only their shape matters)."""
    return (inputs["pixel_values"].flatten(0, 1).float(),)


LLAVA_NEXT = OnnxFamily(VisionEncoder, ("pixel_values",), ({0: "num_patches"},), per_image=False, positions="text",
                        example=every_patch, run_vision=run_patches, run_inputs=("image_sizes",),
                        constants=constants)

# -- tiny test model ------------------------------------------------------------------------------

# Mistral instruct format: the generation prompt is implicit after [/INST], as in the real template.
TEMPLATE = RENDER_CONTENT + (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}[INST] {{ render(message['content'], '<image>\\n') }} [/INST]"
    "{% elif message['role'] == 'assistant' %}{{ render(message['content'], '') }}{{ eos_token }}"
    "{% else %}{{ render(message['content'], '') }}{{ '\\n\\n' }}{% endif %}"
    "{% endfor %}"
)

_PINPOINTS = [[32, 32], [32, 64], [64, 32]]
_CLIP = Clip(image_size=32, patch_size=16)

TINY = TinyRecipe(
    config_class="LlavaNextConfig",
    processor_class="LlavaNextProcessor",
    image_processor_class="LlavaNextImageProcessorPil",
    image_processor_kwargs=dict(_CLIP.image_processor_kwargs(), image_grid_pinpoints=_PINPOINTS),
    special_tokens=dict(TOKENS, instruction=["[INST]", "[/INST]"]),
    chat_template=TEMPLATE,
    token_fields={"image_token_index": "<image>"},
    vision_config=_CLIP.vision_config,
    text_kwargs=dict(model_type="mistral", sliding_window=None),
    processor_kwargs=_CLIP.processor_kwargs(),
    config_kwargs=dict(_CLIP.config_kwargs(), image_grid_pinpoints=_PINPOINTS),
)

FAMILY = Family(model_types=("llava_next",), adapter=LlavaAdapter, onnx={"llava_next": LLAVA_NEXT},
                tiny={"llava_next": TINY})
