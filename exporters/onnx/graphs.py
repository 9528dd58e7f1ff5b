"""The three graphs, as small wrapper modules around the PyTorch model, and their export.

Image features are scattered into ``inputs_embeds`` at the image-token positions outside the graphs, as in the
optimum / transformers.js VLM repositories, so the decoder graph is the text model alone. What differs between
families is only in :data:`FAMILIES`: the vision wrapper and its inputs, whether it runs once per image, and
which position ids the decoder takes (computed by the runner, see :mod:`.positions`).
"""

from __future__ import annotations

import contextlib
import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from ...errors import ModelArgsError
from ...loading import LoadedModel

MANIFEST_SCHEMA = "lmms_topo_plugin.onnx_build"
OPSET = 18


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


class EmbedTokens(nn.Module):
    """``input_ids`` → ``inputs_embeds``."""

    def __init__(self, embed: nn.Module) -> None:
        super().__init__()
        self.embed = embed

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed(input_ids)


class Decoder(nn.Module):
    """``inputs_embeds, attention_mask, position_ids, past (key, value per layer)`` → ``logits, present``."""

    def __init__(self, loaded: LoadedModel) -> None:
        super().__init__()
        self.text_model, self.lm_head = loaded.adapter.text_model, loaded.model.lm_head
        self.text_config = loaded.adapter.text_config
        self.num_layers = loaded.adapter.num_layers

    def forward(self, inputs_embeds, attention_mask, position_ids, past):
        cache = DynamicCache(config=self.text_config)
        for layer in range(self.num_layers):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        output = self.text_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                 position_ids=position_ids, past_key_values=cache, use_cache=True)
        present = []
        for layer in output.past_key_values.layers:
            present += [layer.keys, layer.values]
        return (self.lm_head(output.last_hidden_state), *present)


def kv_shape(loaded: LoadedModel) -> tuple[int, int]:
    """``(key/value heads, head_dim)`` of the decoder's attention."""
    config = loaded.adapter.text_config
    return config.num_key_value_heads, getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def past_names(num_layers: int, prefix: str) -> list[str]:
    return [f"{prefix}.{layer}.{kind}" for layer in range(num_layers) for kind in ("key", "value")]


