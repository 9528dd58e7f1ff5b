"""Remove decoder layers so that the result is a normal checkpoint (docs/methods/surgery.md §6).

The layer list is shortened, every remaining module's ``layer_idx`` renumbered 0..L'-1 (the KV cache is
indexed by it), and the text config's ``num_hidden_layers`` and per-layer settings updated, so the pruned
model saves, reloads with ``from_pretrained`` to the same logits, and generates the same tokens with and
without the KV cache.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator, Sequence

from lmms_topo_plugin.families import VLMAdapter

# Text-config entries that hold one value per decoder layer.
PER_LAYER_CONFIG_KEYS = ("layer_types", "no_rope_layers")
# Text-config entries that hold a layer index threshold ("layers below this index ...").
LAYER_THRESHOLD_CONFIG_KEYS = ("max_window_layers",)


def remove_layers(adapter: VLMAdapter, removed: Sequence[int]) -> list[int]:
    """Delete decoder layers ``removed`` (original indices) in place; return the kept original indices."""
    num_layers = adapter.num_layers
    removed_set = set(removed)
    if len(removed_set) != len(removed) or not all(0 <= i < num_layers for i in removed_set):
        raise ValueError(f"layers to remove must be distinct indices in [0, {num_layers - 1}], got {list(removed)}")
    kept = [i for i in range(num_layers) if i not in removed_set]
    if not kept:
        raise ValueError("cannot remove every decoder layer")
    if not removed_set:
        return kept
    layers = adapter.layers
    kept_modules = [layers[i] for i in kept]
    for new_index, layer in enumerate(kept_modules):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    adapter.replace_layers(kept_modules)
    for config in adapter.text_configs:
        _update_text_config(config, kept, num_layers)
    text_model = adapter.text_model
    if hasattr(text_model, "has_sliding_layers"):
        text_model.has_sliding_layers = "sliding_attention" in (adapter.text_config.layer_types or ())
    return kept


def _update_text_config(config, kept: list[int], original_layers: int) -> None:
    config.num_hidden_layers = len(kept)
    for key in PER_LAYER_CONFIG_KEYS:
        values = getattr(config, key, None)
        if isinstance(values, (list, tuple)) and len(values) == original_layers:
            setattr(config, key, [values[i] for i in kept])
    for key in LAYER_THRESHOLD_CONFIG_KEYS:
        threshold = getattr(config, key, None)
        if isinstance(threshold, int):
            setattr(config, key, sum(1 for i in kept if i < threshold))


@contextmanager
def layers_removed(adapter: VLMAdapter, removed: Sequence[int]) -> Iterator[list[int]]:
    """:func:`remove_layers` for the body of a ``with`` block, then every layer, index and config entry restored.

    The sweep evaluates many budgets on one loaded model this way: inside the block the model *is* the pruned
    model (the same surgery a saved checkpoint gets); after it, the dense model again, with no reload.
    """
    snapshot = _surgery_state(adapter)
    try:
        yield remove_layers(adapter, removed)
    finally:
        _restore_surgery_state(adapter, snapshot)


def _surgery_state(adapter: VLMAdapter) -> dict:
    """Everything :func:`remove_layers` changes: the layer list, each ``layer_idx``, the text-config entries."""
    keys = ("num_hidden_layers", *PER_LAYER_CONFIG_KEYS, *LAYER_THRESHOLD_CONFIG_KEYS)
    text_model = adapter.text_model
    return {
        "layers": list(adapter.layers),
        "layer_idx": [(module, module.layer_idx) for module in adapter.layers.modules() if hasattr(module, "layer_idx")],
        "configs": [(config, {key: copy.copy(getattr(config, key)) for key in keys if hasattr(config, key)})
                    for config in adapter.text_configs],
        "has_sliding_layers": getattr(text_model, "has_sliding_layers", None),
    }


def _restore_surgery_state(adapter: VLMAdapter, state: dict) -> None:
    adapter.replace_layers(state["layers"])
    for module, index in state["layer_idx"]:
        module.layer_idx = index
    for config, values in state["configs"]:
        for key, value in values.items():
            setattr(config, key, value)
    if state["has_sliding_layers"] is not None:
        adapter.text_model.has_sliding_layers = state["has_sliding_layers"]
