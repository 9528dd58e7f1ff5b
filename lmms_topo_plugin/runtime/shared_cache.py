"""How the runner feeds a decoder built by onnxruntime-genai's model builder (``decoder: builder`` in the manifest,
:mod:`lmms_topo_plugin.exporters.onnx.builder_decoder`): right padding, and one KV buffer per key/value bound as
past and present both.

The builder's ``GroupQueryAttention`` takes no position ids: it reads each row's token count from the attention
mask (its row sum) and puts the row's tokens at positions 0, 1, ..., so the new tokens of a row come first in their
block (right padding). The runner keeps its left-padded layout outside (:func:`right_padded` on the way in,
:func:`left_layout` on the way out), and the mask it hands the graph is each row's count as leading ones.

The cache is one ``[batch, kv_heads, capacity, head_dim]`` buffer per key and per value on the decoder's device
(:func:`shared_buffers`), the same ``OrtValue`` bound as ``past_key_values.*`` and ``present.*`` at every step:
the op writes the new positions in place, nothing is copied between steps. A cache that outgrows its capacity is
copied once into a larger one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lmms_topo_plugin.errors import PluginError

# positions a buffer allocated without a stated capacity leaves for further steps
DEFAULT_RESERVE = 32
NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def right_padded(embeds: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(embeds, mask, order)``: the new tokens ``embeds`` (the last ``embeds.shape[1]`` columns of ``mask``) with
    each row's real tokens moved to the front, in order; the graph's mask (each row's total count as leading ones,
    what GroupQueryAttention reads); ``order`` the new block's permutation (:func:`left_layout` undoes it)."""
    if mask.all():  # no padding (one prompt, or a decoding step): the layouts agree
        return embeds, mask, np.broadcast_to(np.arange(embeds.shape[1]), mask[:, -embeds.shape[1]:].shape)
    new = mask[:, -embeds.shape[1]:].astype(bool)
    order = np.argsort(~new, axis=1, kind="stable")
    lengths = mask.sum(axis=1)
    graph_mask = (np.arange(mask.shape[1])[None, :] < lengths[:, None]).astype(np.int64)
    return np.take_along_axis(embeds, order[..., None], axis=1), graph_mask, order


def left_layout(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``values`` ``[batch, seq, ...]`` of a right-padded block back in the left-padded layout of ``order``."""
    return np.take_along_axis(values, np.argsort(order, axis=1)[..., None], axis=1)


def last_real(values: np.ndarray, mask: np.ndarray, new: int) -> np.ndarray:
    """``[batch, 1, ...]``: each row's last real position of a right-padded block of ``new`` positions."""
    if mask[:, -new:].all():
        return values[:, -1:]
    counts = mask[:, -new:].sum(axis=1)
    if (counts < 1).any():
        raise PluginError("the builder's decoder: a row without a new token (every row needs one)")
    return values[np.arange(len(values)), counts - 1][:, None]


def check_padding(mask: np.ndarray, new: int) -> None:
    """A right-padded block is only right after an empty cache: later blocks (a mask with columns before the new
    tokens') must have every token real."""
    if mask.shape[1] > new and not mask[:, -new:].all():
        raise PluginError("the builder's decoder: padding among new tokens after the cache is filled (it takes "
                          "padding in the first run only); feed each row's real tokens")


def shared_buffers(ort, past: Sequence, total: int, capacity: int | None, dtype, device_type: str) -> list:
    """The shared buffers for a run whose mask has ``total`` columns: ``past`` itself when it is buffers that hold
    ``total`` positions; else new zeroed buffers of ``max(capacity, total + DEFAULT_RESERVE)`` positions on
    ``device_type`` with ``past``'s positions copied in (numpy arrays, e.g. an empty past, or buffers outgrown)."""
    if not isinstance(past[0], np.ndarray) and past[0].shape()[2] >= total:
        return list(past)
    size = max(capacity or 0, total if capacity else total + DEFAULT_RESERVE)
    buffers = []
    for value in past:
        host = value if isinstance(value, np.ndarray) else value.numpy()
        batch, heads, length, head_dim = host.shape
        filled = np.zeros((batch, heads, size, head_dim), dtype=dtype)
        filled[:, :, :min(length, size)] = host[:, :, :size]
        buffers.append(ort.OrtValue.ortvalue_from_numpy(filled, device_type, 0))
    return buffers
