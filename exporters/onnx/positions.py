"""Decoder position ids, computed by the runner in numpy (no PyTorch model needed).

``text``: ``[batch, seq]``, each row counting its real (unpadded) tokens from 0 (LLaVA).

``mrope`` (Qwen2-VL / Qwen2.5-VL multimodal rotary positions): ``[3, batch, seq]`` (temporal, height, width). Over
a row's real tokens, a text token takes the next position on all three axes; an image's ``t·h·w`` tokens (after
the spatial merge) take their ``(t, h, w)`` grid coordinates offset by that next position, and the text after the
image continues at the image's largest position + 1. Padding gets 0. A new token always takes the row's largest
position + 1 (:func:`next_positions`), which is what transformers' ``rope_deltas`` amount to while decoding.
"""

from __future__ import annotations

import numpy as np


def text_positions(mask: np.ndarray) -> np.ndarray:
    """``[batch, seq]`` positions of a left-padded batch from its attention mask."""
    return np.clip(np.cumsum(mask, axis=1) - 1, 0, None).astype(np.int64)


def mrope_positions(input_ids: np.ndarray, mask: np.ndarray, image_grid_thw: np.ndarray | None, image_token_id: int,
                    spatial_merge_size: int) -> np.ndarray:
    """``[3, batch, seq]`` M-RoPE positions; ``image_grid_thw`` ``[images, 3]`` in the order the images appear
    (row by row), in patches before the ``spatial_merge_size`` merge."""
    grids = iter(np.asarray(image_grid_thw).reshape(-1, 3) if image_grid_thw is not None else ())
    positions = np.zeros((3, *input_ids.shape), dtype=np.int64)
    for row, (ids, real) in enumerate(zip(input_ids, mask.astype(bool))):
        ids = ids[real]
        row_positions = np.zeros((3, len(ids)), dtype=np.int64)
        start = index = 0
        while index < len(ids):
            if ids[index] != image_token_id:
                row_positions[:, index] = start
                start, index = start + 1, index + 1
                continue
            t, h, w = (int(size) for size in next(grids))
            grid = np.stack(np.meshgrid(np.arange(t), np.arange(h // spatial_merge_size),
                                        np.arange(w // spatial_merge_size), indexing="ij")).reshape(3, -1) + start
            row_positions[:, index:index + grid.shape[1]] = grid
            start, index = int(grid.max()) + 1, index + grid.shape[1]
        positions[:, row, real] = row_positions
    return positions


def next_positions(positions: np.ndarray, count: int = 1) -> np.ndarray:
    """Positions of ``count`` tokens appended to every row: the row's largest position + 1, + 2, ... (on every
    axis for M-RoPE); the same layout as ``positions`` (``[batch, count]`` or ``[3, batch, count]``)."""
    batch, length = positions.shape[-2:]
    last = positions.reshape(-1, batch, length).max(axis=(0, 2))
    following = (last[:, None] + np.arange(1, count + 1)).astype(np.int64)
    return np.broadcast_to(following, (*positions.shape[:-2], batch, count)).copy()