@dataclass(frozen=True)
class OnnxFamily:
    """What one family's ONNX build needs beyond the shared graphs."""

    vision: Callable[[Any], nn.Module]  # model → wrapper whose forward takes ``vision_inputs`` → image_features
    vision_inputs: tuple[str, ...]  # processor outputs the vision graph takes, in order
    vision_axes: tuple[dict[int, str] | None, ...]  # their dynamic dimensions
    per_image: bool  # the vision graph takes one image per run (the runner splits pixel_values by image_grid_thw)
    positions: str  # decoder position_ids: "text" ``[batch, seq]`` or "mrope" ``[3, batch, seq]`` (.positions)

    def example(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The vision graph's example inputs from a processor batch: all images, or the first one's patches."""
        if not self.per_image:
            return tuple(inputs[name].float() if name == "pixel_values" else inputs[name]
                         for name in self.vision_inputs)
        grid = inputs["image_grid_thw"]
        return inputs["pixel_values"][:int(grid[0].prod())].float(), grid[:1]


_QWEN = OnnxFamily(QwenVisionEncoder, ("pixel_values", "image_grid_thw"), ({0: "num_patches"}, None),
                   per_image=True, positions="mrope")
FAMILIES: dict[str, OnnxFamily] = {
    "llava": OnnxFamily(VisionEncoder, ("pixel_values",), ({0: "num_images"},), per_image=False, positions="text"),
    "qwen2_vl": _QWEN,
    "qwen2_5_vl": _QWEN,
}
SUPPORTED = tuple(FAMILIES)  # model_type values with an ONNX export today


def check_supported(loaded: LoadedModel) -> OnnxFamily:
    model_type = loaded.model.config.model_type
    if model_type not in SUPPORTED:
        raise ModelArgsError(f"--onnx: {model_type} has no ONNX export yet (supported: {', '.join(SUPPORTED)})")
    tokens = (getattr(loaded.model.config, "topo_pruning", None) or {}).get("token_pruning")
    if tokens:
        raise ModelArgsError(f"--onnx: the ONNX graphs do not include visual-token pruning (token_method="
                             f"{tokens['method']}); export without --onnx, or without token_method")
    return FAMILIES[model_type]


def export_graphs(loaded: LoadedModel, vision_inputs: Mapping[str, torch.Tensor], onnx_dir: Path) -> dict[str, Any]:
    """Export the three graphs (fp32, dynamic batch / sequence / past length) into ``onnx_dir``; the manifest.

    ``vision_inputs``: a processor batch with at least two images (for LLaVA, so that the image count stays
    dynamic; Qwen's vision graph is exported with the first image)."""
    family = check_supported(loaded)
    onnx_dir.mkdir(parents=True, exist_ok=True)
    model = loaded.model.float().eval()
    num_layers = loaded.adapter.num_layers
    heads, head_dim = kv_shape(loaded)
    hidden = loaded.adapter.text_config.hidden_size
    batch, seq, total = 2, 5, 8
    ids = torch.ones(batch, seq, dtype=torch.int64)
    past = tuple(torch.zeros(batch, heads, total - seq, head_dim) for _ in range(2 * num_layers))
    cache_axes = {0: "batch", 2: "past_sequence_length"}
    positions, position_axes = torch.arange(total - seq, total).expand(batch, seq), {0: "batch", 1: "sequence_length"}
    if family.positions == "mrope":
        positions, position_axes = positions.expand(3, batch, seq), {1: "batch", 2: "sequence_length"}
    graphs = {
        "vision_encoder": (family.vision(model), family.example(vision_inputs), list(family.vision_inputs),
                           ["image_features"], family.vision_axes),
        "embed_tokens": (EmbedTokens(loaded.adapter.embed_tokens), (ids,), ["input_ids"], ["inputs_embeds"],
                         ({0: "batch", 1: "sequence_length"},)),
        "decoder_model_merged": (
            Decoder(loaded), (torch.zeros(batch, seq, hidden), torch.ones(batch, total, dtype=torch.int64), positions,
                              past),
            ["inputs_embeds", "attention_mask", "position_ids", *past_names(num_layers, "past_key_values")],
            ["logits", *past_names(num_layers, "present")],
            ({0: "batch", 1: "sequence_length"}, {0: "batch", 1: "total_sequence_length"},
             position_axes, tuple(cache_axes for _ in past))),
    }
    files = {}
    with torch.no_grad():
        for name, (module, args, inputs, outputs, axes) in graphs.items():
            path = onnx_dir / f"{name}.onnx"
            with getattr(module, "exporting", contextlib.nullcontext)():
                torch.onnx.export(module.eval(), args, str(path), input_names=inputs, output_names=outputs,
                                  dynamic_shapes=axes, dynamo=True, opset_version=OPSET, external_data=False)
            files[name] = {"file": path.name, "inputs": inputs, "outputs": outputs, "variants": {"fp32": path.name}}
    manifest = {
        "schema": MANIFEST_SCHEMA, "version": 1, "model_type": model.config.model_type, "graphs": files,
        "precisions": ["fp32"],
        "image_token_id": loaded.adapter.image_token_id, "num_layers": num_layers, "kv_heads": heads,
        "head_dim": head_dim, "hidden_size": hidden, "opset": OPSET,
        "vision_per_image": family.per_image, "position_ids": family.positions,
        "spatial_merge_size": getattr(model.config.vision_config, "spatial_merge_size", None),
        "pruning": getattr(model.config, "topo_pruning", None),
    }
    write_manifest(onnx_dir, manifest)
    return manifest


def write_manifest(onnx_dir: Path, manifest: dict[str, Any]) -> None:
    (onnx_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
