"""The files that let onnxruntime-genai (``og.Model``, 0.18) run a Qwen2.5-VL ONNX build, written into its
``onnx`` directory next to the graphs.

og runs ``model.type`` ``qwen2_5_vl`` as three sessions: the vision graph once per image (``pixel_values``
``[patches, C*T*p*p]`` and ``image_grid_thw`` ``[1, 3]``), an embedding graph that takes ``input_ids`` *and*
``image_features`` and puts the features at the image tokens itself, and the decoder. It computes the M-RoPE
``position_ids`` ``[3, batch, seq]`` and the attention mask itself, from ``input_ids``, ``image_grid_thw`` and the
token ids in ``genai_config.json``. Our vision and decoder graphs already have that contract (names, shapes, a
``[batch, kv_heads, seq, head_dim]`` cache grown by concatenation, hence ``past_present_share_buffer: false``);
only the embedding graph differs, so :class:`ImageEmbedTokens` is exported as ``genai_embedding.onnx``. og states one
head count for every decoder layer: a decoder width-pruned to different counts per layer gets no og files (the
manifest's ``genai`` entry says why).

The files go next to the graphs because og opens every ``filename`` relative to the directory of
``genai_config.json``: ``og.Model("<build>/onnx")`` loads our vision and decoder graphs by their bare names, with
no copy of their weights and no ``..`` path; at the build's top level og's ``processor_config.json`` (the
onnxruntime-extensions format) would also collide with the transformers file of that name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from loguru import logger

from lmms_topo_plugin.families import ONNX_FAMILIES
from lmms_topo_plugin.models.loading import LoadedModel
from lmms_topo_plugin.exporters.onnx.graphs import EmbedTokens, export_onnx, kv_shape
from lmms_topo_plugin.exporters.onnx.layout import graph_files

MODEL_TYPES = tuple(model_type for model_type, graph in ONNX_FAMILIES.items() if graph.genai)  # og 0.18 runs these
CONFIG = "genai_config.json"
EMBEDDING = "genai_embedding.onnx"
PROCESSOR = "processor_config.json"
SEARCH_OPTIONS = ("do_sample", "num_beams", "temperature", "top_k", "top_p", "repetition_penalty")
RESAMPLING = {0: "NEAREST", 1: "LANCZOS", 2: "LINEAR", 3: "CUBIC"}  # PIL resample codes → extensions' Resize


class ImageEmbedTokens(EmbedTokens):
    """``input_ids`` ``[batch, seq]``, ``image_features`` ``[image tokens, hidden]`` → ``inputs_embeds``: the token
    embeddings with the image features, in order over the flattened batch, at the image-token positions (og's
    embedding graph; ``image_features`` has no rows for a text-only prompt and while decoding)."""

    def __init__(self, embed: torch.nn.Module, image_token_id: int) -> None:
        super().__init__(embed)
        self.image_token_id = image_token_id

    def forward(self, input_ids: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        embeds = super().forward(input_ids)
        is_image = input_ids == self.image_token_id
        index = (is_image.flatten().cumsum(0) - 1).clamp(min=0).reshape(input_ids.shape)
        # a zero row keeps the gather in range when there are no image features
        table = torch.cat([image_features, image_features.new_zeros(1, image_features.shape[-1])])
        return torch.where(is_image[..., None], table[index], embeds)


def export_embedding(loaded: LoadedModel, image_token_id: int, path: Path) -> None:
    """``path``: :class:`ImageEmbedTokens` (fp32), dynamic batch, sequence length and image-token count."""
    hidden = loaded.adapter.text_config.hidden_size
    ids = torch.zeros(2, 5, dtype=torch.int64)
    ids[:, 1:3] = image_token_id
    module = ImageEmbedTokens(loaded.adapter.embed_tokens, image_token_id).eval()
    with torch.no_grad():
        export_onnx(module, (ids, torch.zeros(4, hidden)), path, input_names=["input_ids", "image_features"],
                    output_names=["inputs_embeds"],
                    dynamic_shapes=({0: "batch", 1: "sequence_length"}, {0: "num_image_tokens"}))


def genai_config(loaded: LoadedModel, manifest: dict[str, Any]) -> dict[str, Any]:
    """``genai_config.json``: og's sessions over the build's graphs, the pruned decoder's shape and the token ids og
    uses for positions, padding and stopping; search defaults are the checkpoint's own generation settings."""
    config, text = loaded.model.config, loaded.adapter.text_config
    generation = loaded.model.generation_config
    graphs = manifest["graphs"]
    (heads, kv_heads), = decoder_heads(loaded)
    _, head_dim = kv_shape(loaded)
    eos = generation.eos_token_id if generation.eos_token_id is not None else loaded.processor.tokenizer.eos_token_id
    pad = generation.pad_token_id if generation.pad_token_id is not None else loaded.processor.tokenizer.pad_token_id
    ids = {"bos_token_id": generation.bos_token_id, "eos_token_id": eos if isinstance(eos, list) else [eos],
           "pad_token_id": pad, "image_token_id": manifest["image_token_id"], "video_token_id": config.video_token_id,
           "vision_start_token_id": config.vision_start_token_id}
    model = {
        "type": config.model_type, **{name: value for name, value in ids.items() if value is not None},
        "vocab_size": text.vocab_size, "context_length": text.max_position_embeddings,
        "vision": {"filename": graphs["vision_encoder"]["file"], "config_filename": PROCESSOR,
                   "spatial_merge_size": manifest["spatial_merge_size"],
                   "patch_size": config.vision_config.patch_size,
                   "tokens_per_second": float(config.vision_config.tokens_per_second),
                   "inputs": {name: name for name in graphs["vision_encoder"]["inputs"]},
                   "outputs": {"image_features": graphs["vision_encoder"]["outputs"][0]}},
        "embedding": {"filename": EMBEDDING, "inputs": {"input_ids": "input_ids", "image_features": "image_features"},
                      "outputs": {"inputs_embeds": "inputs_embeds"}},
        "decoder": {"filename": graphs["decoder_model_merged"]["file"], "hidden_size": text.hidden_size,
                    "num_attention_heads": heads, "num_key_value_heads": kv_heads,
                    "head_size": head_dim, "num_hidden_layers": manifest["num_layers"],
                    "inputs": {"inputs_embeds": "inputs_embeds", "attention_mask": "attention_mask",
                               "position_ids": "position_ids", "past_key_names": "past_key_values.%d.key",
                               "past_value_names": "past_key_values.%d.value"},
                    "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                                "present_value_names": "present.%d.value"}},
    }
    search = {name: getattr(generation, name) for name in SEARCH_OPTIONS if getattr(generation, name) is not None}
    search.update(max_length=text.max_position_embeddings, past_present_share_buffer=False)
    return {"model": model, "search": search}


def processor_config(image_processor: Any) -> dict[str, Any]:
    """``processor_config.json`` for og's Qwen image processor (onnxruntime-extensions transforms): the checkpoint's
    smart resize (its min / max pixels), rescale, normalization and patching."""
    steps = [("decode_image", "DecodeImage", {"color_space": "RGB"}), ("convert_to_rgb", "ConvertRGB", {})]
    if image_processor.do_resize:
        steps.append(("resize", "Resize", {
            "interpolation": RESAMPLING[int(image_processor.resample)], "smart_resize": 1,
            "min_pixels": image_processor.size["shortest_edge"], "max_pixels": image_processor.size["longest_edge"],
            "patch_size": image_processor.patch_size, "merge_size": image_processor.merge_size}))
    if image_processor.do_rescale:
        steps.append(("rescale", "Rescale", {"rescale_factor": image_processor.rescale_factor}))
    if image_processor.do_normalize:
        steps.append(("normalize", "Normalize", {"mean": list(image_processor.image_mean),
                                                 "std": list(image_processor.image_std), "qwen2_5_vl": 1}))
    steps.append(("patch_image", "PatchImage", {"patch_size": image_processor.patch_size,
                                                "temporal_patch_size": image_processor.temporal_patch_size,
                                                "merge_size": image_processor.merge_size}))
    transforms = [{"operation": {"name": name, "type": kind, **({"attrs": attrs} if attrs else {})}}
                  for name, kind, attrs in steps]
    return {"processor": {"name": "qwen2_5_image_processor", "transforms": transforms}}


def decoder_heads(loaded: LoadedModel) -> set[tuple[int, int]]:
    """The distinct ``(query heads, key/value heads)`` of the decoder's layers, counted from their projections: one
    pair unless width pruning left the layers different."""
    adapter = loaded.adapter
    layers = (adapter.layer_adapter(index) for index in range(adapter.num_layers))
    return {(layer.num_heads, layer.num_kv_heads) for layer in layers}


def unsupported(loaded: LoadedModel) -> str | None:
    """Why no ``genai_config.json`` can describe this decoder (None when one can): og states one
    ``num_attention_heads`` and ``num_key_value_heads`` for every layer, and allocates every layer's cache so."""
    if len(decoder_heads(loaded)) == 1:
        return None
    return (f"no {CONFIG} written: onnxruntime-genai states one num_key_value_heads for every decoder layer, and "
            f"the layers of this width-pruned decoder have {kv_shape(loaded)[0]} key/value heads; run the build with "
            f"OnnxVLM (lmms_topo_plugin.runtime.onnx_runner)")


def write_genai(loaded: LoadedModel, manifest: dict[str, Any], onnx_dir: Path) -> dict[str, Any]:
    """Write og's files into ``onnx_dir``, next to the graphs of ``manifest`` (:func:`.graphs.export_graphs`);
    returns what the manifest records of them: the config and every file written. A decoder whose layers have
    different head counts gets none (og could not run it): the record says why (``skipped``), as the log does."""
    reason = unsupported(loaded)
    if reason:
        logger.warning(f"topo-prune export --onnx: {reason}")
        return {"runtime": "onnxruntime-genai", "config": None, "model_type": loaded.model.config.model_type,
                "files": [], "skipped": reason}
    export_embedding(loaded, manifest["image_token_id"], onnx_dir / EMBEDDING)
    (onnx_dir / CONFIG).write_text(json.dumps(genai_config(loaded, manifest), indent=2) + "\n")
    (onnx_dir / PROCESSOR).write_text(json.dumps(processor_config(loaded.processor.image_processor), indent=2) + "\n")
    tokenizer_files = loaded.processor.tokenizer.save_pretrained(str(onnx_dir))
    return {"runtime": "onnxruntime-genai", "config": CONFIG, "model_type": loaded.model.config.model_type,
            "files": sorted({CONFIG, *graph_files(onnx_dir, EMBEDDING), PROCESSOR,
                             *(Path(file).name for file in tokenizer_files)})}


def og_greedy_tokens(og: Any, model: Any, inputs: Any, image_token_id: int, max_new_tokens: int) -> list[int]:
    """Greedy new tokens of an ``og.Model`` fed one processed prompt (``inputs``: the processor's tensors) as named
    tensors: the ids, and for a prompt with images their pixels, grids and image-token count."""
    import numpy as np

    ids = inputs["input_ids"].numpy().astype(np.int32)
    named = og.NamedTensors()
    named["input_ids"] = ids
    if "pixel_values" in inputs:
        named["pixel_values"] = inputs["pixel_values"].float().numpy()
        named["image_grid_thw"] = inputs["image_grid_thw"].numpy()
        named["num_image_tokens"] = np.array([int((ids == image_token_id).sum())], dtype=np.int64)
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=ids.shape[1] + max_new_tokens)
    generator = og.Generator(model, params)
    generator.set_inputs(named)
    while not generator.is_done():
        generator.generate_next_token()
    return generator.get_sequence(0)[ids.shape[1]:].tolist()
